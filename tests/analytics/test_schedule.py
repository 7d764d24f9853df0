"""The scheduled Lambda and `prep analytics aggregate`: the steps, their isolation, and what a failure says."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
import pytest
from pydantic import SecretStr
from typer.testing import CliRunner

from functions.analytics import schedule
from functions.analytics.settings import AnalyticsSettings
from prep.cli import app
from shared.config import ConfigurationError, DatabaseSettings, load_settings
from shared.db import Caller, Database, DatabaseError, connect
from shared.db.psycopg_transport import PsycopgDatabase
from tests.analytics.history import practise, practitioner
from tests.support.metrics import documents, values

NOW = datetime(2026, 6, 2, 10, 0, tzinfo=UTC)
EVENT = {"source": "aws.events", "detail-type": "Scheduled Event", "time": "2026-06-02T10:00:00Z", "detail": {}}


@pytest.fixture
def history(database_url: str) -> str:
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("delete from public.analytics_daily")
        user = practitioner(conn)
        practise(conn, user, "2026-06-01 18:00+00", [70])
        practise(conn, user, "2026-06-02 08:00+00", [90], category="technical")
    return str(user)


def settings_for(url: str, **overrides: Any) -> AnalyticsSettings:
    return AnalyticsSettings(database_url=SecretStr(url), **overrides)


def test_a_run_aggregates_the_trailing_window_then_rolls_up_and_maintains(database_url: str, history: str) -> None:
    settings = settings_for(database_url, analytics_trailing_days=2, analytics_user_shards=2)
    report = schedule.run_schedule(now=NOW, settings=settings)

    assert [s.label for s in report.steps] == [
        "aggregate_platform_day 2026-06-01",
        "aggregate_user_day 2026-06-01 0/2",
        "aggregate_user_day 2026-06-01 1/2",
        "aggregate_platform_day 2026-06-02",
        "aggregate_user_day 2026-06-02 0/2",
        "aggregate_user_day 2026-06-02 1/2",
        "rollup_question_stats",
        "calibrate_answers",
        "refresh_peer_percentiles",
        "curate_questions",
        "run_maintenance",
        "settle_peer_rooms",
        "match_peer_requests",
        "partition_retention",
    ]
    assert report.failed == []
    # The user is in exactly one of the two shards.
    assert sorted(s.result["users"] for s in report.steps if s.shard and s.day == NOW.date()) == [0, 1]
    with psycopg.connect(database_url) as conn:
        days = conn.execute("select distinct metric_date::text from public.analytics_daily order by 1").fetchall()
        streak = conn.execute(
            "select latest_run from public.progress_totals where user_id = %s",
            (history,),
        ).fetchone()
    assert days == [("2026-06-01",), ("2026-06-02",)]
    assert streak == (2,)


class FailingOn:
    """The real database, except that one SQL function fails as if its statement timed out."""

    def __init__(self, database: Database, function: str) -> None:
        self.database, self.function = database, function

    def call(self, function: str, args: Mapping[str, Any] | None = None, *, caller: Caller | None = None) -> Any:
        if function == self.function:
            raise DatabaseError(503, "Database busy", "canceling statement due to statement timeout", retryable=True)
        return self.database.call(function, args, caller=caller)


def test_a_failing_step_does_not_stop_the_others_and_the_handler_names_it(
    database_url: str, history: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = settings_for(database_url, analytics_trailing_days=1)
    database = FailingOn(connect(settings), "service.aggregate_user_day")
    monkeypatch.setattr(schedule, "_database", database)
    monkeypatch.setenv("DATABASE_URL", database_url)
    monkeypatch.setenv("ANALYTICS_TRAILING_DAYS", "1")
    monkeypatch.setenv("ANALYTICS_USER_SHARDS", "2")

    with pytest.raises(schedule.ScheduleFailedError) as failure:
        schedule.handler(EVENT, None)

    assert str(failure.value) == (
        "analytics steps failed (the others ran; the next run retries them): "
        "aggregate_user_day 2026-06-02 0/2: Database busy: canceling statement due to statement timeout; "
        "aggregate_user_day 2026-06-02 1/2: Database busy: canceling statement due to statement timeout"
    )
    with psycopg.connect(database_url) as conn:
        assert (
            conn.execute("select count(*) from public.analytics_daily where metric_date = '2026-06-02'").fetchone()[0]
            > 0
        )


def test_the_handler_returns_the_report(database_url: str, history: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(schedule, "_database", None)
    monkeypatch.setenv("DATABASE_URL", database_url)
    report = schedule.handler(EVENT, None)
    assert report["as_of"] == "2026-06-02T10:00:00Z"
    assert [s["error"] for s in report["steps"]] == [None] * 14  # 2 days of platform + 2 shards, then 8 steps


def test_an_unreachable_database_fails_every_step_with_what_to_check(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = settings_for("postgresql://postgres:postgres@127.0.0.1:1/postgres", db_timeout_seconds=0.2)
    # Closed at the end, or its pool keeps retrying the dead server in the background after the test.
    database = connect(settings)
    report = schedule.run_schedule(now=NOW, settings=settings, database=database)
    database.close()
    assert len(report.failed) == len(report.steps) == 14
    assert all(s.error.startswith("Database unavailable") for s in report.failed)


def test_a_missing_setting_fails_naming_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(schedule, "_database", None)
    monkeypatch.delenv("DATABASE_URL", raising=False)
    with pytest.raises(Exception, match="DATABASE_URL"):
        schedule.handler(EVENT, None)


def test_backfilling_a_range_from_the_console(database_url: str, history: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", database_url)
    runner = CliRunner()

    result = runner.invoke(app, ["analytics", "aggregate", "--from", "2026-05-30", "--to", "2026-06-02"])

    assert result.exit_code == 0, result.output
    assert "Aggregated 4 day(s), 2026-05-30 to 2026-06-02." in result.output
    with psycopg.connect(database_url) as conn:
        days = conn.execute("select count(distinct metric_date) from public.analytics_daily").fetchone()[0]
    assert days == 4
    backwards = runner.invoke(app, ["analytics", "aggregate", "--from", "2026-06-02", "--to", "2026-05-30"])
    assert backwards.exit_code == 2
    assert "--to is before --from" in backwards.output


@pytest.mark.usefixtures("in_lambda")
def test_each_run_counts_in_analytics_runs_by_outcome(
    database_url: str, history: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("DATABASE_URL", database_url)
    monkeypatch.setenv("ANALYTICS_TRAILING_DAYS", "1")
    monkeypatch.setattr(schedule, "_database", None)
    schedule.handler(EVENT, None)
    settings = settings_for(database_url, analytics_trailing_days=1)
    monkeypatch.setattr(schedule, "_database", FailingOn(connect(settings), "service.rollup_question_stats"))
    with pytest.raises(schedule.ScheduleFailedError):
        schedule.handler(EVENT, None)
    found = documents(capsys.readouterr().out)

    assert values(found, "AnalyticsRuns", Outcome="succeeded") == [1]
    assert values(found, "AnalyticsRuns", Outcome="failed") == [1]
    assert values(found, "AnalyticsFailedSteps") == [0, 1]
    assert all(seconds > 0 for seconds in values(found, "AnalyticsRunDuration"))


def test_the_local_schedule_says_one_short_line_a_tick_and_nothing_when_idle(
    database_url: str, history: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from prep.serve import AnalyticsSchedule  # `prep serve`'s tick: the schedule, then the deletion retries

    for name, value in {"DATABASE_URL": database_url, "STRIPE_SECRET_KEY": "sk_test_local"}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("LOCAL_STORAGE_DIR", str(tmp_path))
    database = PsycopgDatabase(load_settings(DatabaseSettings))
    tick = AnalyticsSchedule(60, database)
    try:
        with caplog.at_level(logging.INFO):
            tick.run_once()  # today's figures are new to this database
            first = list(caplog.records)
            caplog.clear()
            tick.run_once()  # nothing changed since
            second = list(caplog.records)
    finally:
        database.close()
    (line,) = first
    assert line.name == "prep.serve"
    assert line.getMessage().startswith("schedule: analytics rows updated ")
    assert len(line.getMessage()) < 160
    assert second == []


def test_a_maintenance_policy_key_nothing_reads_is_refused_at_start(monkeypatch: pytest.MonkeyPatch) -> None:
    """Retention by age in days went with migration 17: a policy still naming it would be silently ignored."""
    monkeypatch.setenv("DATABASE_URL", "postgresql://localhost/unused")
    monkeypatch.setenv("MAINTENANCE_POLICY", '{"partition_months_ahead": 2, "response_retention_days": 365}')
    with pytest.raises(ConfigurationError, match="MAINTENANCE_POLICY_RESPONSE_RETENTION_DAYS"):
        load_settings(AnalyticsSettings)
    monkeypatch.setenv("MAINTENANCE_POLICY", '{"partition_months_ahead": 2}')
    assert load_settings(AnalyticsSettings).maintenance_policy.model_dump(exclude_none=True) == {
        "partition_months_ahead": 2
    }
