"""The database's health, read the way Supabase reads it: `supabase inspect db ...`'s own queries, plus the few
figures the operator dashboard adds (connections against their limit, replication lag, tables read by
sequential scans).

`inspect_sql/supabase_cli/` holds the CLI's queries verbatim (version SUPABASE_CLI_VERSION;
tests/database/test_inspect.py compares each with the installed CLI's binary), so `prep db inspect <name>`
answers exactly what `supabase inspect db <name> --db-url ...` does, without the CLI. `inspect_sql/*.sql` are
ours. Every query only reads statistics views and catalogs.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
from psycopg import errors as pg_errors
from pydantic import BaseModel

SQL_DIR = Path(__file__).resolve().parent / "inspect_sql"
SUPABASE_CLI_VERSION = "3.1.0"

# The schemas every CLI query leaves out (Supabase's own and extensions'), as the CLI lists them; `*` is a wildcard.
EXCLUDED_SCHEMAS = [
    "information_schema", "pg_*", "_analytics", "_realtime", "_supavisor", "auth", "etl", "extensions",
    "pgbouncer", "realtime", "storage", "supabase_functions", "supabase_migrations", "cron", "dbdev", "graphql",
    "graphql_public", "net", "pgmq", "pgsodium", "pgsodium_masks", "pgtle", "repack", "tiger", "tiger_data",
    "timescaledb_*", "_timescaledb_*", "topology", "vault",
]  # fmt: skip


@dataclass(frozen=True)
class InspectCommand:
    name: str
    summary: str
    # The CLI passes $1 = EXCLUDED_SCHEMAS as LIKE patterns, and db-stats also $2 = the database's name.
    excludes_schemas: bool = False
    names_database: bool = False
    reads_statement_statistics: bool = False


COMMANDS = {
    command.name: command
    for command in (
        InspectCommand("outliers", "the current role's statements by total execution time",
                       reads_statement_statistics=True),
        InspectCommand("calls", "statements by number of calls", reads_statement_statistics=True),
        InspectCommand("index-stats", "every index: size, share of scans, unused", excludes_schemas=True),
        InspectCommand("bloat", "estimated table and index bloat", excludes_schemas=True),
        InspectCommand("locks", "exclusive locks held"),
        InspectCommand("blocking", "statements waiting on another's lock"),
        InspectCommand("long-running-queries", "statements running for more than 5 minutes"),
        InspectCommand("db-stats", "sizes, cache hit rates, WAL size", excludes_schemas=True, names_database=True,
                       reads_statement_statistics=True),
        InspectCommand("replication-slots", "replication slots and their lag"),
        InspectCommand("role-stats", "connections per role against its limit"),
        InspectCommand("table-stats", "table sizes, estimated rows, sequential scans", excludes_schemas=True),
        InspectCommand("vacuum-stats", "dead rows and when autovacuum runs", excludes_schemas=True),
    )
}  # fmt: skip


class StatementStatisticsError(RuntimeError):
    """pg_stat_statements cannot be read on this server (not in `extensions`, or not preloaded)."""


@dataclass(frozen=True)
class Result:
    columns: list[str]
    rows: list[tuple[Any, ...]]

    def records(self) -> list[dict[str, Any]]:
        return [dict(zip(self.columns, row, strict=True)) for row in self.rows]


def like_patterns(schemas: list[str]) -> list[str]:
    """The CLI's `jm`: a schema name as a LIKE pattern (`\\` and `_` escaped, `*` matching anything)."""
    escapes = {"*": "%", "\\": "\\\\", "_": "\\_"}
    return ["".join(escapes.get(char, char) for char in schema) for schema in schemas]


def query_text(name: str) -> str:
    directory = SQL_DIR / "supabase_cli" if name in COMMANDS else SQL_DIR
    return (directory / f"{name}.sql").read_text()


def inspect(conn: psycopg.Connection, name: str) -> Result:
    """Run `supabase inspect db <name>`'s query with the CLI's parameters."""
    command = COMMANDS[name]
    params: list[Any] = []
    if command.excludes_schemas:
        params.append(like_patterns(EXCLUDED_SCHEMAS))
    if command.names_database:
        params.append(conn.info.dbname)
    return _run(conn, query_text(name), params, command.reads_statement_statistics)


