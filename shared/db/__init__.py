"""The one way handlers reach the database: call a SQL function, as the service or on behalf of a user.

Two transports, chosen by configuration, with the same contract (named arguments in, one JSON value out,
SQL errors mapped to the same HTTP statuses):
- psycopg: a direct connection (in production Supabase's transaction pooler, so no prepared statements and
  every setting transaction-local);
- postgrest: PostgREST's RPC endpoint through the `postgrest` client supabase-py is built on.

SQL functions signal expected refusals with PostgREST's convention, SQLSTATE `PTxyz` for HTTP status xyz
(`raise sqlstate 'PT409' using message = ...`), so both transports answer the same.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol

from shared.config import DatabaseSettings

SERVICE_CLAIMS: Mapping[str, Any] = {"role": "service_role"}


@dataclass(frozen=True)
class Caller:
    """A verified user on whose behalf a call runs under RLS: their JWT claims and the raw token."""

    claims: Mapping[str, Any]
    token: str


@dataclass
class DatabaseError(Exception):
    """A call failed; `status` is the HTTP status it deserves, `retryable` whether trying again may help."""

    status: int
    title: str
    detail: str
    hint: str | None = None
    sqlstate: str | None = None
    retryable: bool = field(default=False)

    def __str__(self) -> str:
        return f"{self.title}: {self.detail}"

    @property
    def ours(self) -> bool:
        """A refusal one of our SQL functions wrote for the caller (PTxyz), rather than the database's own text."""
        return (self.sqlstate or "").startswith("PT")

    # What an HTTP caller is told. The database's own words name constraints, types, enum values and the SQL, and
    # a failed connection names hosts: the log has them, the response says what happened in the project's words.
    @property
    def client_title(self) -> str:
        return "Internal error" if self.status == 500 and not self.ours else self.title

    @property
    def client_detail(self) -> str:
        if self.ours:
            return self.detail
        return _CLIENT_DETAILS.get(self.status, _CLIENT_DETAILS[500])

    @property
    def client_hint(self) -> str | None:
        return self.hint if self.ours else None


def error_for_sqlstate(sqlstate: str | None, message: str, hint: str | None = None) -> DatabaseError:
    state = sqlstate or ""
    if state.startswith("PT") and state[2:].isdigit():
        status = int(state[2:])
        return DatabaseError(status, _TITLES.get(status, "Request refused"), message, hint, state)
    if state in ("40001", "40P01", "57014", "55P03") or state.startswith("08") or state.startswith("53"):
        return DatabaseError(503, "Database busy", message, hint or "Try again shortly.", state, retryable=True)
    if state.startswith("22"):
        return DatabaseError(400, "Invalid input", message, hint, state)
    if state.startswith("23"):
        return DatabaseError(409, "Conflict", message, hint, state)
    if state == "42501":
        return DatabaseError(403, "Forbidden", message, hint, state)
    return DatabaseError(500, "Database error", message, hint, state)


def unavailable(detail: str) -> DatabaseError:
    return DatabaseError(
        503, "Database unavailable", detail, "The database could not be reached; try again shortly.", retryable=True
    )


_CLIENT_DETAILS = {
    400: "a value in the request cannot be stored as sent; check it against the API's OpenAPI document",
    403: "this operation is not allowed for this caller",
    409: "the request conflicts with what is already stored (it may have been made already); fetch the current "
    "state before trying again",
    503: "the database is busy or unreachable; try again shortly",
    500: "something went wrong on our side; quote the request id",
}

_TITLES = {
    400: "Invalid request",
    402: "Payment required",
    403: "Forbidden",
    404: "Not found",
    409: "Conflict",
    422: "Unprocessable request",
    429: "Limit reached",
}


class Database(Protocol):
    def call(self, function: str, args: Mapping[str, Any] | None = None, *, caller: Caller | None = None) -> Any:
        """Call `schema.function` with named arguments; as `caller` under RLS, else as service_role."""
        ...


def connect(settings: DatabaseSettings) -> Database:
    """The configured transport; only its own client library is imported."""
    if settings.db_transport == "psycopg":
        from shared.db.psycopg_transport import PsycopgDatabase

        return PsycopgDatabase(settings)
    from shared.db.postgrest_transport import PostgrestDatabase

    return PostgrestDatabase(settings)


class Freshness(StrEnum):
    """What a read routed to a read replica must see (docs/scaling.md "Read replicas")."""

    # Everything up to DB_READ_MAX_LAG_SECONDS ago: operator reports.
    RECENT = "recent"
    # Everything committed before the request began, the caller's own writes included: exports.
    AT_REQUEST = "at_request"


def connect_reads(settings: DatabaseSettings, primary: Database, freshness: Freshness) -> Database:
    """Where reads that write nothing and need `freshness` go: the read replica (DATABASE_READ_URL) while it is
    fresh enough, else `primary`. Without a replica, `primary` itself."""
    if not settings.has_read_replica:
        return primary
    from shared.db.psycopg_transport import PsycopgDatabase
    from shared.db.replica import ReplicaReads

    if not isinstance(primary, PsycopgDatabase):
        raise TypeError("reads from a replica fall back to a psycopg primary")
    return ReplicaReads(primary, settings, freshness)
