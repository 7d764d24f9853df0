"""A request the way PostgREST sends it, for benchmarks that compare RLS against service_role.

PostgREST (`db-prepared-statements = true`, its default) sends each request as prepared statements on a
long-lived pooled connection (Supabase's PostgREST connects to Postgres directly, not through Supavisor's
transaction mode): in one transaction, a statement that sets the role and the JWT claims transaction-locally,
then the request's query in PostgREST's shape (a `pgrst_source` CTE wrapped in a select that counts and
aggregates). Postgres keeps each prepared statement's plan per connection; with `plan_cache_mode = auto` it
plans the first five executions with their parameters, then keeps a generic plan unless it costs more. A plan
that went through RLS depends on the role it was made for: run under another role, the statement is analysed
and planned again (other statements in between, under any role, do not matter). So a statement the
authenticated role keeps sending on a connection is planned once there; the same statement sent alternately as
two roles on one connection is planned at every request, as it is by a client that does not prepare.

`ServerTimes` reads pg_stat_statements (migration 18) for how often each statement was planned and what
planning and execution cost on the server, per role.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any, LiteralString

import psycopg
from psycopg import sql

# PostgREST's first statement of every request (its parameters bound, so one prepared statement for all).
PRE_REQUEST: LiteralString = (
    "select set_config('search_path', %s, true), set_config('role', %s, true),"
    " set_config('request.jwt.claims', %s, true), set_config('request.method', %s, true),"
    " set_config('request.path', %s, true)"
)
SEARCH_PATH = '"public", "extensions"'
# The select PostgREST wraps around a write's `pgrst_source` when the client asks for no body back.
WRITE_WRAPPER: LiteralString = (
    " SELECT '' AS total_result_set, pg_catalog.count(_postgrest_t) AS page_total, array[]::text[] AS header,"
    " ''::text AS body, nullif(current_setting('response.headers', true), '') AS response_headers,"
    " nullif(current_setting('response.status', true), '') AS response_status, '' AS response_inserted"
    " FROM (SELECT * FROM pgrst_source) _postgrest_t"
)
# ... and around a read's: the rows as one json body.
READ_WRAPPER: LiteralString = (
    " SELECT null::bigint AS total_result_set, pg_catalog.count(_postgrest_t) AS page_total,"
    " coalesce(json_agg(_postgrest_t), '[]') AS body,"
    " nullif(current_setting('response.headers', true), '') AS response_headers,"
    " nullif(current_setting('response.status', true), '') AS response_status, '' AS response_inserted"
    " FROM ( SELECT * FROM pgrst_source ) _postgrest_t"
)


def insert_minimal(table: str, columns: Mapping[str, str]) -> sql.Composed:
    """`POST /<table>` with `Prefer: return=minimal`: the json body (one parameter) read into typed columns."""
    names = sql.SQL(", ").join(sql.Identifier(name) for name in columns)
    picked = sql.SQL(", ").join(sql.Identifier("pgrst_body", name) for name in columns)
    typed = sql.SQL(", ").join(sql.SQL("{} {}").format(sql.Identifier(n), sql.SQL(t)) for n, t in columns.items())
    return sql.SQL(
        "WITH pgrst_source AS (INSERT INTO {table}({names}) SELECT {picked}"
        " FROM (SELECT %s::json AS json_data) pgrst_payload,"
        " LATERAL (SELECT {names} FROM json_to_record(pgrst_payload.json_data) AS _({typed}) ) pgrst_body"
        " RETURNING 1)" + WRITE_WRAPPER
    ).format(table=sql.Identifier("public", table), names=names, picked=picked, typed=typed)


def read(table: str, filters: Sequence[tuple[str, str]], order_column: str, limit: int) -> sql.Composed:
    """`GET /<table>?<column>=<op>.<value>&...&order=<order_column>.desc&limit=<limit>`: each filter a (column,
    SQL operator) pair whose value is a parameter, in order; PostgREST writes limit and offset into the text."""
    where = sql.SQL(" AND ").join(
        sql.SQL("{} {} %s").format(sql.Identifier("public", table, column), sql.SQL(operator))
        for column, operator in filters
    )
    return sql.SQL(
        "WITH pgrst_source AS ( SELECT {table}.* FROM {table} WHERE {where}"
        " ORDER BY {order} DESC LIMIT {limit} OFFSET 0 )" + READ_WRAPPER
    ).format(
        table=sql.Identifier("public", table),
        where=where,
        order=sql.Identifier("public", table, order_column),
        limit=sql.Literal(limit),
    )


def connect(url: str, *, prepared: bool) -> psycopg.Connection:
    """A long-lived connection that prepares every statement at its first use (as PostgREST does), or never
    (as a client behind a transaction pooler must)."""
    return psycopg.connect(url, prepare_threshold=0 if prepared else None)


@contextmanager
def request(
    conn: psycopg.Connection, claims: Mapping[str, Any], method: str, path: str
) -> Iterator[psycopg.Connection]:
    """One request's transaction: role and claims set transaction-locally, then the block's query."""
    with conn.transaction():
        conn.execute(PRE_REQUEST, (SEARCH_PATH, claims["role"], json.dumps(claims), method, path))
        yield conn


class ServerTimes:
    """Per statement and role, from pg_stat_statements, of one database: calls, how many of them were planned,
    planning and execution ms per call. `admin` is a connection to a database where the extension is installed
    (migration 18; the figures are the server's). Planning is timed only where
    `pg_stat_statements.track_planning` is on: `enable` turns it on for connections opened after it."""

    def __init__(self, admin: psycopg.Connection, database: str) -> None:
        self.admin = admin
        self.database = database

    def enable(self) -> None:
        self.admin.execute(
            sql.SQL("alter database {} set pg_stat_statements.track_planning = on").format(
                sql.Identifier(self.database)
            )
        )

    def reset(self) -> None:
        self.admin.execute(
            "select extensions.pg_stat_statements_reset(0, (select oid from pg_database where datname = %s), 0)",
            (self.database,),
        )

    def of(self, query_prefix: str) -> dict[str, dict[str, float]]:
        rows = self.admin.execute(
            "select userid::regrole::text, sum(calls), sum(plans), sum(total_plan_time) / sum(calls),"
            " sum(total_exec_time) / sum(calls)"
            " from extensions.pg_stat_statements"
            " where dbid = (select oid from pg_database where datname = %s) and query like %s"
            " group by userid",
            (self.database, query_prefix.replace("%", r"\%").replace("_", r"\_") + "%"),
        ).fetchall()
        return {
            role: {
                "calls": int(calls),
                "plans": int(plans),
                "plan_ms_per_call": round(float(plan_ms), 3),
                "exec_ms_per_call": round(float(exec_ms), 3),
            }
            for role, calls, plans, plan_ms, exec_ms in rows
        }