def health_query(conn: psycopg.Connection, name: str, *, reads_statement_statistics: bool = False) -> Result:
    """One of our own queries in inspect_sql/ (no parameters)."""
    return _run(conn, query_text(name), [], reads_statement_statistics)


def _run(conn: psycopg.Connection, sql: str, params: list[Any], reads_statement_statistics: bool) -> Result:
    # The CLI's queries use $1 placeholders and literal `%`: a raw cursor passes both to the server as they are.
    try:
        with conn.transaction(), psycopg.RawCursor(conn) as cursor:
            cursor.execute(sql, params)  # type: ignore[arg-type]
            columns = [column.name for column in cursor.description or []]
            return Result(columns, cursor.fetchall())
    except (pg_errors.UndefinedTable, pg_errors.ObjectNotInPrerequisiteState) as error:
        if not reads_statement_statistics:
            raise
        raise StatementStatisticsError(statement_statistics_problem(conn) or str(error)) from error


def statement_statistics_problem(conn: psycopg.Connection) -> str | None:
    """Why extensions.pg_stat_statements cannot be read here, in words an operator can act on; None if it can."""
    schema, preloaded = conn.execute(
        "select (select extnamespace::regnamespace::text from pg_extension where extname = 'pg_stat_statements'),"
        " current_setting('shared_preload_libraries')"
    ).fetchone()  # type: ignore[misc]
    if schema is None:
        return (
            "pg_stat_statements is not installed in this database: apply migration 18 (`prep db migrate`), which"
            " creates it in schema `extensions` as on Supabase."
        )
    if schema != "extensions":
        return (
            f"pg_stat_statements is installed in schema {schema!r}, and Supabase's queries read it from"
            " `extensions`: `alter extension pg_stat_statements set schema extensions`."
        )
    if "pg_stat_statements" not in preloaded:
        return (
            "this server does not preload pg_stat_statements, so it records no statements: add it to"
            " shared_preload_libraries (postgresql.conf, or `alter system set shared_preload_libraries ="
            " 'pg_stat_statements'`) and restart the server. The embedded server preloads it by itself"
            " (an older one is restarted by the next prep command)."
        )
    return None


class DatabaseHealth(BaseModel):
    """The operator dashboard's database section. A part the server cannot give (statement statistics not
    preloaded, a statistics function the role may not call) is None, with the reason in `unavailable`."""

    database_stats: dict[str, Any] | None = None
    connections: dict[str, Any] | None = None
    slowest_statements: list[dict[str, Any]] | None = None
    unused_indexes: list[dict[str, Any]] | None = None
    sequential_scans: list[dict[str, Any]] | None = None
    bloat: list[dict[str, Any]] | None = None
    replication: list[dict[str, Any]] | None = None
    unavailable: dict[str, str] = {}


def gather(conn: psycopg.Connection) -> DatabaseHealth:
    """Every part of DatabaseHealth, each from its own query (a failing one leaves the others)."""
    health = DatabaseHealth()

    def part(name: str, read: Callable[[], Any]) -> None:
        try:
            setattr(health, name, read())
        except (StatementStatisticsError, psycopg.Error) as error:
            health.unavailable[name] = str(error).strip().splitlines()[0]

    part("database_stats", lambda: inspect(conn, "db-stats").records()[0])
    part("connections", lambda: health_query(conn, "connections").records()[0])
    part(
        "slowest_statements",
        lambda: health_query(conn, "slowest_statements", reads_statement_statistics=True).records(),
    )
    part("unused_indexes", lambda: [r for r in inspect(conn, "index-stats").records() if r["unused"]][:10])
    part("sequential_scans", lambda: health_query(conn, "sequential_scans").records())
    part("bloat", lambda: inspect(conn, "bloat").records()[:5])
    part("replication", lambda: health_query(conn, "replication").records())
    return health
