"""Reads on a read replica: used only while the replica is fresh enough for the read, else the primary answers.

Before each read, the primary's WAL insert position is taken (one trivial query), then the replica is asked
whether it has replayed that far. A read that must see everything committed before the request (Freshness.AT_REQUEST)
waits up to DB_READ_WAIT_SECONDS for that; one that accepts staleness (Freshness.RECENT) also runs at once while
the replica's last replayed commit is at most DB_READ_MAX_LAG_SECONDS old. Otherwise, or when the replica cannot be
reached, the read runs on the primary and a warning says why. A replica that could not be reached is left alone for
REPLICA_RETRY_SECONDS, so an outage costs one wait per process, not one per read.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping
from typing import Any

import psycopg

from shared.config import DatabaseSettings
from shared.db import Caller, DatabaseError, Freshness
from shared.db.psycopg_transport import PsycopgDatabase

log = logging.getLogger("db.replica")

REPLICA_RETRY_SECONDS = 30.0
POLL_SECONDS = 0.005

# The end of the primary's WAL: its insert position, which asynchronously committed serves are before too (not
# the write position), except where the last record ended at a page boundary: there the insert position points
# past the next page's header (24 bytes, 40 at a segment's start: after every segment switch, pg_basebackup's
# and archive_timeout's too), where no replica replays to until another record is written. An idle primary
# would then send every read that must see its commits to the primary, after DB_READ_WAIT_SECONDS.
PRIMARY_POSITION = (
    "select case when (p - '0/0') % pg_size_bytes(current_setting('wal_segment_size')) = 40 then p - 40"
    " when (p - '0/0') % current_setting('wal_block_size')::integer = 24 then p - 24 else p end"
    " from pg_current_wal_insert_lsn() p"
)
_REPLICA_STATE = (
    "select pg_is_in_recovery(), pg_last_wal_replay_lsn() >= %s::pg_lsn,"
    " extract(epoch from clock_timestamp() - pg_last_xact_replay_timestamp())::float8"
)


class ReplicaReads:
    """The Database protocol for calls that write nothing (a replica refuses writes): on the replica at
    DATABASE_READ_URL when it is fresh enough for `freshness`, else on `primary`."""

    def __init__(
        self,
        primary: PsycopgDatabase,
        settings: DatabaseSettings,
        freshness: Freshness,
    ) -> None:
        if settings.database_read_url is None:
            raise ValueError("ReplicaReads needs DATABASE_READ_URL")
        self.freshness = freshness
        self._primary = primary
        self._replica = PsycopgDatabase(
            settings, url=settings.database_read_url.get_secret_value(), pool_timeout=settings.db_read_wait_seconds
        )
        self._max_lag = settings.db_read_max_lag_seconds
        self._wait = settings.db_read_wait_seconds
        self._lock = threading.Lock()
        self._unreachable_until = 0.0

    def call(self, function: str, args: Mapping[str, Any] | None = None, *, caller: Caller | None = None) -> Any:
        reason = self._skipped()
        if reason is None:
            position = self._primary_position()
            try:
                with self._replica.connection() as conn:
                    reason = self._not_fresh_enough(conn, position)
                    if reason is None:
                        return self._replica.call_on(conn, function, args, caller=caller)
            except DatabaseError as error:
                reason = self._failed(error)
        log.warning(
            "read on the primary: %s",
            reason,
            extra={"function": function, "freshness": str(self.freshness), "reason": reason},
        )
        return self._primary.call(function, args, caller=caller)

    def close(self) -> None:
        self._replica.close()

    def _skipped(self) -> str | None:
        with self._lock:
            if time.monotonic() < self._unreachable_until:
                return f"the replica could not be reached less than {REPLICA_RETRY_SECONDS:g}s ago"
        return None

    def _primary_position(self) -> str:
        with self._primary.connection() as conn:
            return str(conn.execute(PRIMARY_POSITION).fetchone()[0])  # type: ignore[index]

    def _not_fresh_enough(self, conn: psycopg.Connection, position: str) -> str | None:
        """None once the replica may answer; else what is wrong, after waiting up to DB_READ_WAIT_SECONDS."""
        deadline = time.monotonic() + self._wait
        while True:
            standby, caught_up, age = conn.execute(_REPLICA_STATE, (position,)).fetchone()  # type: ignore[misc]
            if not standby:
                return "DATABASE_READ_URL is not a replica (pg_is_in_recovery() is false): was it promoted?"
            if caught_up:
                return None
            if self.freshness is Freshness.RECENT and age is not None and age <= self._max_lag:
                return None
            if time.monotonic() >= deadline:
                behind = f"the replica had not replayed the primary's position {position} within {self._wait:g}s"
                if self.freshness is Freshness.RECENT:
                    last = "no commit replayed yet" if age is None else f"its last replayed commit is {age:.1f}s old"
                    return f"{behind}, and {last} (DB_READ_MAX_LAG_SECONDS is {self._max_lag:g})"
                return f"{behind} (the read must see every commit before the request)"
            time.sleep(POLL_SECONDS)

    def _failed(self, error: DatabaseError) -> str:
        """Why the replica could not answer; re-raises an error the primary would answer the same way."""
        state = error.sqlstate or ""
        if state == "40001":  # canceled by a conflict with recovery (replay removed rows the read needed)
            return f"the read conflicted with the replica's replay: {error.detail}"
        if not state or state.startswith(("08", "57P")):  # no connection, or the server is shutting down
            with self._lock:
                self._unreachable_until = time.monotonic() + REPLICA_RETRY_SECONDS
            return f"the replica could not be reached ({error.detail}); it is tried again in {REPLICA_RETRY_SECONDS:g}s"
        raise error
