"""Applies and rolls back the Supabase migrations, the way the Supabase CLI records them.

Each migration runs in its own transaction together with its row in `supabase_migrations.schema_migrations`
(the CLI's table and columns, so `supabase migration list` agrees). The statements are split and recorded
exactly as `supabase db push` records them (prep.sqlsplit), so each tool reads the other's history. A failing
statement rolls the whole migration back and the error names the file, the statement and its line.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg

from prep import sqlsplit

SUPABASE_DIR = Path(__file__).resolve().parent.parent / "supabase"
MIGRATIONS_DIR = SUPABASE_DIR / "migrations"
ROLLBACKS_DIR = SUPABASE_DIR / "rollbacks"
SEEDS_DIR = SUPABASE_DIR / "seeds"
STAND_IN_FILE = SUPABASE_DIR / "local" / "supabase_platform.sql"

_FILE_NAME = re.compile(r"^(?P<version>\d{14})_(?P<name>[a-z0-9_]+)\.sql$")

HISTORY_DDL = """
create schema if not exists supabase_migrations;
create table if not exists supabase_migrations.schema_migrations (version text primary key);
alter table supabase_migrations.schema_migrations add column if not exists statements text[];
alter table supabase_migrations.schema_migrations add column if not exists name text;
"""


class MigrationError(RuntimeError):
    """A SQL file failed; the database is left as it was before that file."""


@dataclass(frozen=True)
class Migration:
    version: str
    name: str
    path: Path

    @property
    def rollback_path(self) -> Path:
        return ROLLBACKS_DIR / self.path.name


@dataclass(frozen=True)
class MigrationState:
    version: str
    name: str
    local: bool
    applied: bool
    changed: bool = False  # applied, but the file's statements are no longer the ones the database ran


def local_migrations() -> list[Migration]:
    migrations = []
    for path in sorted(MIGRATIONS_DIR.glob("*.sql")):
        match = _FILE_NAME.match(path.name)
        if not match:
            raise MigrationError(f"{path.name}: migration files are named <14-digit version>_<snake_name>.sql")
        migrations.append(Migration(match["version"], match["name"], path))
    return migrations


def split_statements(sql: str) -> list[str]:
    """Split a SQL file into statements exactly as the Supabase CLI does and records them: leading comments
    kept, no trailing `;`, comments after the last statement a statement of their own."""
    return sqlsplit.split_and_trim(sql)


def comparable(statements: list[str]) -> list[str]:
    """Statements as recorded by any version of prep or the CLI, reduced to what they run: older prep versions
    kept the trailing `;`, dropped trailing comments and split with sqlparse, which may attach a comment to the
    statement before it rather than after. Comments and `;` are removed; comment-only entries dropped."""
    return [code for code in map(sqlsplit.without_comments, statements) if code]


def run_sql_file(conn: psycopg.Connection, path: Path) -> list[str]:
    """Execute a file statement by statement inside the caller's transaction; raise naming what failed."""
    sql = path.read_text(encoding="utf-8")
    statements = split_statements(sql)
    search_from = 0
    for index, statement in enumerate(statements, start=1):
        offset = sql.find(statement, search_from)
        search_from = max(offset, search_from)
        if not sqlsplit.without_comments(statement):
            continue  # only comments: recorded as the CLI records them, nothing to run
        try:
            conn.execute(statement, prepare=False)  # type: ignore[arg-type]  # statements are trusted files
        except psycopg.Error as error:
            start = sqlsplit.code_start(statement)  # the code's line, not that of the comment above it
            line = sql.count("\n", 0, offset + start) + 1 if offset >= 0 else "?"
            first_line = statement[start:].splitlines()[0][:120]
            message = (error.diag.message_primary or str(error)).strip()
            hint = f"\n  hint: {error.diag.message_hint}" if error.diag.message_hint else ""
            raise MigrationError(
                f"{display(path)}: statement {index} (line {line}) failed: {message}{hint}\n  statement: {first_line}"
            ) from error
    return statements


STAND_IN_MARKER = "prep: local stand-in for Supabase"


def display(path: Path) -> str:
    return str(path.relative_to(SUPABASE_DIR.parent)) if path.is_relative_to(SUPABASE_DIR.parent) else str(path)


def is_supabase_project(conn: psycopg.Connection) -> bool:
    """A Supabase database has auth.users, made by Supabase rather than by our stand-in (which marks auth)."""
    row = conn.execute(
        "select to_regclass('auth.users') is not null"
        " and obj_description(to_regnamespace('auth'), 'pg_namespace') is distinct from %s",
        (STAND_IN_MARKER,),
    ).fetchone()
    return bool(row and row[0])


def apply_stand_in(conn: psycopg.Connection) -> bool:
    """Create what Supabase itself provides (roles, auth, storage...) on a plain PostgreSQL. Idempotent."""
    if is_supabase_project(conn):
        return False
    with conn.transaction():
        run_sql_file(conn, STAND_IN_FILE)
        conn.execute(f"comment on schema auth is '{STAND_IN_MARKER}'")
    return True


