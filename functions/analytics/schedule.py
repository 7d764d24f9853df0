"""The scheduled analytics run (EventBridge); `prep analytics aggregate` runs the same steps for backfills.

    for each UTC day of the trailing window, side by side on their own connections:
        service.aggregate_platform_day(day)                                         -> analytics_daily
        service.aggregate_user_day(day, shard, shards) for each shard               -> user_progress, achievements
    service.rollup_question_stats()                                                  -> questions' usage and ratings
    service.calibrate_answers(as_of)       (answers scored since its watermark)     -> questions' calibrated
                                                                                       difficulty, category_abilities
    service.refresh_peer_percentiles(as_of)  (once a day)                           -> category_abilities' percentiles
    service.curate_questions(as_of)                                                  -> questions' lifecycle
    service.run_maintenance()                                                        -> housekeeping, months ahead
    service.settle_peer_rooms(as_of)                                   -> no-shows recorded, stale requests expired
    service.match_peer_requests()                         -> waiting peer requests the on-request match left paired
    retention.run_retention() (statements outside a transaction)                     -> old months archived/dropped

Each step is one SQL function in its own transaction: a slow or failing step neither holds the others' locks
nor undoes their work. Every step is idempotent, so a run that had a failing step still runs the rest, then
fails naming what failed (the Lambda's error metric and alarm see it) and the next run repairs it.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, date, datetime, timedelta
from typing import Any

from pydantic import BaseModel

from functions.analytics.retention import run_retention
from functions.analytics.settings import AnalyticsSettings
from shared.config import load_settings
from shared.db import Database, DatabaseError, connect
from shared.logs import configure_logging
from shared.metrics import Metric, emit

log = logging.getLogger("analytics.schedule")


class StepResult(BaseModel):
    step: str
    day: date | None = None
    shard: str | None = None  # "1/4": the second of four shards
    seconds: float
    result: dict[str, Any] | None = None
    error: str | None = None

    @property
    def label(self) -> str:
        return " ".join(part for part in (self.step, self.day and self.day.isoformat(), self.shard) if part)


# The figures of a step's result that count work done (the others describe the run: its day, shard, users read).
WORK_DONE = (
    "changed",
    "achievements_awarded",
    "questions_updated",
    "questions_promoted",
    "answers_calibrated",
    "percentiles_updated",
    "questions_sent_to_review",
    "questions_retired",
    "answers_tallied",
    "sessions_abandoned",
    "evaluations_failed",
    "stripe_events_purged",
    "usage_counters_purged",
    "generation_leases_purged",
    "partitions_archived",
    "partitions_dropped",
    "peer_requests_expired",
    "peer_rooms_settled",
    "peer_no_shows_recorded",
    "peer_rooms_opened",
)


class ScheduleReport(BaseModel):
    as_of: datetime
    steps: list[StepResult]

    @property
    def failed(self) -> list[StepResult]:
        return [step for step in self.steps if step.error is not None]

    def work_done(self) -> dict[str, int]:
        """The run's non-zero WORK_DONE figures, summed over its steps: empty when it had nothing to do."""
        totals = {figure: sum(int((step.result or {}).get(figure) or 0) for step in self.steps) for figure in WORK_DONE}
        return {figure: total for figure, total in totals.items() if total}


class ScheduleFailedError(Exception):
    """Some steps failed (the others ran); the message names each with its error."""


def run_step(
    step: str, call: Callable[[], dict[str, Any]], *, day: date | None = None, shard: str | None = None
) -> StepResult:
    started = time.perf_counter()
    try:
        result, error = call(), None
    except DatabaseError as failure:
        result, error = None, str(failure)
    outcome = StepResult(
        step=step, day=day, shard=shard, seconds=round(time.perf_counter() - started, 3), result=result, error=error
    )
    log.log(logging.ERROR if error else logging.INFO, "analytics step %s", step, extra=outcome.model_dump(mode="json"))
    return outcome


