"""Retention by partition: whole UTC months of the live partitioned tables leave them once past their window
(migrations 17 and 21), never row by row. Served questions and answers older than RESPONSE_RETENTION_MONTHS are
detached and attached to their archive twins (`archive.session_questions`, `archive.responses`), where their
owner still reads them and account deletion still removes them; AI calls older than AI_USAGE_RETENTION_MONTHS
are detached and dropped (analytics_daily keeps their daily cost).

`alter table ... detach partition ... concurrently` cannot run inside a transaction (nor inside a SQL function),
so this step is not a `service.` call like the others: it asks `service.retention_plan` what to run and runs
each statement on its own autocommit connection, as the role that owns the tables (DATABASE_URL's login role;
the API roles may not alter tables). The plan is recomputed from the catalog every run, so a run stopped
half-way (a detach left pending, a month detached and not yet retired) is finished by the next one.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import psycopg

from functions.analytics.settings import AI_USAGE_RETENTION_MONTHS
from shared.db import DatabaseError, error_for_sqlstate, unavailable

# A detach waits for its lock at most this long, then gives up until the next run: traffic queued behind the lock
# waits no longer than this.
LOCK_TIMEOUT_MS = 2_000


def run_retention(
    database_url: str, *, as_of: datetime, keep_months: int, ai_usage_months: int = AI_USAGE_RETENTION_MONTHS
) -> dict[str, Any]:
    """Retire every month older than `keep_months` (served questions, answers) or `ai_usage_months` (AI calls)
    whole UTC months before `as_of`'s month."""
    archived: list[str] = []
    dropped: list[str] = []
    skipped: dict[str, str] = {}
    try:
        with psycopg.connect(database_url, autocommit=True, connect_timeout=10) as conn:
            conn.execute("select set_config('lock_timeout', %s, false)", (str(LOCK_TIMEOUT_MS),))
            plans = conn.execute(
                "select service.retention_plan(%s, %s, %s)", (as_of, keep_months, ai_usage_months)
            ).fetchone()[0]  # type: ignore[index]
            for plan in plans:
                for statement in plan["statements"]:
                    conn.execute(statement)
                for table in plan["retire"]:
                    archive = conn.execute("select private.retire_partition(%s::regclass)", (table,)).fetchone()[0]  # type: ignore[index]
                    (archived if archive else dropped).append(archive or table)
                if plan["skipped"]:
                    skipped[plan["table"]] = plan["skipped"]
    except psycopg.Error as error:
        raise _database_error(error) from error
    return {
        "archived_months": archived,
        "dropped_months": dropped,
        "partitions_archived": len(archived),
        "partitions_dropped": len(dropped),
        "skipped": skipped,
    }


def _database_error(error: psycopg.Error) -> DatabaseError:
    if isinstance(error, psycopg.OperationalError) and not error.sqlstate:
        return unavailable(str(error).strip().splitlines()[0])
    message = (error.diag.message_primary if error.diag else None) or str(error).strip()
    return error_for_sqlstate(error.sqlstate, message, error.diag.message_hint if error.diag else None)
