"""Retention of answers by partition: months of `public.responses` past the retention window are detached and
attached to `archive.responses` whole (migration 17), never moved row by row.

`alter table ... detach partition ... concurrently` cannot run inside a transaction (nor inside a SQL function),
so this step is not a `service.` call like the others: it asks `service.response_retention_plan` what to run and
runs each statement on its own autocommit connection, as the role that owns the tables (DATABASE_URL's login
role; the API roles may not alter tables). The plan is recomputed from the catalog every run, so a run stopped
half-way (a detach left pending, the default partition left detached) is finished by the next one.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import psycopg

from shared.db import DatabaseError, error_for_sqlstate, unavailable

# A detach waits for the default partition's ACCESS EXCLUSIVE lock at most this long, then gives up until the
# next run: traffic queued behind the lock waits no longer than this.
LOCK_TIMEOUT_MS = 2_000


def run_retention(database_url: str, *, as_of: datetime, keep_months: int) -> dict[str, Any]:
    """Archive every month of answers older than `keep_months` whole UTC months before `as_of`'s month."""
    try:
        with psycopg.connect(database_url, autocommit=True, connect_timeout=10) as conn:
            conn.execute("select set_config('lock_timeout', %s, false)", (str(LOCK_TIMEOUT_MS),))
            plan = conn.execute("select service.response_retention_plan(%s, %s)", (as_of, keep_months)).fetchone()[0]  # type: ignore[index]
            try:
                for statement in plan["statements"]:
                    conn.execute(statement)
            finally:
                for statement in plan["restore"]:
                    conn.execute(statement)
            archived = [
                conn.execute("select private.archive_response_partition(%s::regclass)", (table,)).fetchone()[0]  # type: ignore[index]
                for table in plan["archive"]
            ]
    except psycopg.Error as error:
        raise _database_error(error) from error
    return {"archived_months": archived, "skipped": plan.get("skipped")}


def _database_error(error: psycopg.Error) -> DatabaseError:
    if isinstance(error, psycopg.OperationalError) and not error.sqlstate:
        return unavailable(str(error).strip().splitlines()[0])
    message = (error.diag.message_primary if error.diag else None) or str(error).strip()
    return error_for_sqlstate(error.sqlstate, message, error.diag.message_hint if error.diag else None)