def aggregate_day(database: Database, day: date, *, shards: int, connections: int) -> list[StepResult]:
    """A UTC day's platform metrics and its users' progress and achievements (in `shards` shards), run side by
    side on up to `connections` connections: the steps share no rows, and the shards lock disjoint users."""

    def platform() -> StepResult:
        return run_step(
            "aggregate_platform_day",
            lambda: database.call("service.aggregate_platform_day", {"day": day.isoformat()}),
            day=day,
        )

    def users(shard: int) -> StepResult:
        return run_step(
            "aggregate_user_day",
            lambda: database.call(
                "service.aggregate_user_day", {"day": day.isoformat(), "shard": shard, "shards": shards}
            ),
            day=day,
            shard=f"{shard}/{shards}" if shards > 1 else None,
        )

    with ThreadPoolExecutor(max_workers=max(1, min(connections, shards + 1))) as pool:
        steps = [pool.submit(platform)] + [pool.submit(users, shard) for shard in range(shards)]
        return [step.result() for step in steps]


def trailing_days(as_of: datetime, count: int) -> list[date]:
    today = as_of.astimezone(UTC).date()
    return [today - timedelta(days=back) for back in reversed(range(count))]


def run_schedule(
    *, now: datetime | None = None, database: Database | None = None, settings: AnalyticsSettings | None = None
) -> ScheduleReport:
    settings = settings or load_settings(AnalyticsSettings)
    database = database or connect(settings)
    as_of = now or datetime.now(UTC)
    steps = [
        step
        for day in trailing_days(as_of, settings.analytics_trailing_days)
        for step in aggregate_day(
            database, day, shards=settings.analytics_user_shards, connections=settings.db_pool_size
        )
    ]
    steps.append(run_step("rollup_question_stats", lambda: database.call("service.rollup_question_stats")))
    steps.append(
        run_step("calibrate_answers", lambda: database.call("service.calibrate_answers", {"as_of": as_of.isoformat()}))
    )
    steps.append(
        run_step(
            "refresh_peer_percentiles",
            lambda: database.call("service.refresh_peer_percentiles", {"as_of": as_of.isoformat()}),
        )
    )
    steps.append(
        run_step("curate_questions", lambda: database.call("service.curate_questions", {"as_of": as_of.isoformat()}))
    )
    steps.append(
        run_step(
            "run_maintenance",
            lambda: database.call(
                "service.run_maintenance",
                {"as_of": as_of.isoformat(), "policy": settings.maintenance_policy.model_dump(exclude_none=True)},
            ),
        )
    )
    steps.append(
        run_step("settle_peer_rooms", lambda: database.call("service.settle_peer_rooms", {"as_of": as_of.isoformat()}))
    )
    steps.append(run_step("match_peer_requests", lambda: database.call("service.match_peer_requests")))
    if settings.database_url is not None:  # the postgrest transport cannot detach partitions: no retention
        url = settings.database_url.get_secret_value()
        steps.append(
            run_step(
                "partition_retention",
                lambda: run_retention(
                    url,
                    as_of=as_of,
                    keep_months=settings.response_retention_months,
                    ai_usage_months=settings.ai_usage_retention_months,
                ),
            )
        )
    return ScheduleReport(as_of=as_of, steps=steps)


def count_run(report: ScheduleReport, seconds: float) -> None:
    """Metrics AnalyticsRuns (by outcome: the "late" alarm wants a `succeeded` one every hour),
    AnalyticsFailedSteps and AnalyticsRunDuration."""
    emit(
        [
            Metric("AnalyticsRuns", 1),
            Metric("AnalyticsFailedSteps", len(report.failed)),
            Metric("AnalyticsRunDuration", round(seconds, 3), "Seconds"),
        ],
        {"Outcome": "failed" if report.failed else "succeeded"},
    )


_database: Database | None = None


def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """EventBridge's scheduled event; its `time` is when the run was due, which a retried run keeps."""
    global _database
    configure_logging(os.environ.get("LOG_LEVEL", "INFO"))
    settings = load_settings(AnalyticsSettings)
    _database = _database or connect(settings)
    due = event.get("time")
    started = time.perf_counter()
    report = run_schedule(now=datetime.fromisoformat(due) if due else None, database=_database, settings=settings)
    count_run(report, time.perf_counter() - started)
    if report.failed:
        raise ScheduleFailedError(
            "analytics steps failed (the others ran; the next run retries them): "
            + "; ".join(f"{s.label}: {s.error}" for s in report.failed)
        )
    return report.model_dump(mode="json")
