"""Acting as a caller exactly as PostgREST does: in a transaction, the JWT's role plus its claims."""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import psycopg
from psycopg import pq

API_ROLES = frozenset({"anon", "authenticated", "service_role"})

# The role's statement_timeout from `alter role ... set` (this database's setting before the all-database one).
_ROLE_TIMEOUT = (
    "select substr(c, length('statement_timeout=') + 1) from pg_db_role_setting s, unnest(s.setconfig) c"
    " where s.setrole = %s::regrole and s.setdatabase in (0, (select oid from pg_database"
    " where datname = current_database())) and c like 'statement\\_timeout=%%' order by s.setdatabase desc limit 1"
)


@contextmanager
def acting_as(
    conn: psycopg.Connection, claims: Mapping[str, Any], *, statement_timeout_ms: int | None = None
) -> Iterator[psycopg.Connection]:
    """Run the block as the role named in `claims`, with `request.jwt.claims` set, both local to a transaction.

    As PostgREST does, the role's own statement_timeout (`alter role ... set`, e.g. Supabase's 8 s for
    authenticated and 3 s for anon) applies for the block; `statement_timeout_ms` overrides it.
    Opens a transaction (a savepoint inside an outer one). Settings made with set_config(..., true) end with
    the transaction; inside an outer transaction they would outlive the savepoint, so they are undone then.
    """
    role = claims.get("role", "anon")
    if role not in API_ROLES:
        raise ValueError(f"claims role must be one of {sorted(API_ROLES)}, got {role!r}")
    nested = conn.info.transaction_status != pq.TransactionStatus.IDLE
    outer_timeout = conn.execute("select current_setting('statement_timeout')").fetchone()[0] if nested else None
    with conn.transaction():
        conn.execute(
            "select set_config('role', %s, true), set_config('request.jwt.claims', %s, true),"
            " set_config('statement_timeout',"
            " coalesce(%s, (" + _ROLE_TIMEOUT + "), current_setting('statement_timeout')), true)",
            (role, json.dumps(claims, default=str), str(statement_timeout_ms) if statement_timeout_ms else None, role),
        )
        yield conn
        if nested:
            conn.execute("reset role")
            conn.execute(
                "select set_config('request.jwt.claims', '', true), set_config('statement_timeout', %s, true)",
                (outer_timeout,),
            )
