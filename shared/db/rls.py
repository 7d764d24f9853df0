"""Acting as a caller exactly as PostgREST does: in a transaction, the JWT's role plus its claims."""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import psycopg

API_ROLES = frozenset({"anon", "authenticated", "service_role"})


@contextmanager
def acting_as(conn: psycopg.Connection, claims: Mapping[str, Any]) -> Iterator[psycopg.Connection]:
    """Run the block as the role named in `claims`, with `request.jwt.claims` set, both local to a transaction.

    Opens a transaction (a savepoint inside an outer one). On error it rolls back and the identity goes
    with it; on success the identity is dropped before the transaction ends so nothing leaks to the caller.
    """
    role = claims.get("role", "anon")
    if role not in API_ROLES:
        raise ValueError(f"claims role must be one of {sorted(API_ROLES)}, got {role!r}")
    with conn.transaction():
        conn.execute(
            "select set_config('role', %s, true), set_config('request.jwt.claims', %s, true)",
            (role, json.dumps(claims, default=str)),
        )
        yield conn
        conn.execute("reset role")
        conn.execute("select set_config('request.jwt.claims', '', true)")
