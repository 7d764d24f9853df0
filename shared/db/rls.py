"""Acting as a caller exactly as PostgREST does: in a transaction, the JWT's role plus its claims."""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import psycopg
from psycopg import pq

API_ROLES = frozenset({"anon", "authenticated", "service_role"})


@contextmanager
def acting_as(
    conn: psycopg.Connection, claims: Mapping[str, Any], *, statement_timeout_ms: int | None = None
) -> Iterator[psycopg.Connection]:
    """Run the block as the role named in `claims`, with `request.jwt.claims` set, both local to a transaction.

    Opens a transaction (a savepoint inside an outer one). Settings made with set_config(..., true) end with
    the transaction; inside an outer transaction they would outlive the savepoint, so they are undone then.
    """
    role = claims.get("role", "anon")
    if role not in API_ROLES:
        raise ValueError(f"claims role must be one of {sorted(API_ROLES)}, got {role!r}")
    nested = conn.info.transaction_status != pq.TransactionStatus.IDLE
    with conn.transaction():
        conn.execute(
            "select set_config('role', %s, true), set_config('request.jwt.claims', %s, true),"
            " set_config('statement_timeout', coalesce(%s, current_setting('statement_timeout')), true)",
            (role, json.dumps(claims, default=str), str(statement_timeout_ms) if statement_timeout_ms else None),
        )
        yield conn
        if nested:
            conn.execute("reset role")
            conn.execute("select set_config('request.jwt.claims', '', true)")