def _history(conn: psycopg.Connection) -> list[tuple[str, str, list[str] | None]]:
    """(version, name, statements run) of every applied migration; the history table is made if missing."""
    with conn.transaction():
        conn.execute(HISTORY_DDL)
    return conn.execute(
        "select version, coalesce(name, ''), statements from supabase_migrations.schema_migrations"
    ).fetchall()


def applied_versions(conn: psycopg.Connection) -> dict[str, str]:
    return {version: name for version, name, _ in _history(conn)}


def status(conn: psycopg.Connection) -> list[MigrationState]:
    history = _history(conn)
    applied = {version: name for version, name, _ in history}
    local = {m.version: m for m in local_migrations()}
    changed = {m.version for m in _changed(history)}
    versions = sorted(set(applied) | set(local))
    return [
        MigrationState(v, local[v].name if v in local else applied[v], v in local, v in applied, v in changed)
        for v in versions
    ]


def changed_since_applied(conn: psycopg.Connection) -> list[Migration]:
    """Applied migrations whose file now holds other statements than the database ran (an edited migration):
    migrating will not apply the edit."""
    return _changed(_history(conn))


def _changed(history: list[tuple[str, str, list[str] | None]]) -> list[Migration]:
    ran = {version: comparable(statements) for version, _, statements in history if statements is not None}
    return [
        m
        for m in local_migrations()
        if m.version in ran and ran[m.version] != comparable(split_statements(m.path.read_text(encoding="utf-8")))
    ]


def migrate(conn: psycopg.Connection, *, to_version: str | None = None) -> Iterator[Migration]:
    """Apply pending migrations in version order (all, or up to `to_version`), each in one transaction."""
    applied = applied_versions(conn)
    unknown = sorted(set(applied) - {m.version for m in local_migrations()})
    if unknown:
        raise MigrationError(
            f"the database has migrations this checkout does not know: {', '.join(unknown)}. "
            "Pull the missing files or roll the database back before migrating."
        )
    for migration in local_migrations():
        if to_version is not None and migration.version > to_version:
            break
        if migration.version in applied:
            continue
        with conn.transaction():
            statements = run_sql_file(conn, migration.path)
            conn.execute(
                "insert into supabase_migrations.schema_migrations (version, name, statements) values (%s, %s, %s)",
                (migration.version, migration.name, statements),
            )
        yield migration


def rollback(
    conn: psycopg.Connection, *, steps: int | None = None, to_version: str | None = None
) -> Iterator[Migration]:
    """Undo the newest applied migrations (`steps` of them, or all newer than `to_version`); yield each."""
    if (steps is None) == (to_version is None):
        raise MigrationError("say either how many steps to roll back or which version to roll back to")
    applied = applied_versions(conn)
    by_version = {m.version: m for m in local_migrations()}
    if to_version is not None and to_version not in applied and to_version != "0":
        raise MigrationError(f"version {to_version} is not applied; `prep db status` lists the applied ones")
    newest_first = sorted(applied, reverse=True)
    targets = newest_first[:steps] if steps is not None else [v for v in newest_first if v > to_version]
    for version in targets:
        migration = by_version.get(version)
        if migration is None or not migration.rollback_path.exists():
            raise MigrationError(f"no rollback script for migration {version}: expected {ROLLBACKS_DIR}/<file>")
        with conn.transaction():
            run_sql_file(conn, migration.rollback_path)
            conn.execute("delete from supabase_migrations.schema_migrations where version = %s", (version,))
        yield migration


def build(conn: psycopg.Connection, *, with_seed: bool = True) -> None:
    """What `prep db up` does to a database, quietly: the stand-in where needed, every migration, the seed."""
    apply_stand_in(conn)
    list(migrate(conn))
    if with_seed:
        seed(conn)


def seed(conn: psycopg.Connection) -> list[Path]:
    """Load `supabase/seeds/*.sql` in name order (what `[db.seed] sql_paths` in config.toml names)."""
    files = sorted(SEEDS_DIR.glob("*.sql"))
    with conn.transaction():
        for path in files:
            run_sql_file(conn, path)
    return files


def drop_everything(conn: psycopg.Connection) -> None:
    """Return a plain (non-Supabase) database to empty: our schemas and the stand-in's. Roles are kept."""
    with conn.transaction():
        conn.execute(
            "drop schema if exists public, private, service, archive, supabase_migrations, auth, extensions, storage,"
            " realtime cascade"
        )
        conn.execute("drop publication if exists supabase_realtime")
        conn.execute("create schema public authorization pg_database_owner")
        conn.execute("comment on schema public is 'standard public schema'")  # as a new database has it
        conn.execute("grant usage on schema public to public")
