"""service.aggregate_user_day: per-user progress in the user's own timezone, recomputed idempotently."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo

import psycopg
import pytest

from shared.db.rls import acting_as
from tests.analytics.history import aggregate, all_time, days, practise, practitioner, score_answer, streak
from tests.support.identities import user_claims


def test_day_rows_fall_on_the_users_local_day(db: psycopg.Connection) -> None:
    tokyo, los_angeles = practitioner(db, "Asia/Tokyo"), practitioner(db, "America/Los_Angeles")
    practise(db, tokyo, "2026-03-10 16:00+00", [70, 90])  # 01:00 on the 11th in Tokyo
    practise(db, los_angeles, "2026-03-10 03:00+00", [50])  # 20:00 on the 9th in Los Angeles

    result = aggregate(db, "2026-03-10")

    assert result["users"] == 2
    assert days(db, tokyo) == {
        "2026-03-11": (
            2.0,
            {
                "sessions_completed": 1,
                "by_type": {"custom": 1},
                "scored": 2,
                "score_sum": 160.0,
                "best": 90.0,
                "by_category": {"behavioral": {"answers": 2, "score_sum": 160.0}},
            },
        )
    }
    assert list(days(db, los_angeles)) == ["2026-03-09"]


@pytest.mark.parametrize(
    ("timezone", "late_evening", "after_midnight"),
    [
        # Both UTC times fall on one UTC day, but on two local days: a streak of 2.
        ("Asia/Tokyo", "2026-03-10 14:30+00", "2026-03-10 15:30+00"),
        ("America/Los_Angeles", "2026-03-10 06:30+00", "2026-03-10 08:30+00"),
    ],
)
def test_a_streak_counts_local_days_across_midnight(
    db: psycopg.Connection, timezone: str, late_evening: str, after_midnight: str
) -> None:
    user = practitioner(db, timezone)
    practise(db, user, late_evening, [60])
    practise(db, user, after_midnight, [60], category="technical")

    aggregate(db, "2026-03-10")

    runs = streak(db, user)
    assert (runs["latest_run"], runs["longest"]) == (2, 2)


def test_the_same_times_in_utc_are_one_local_day_and_no_streak(db: psycopg.Connection) -> None:
    user = practitioner(db, "UTC")
    practise(db, user, "2026-03-10 14:30+00", [60])
    practise(db, user, "2026-03-10 15:30+00", [60], category="technical")
    aggregate(db, "2026-03-10")
    assert streak(db, user)["latest_run"] == 1


def in_utc(local: datetime) -> str:
    return local.astimezone(UTC).isoformat()


def practise_local_days(db: psycopg.Connection, user: uuid.UUID, timezone: str, days_ago: list[int]) -> None:
    """Practice at noon, local time, on each of the given days before today (today as the database sees it)."""
    today = db.execute("select (now() at time zone %s)::date", (timezone,)).fetchone()[0]
    for back in days_ago:
        noon = datetime.combine(today - timedelta(days=back), time(12), ZoneInfo(timezone))
        practise(db, user, in_utc(noon), [60])
        aggregate(db, noon.astimezone(UTC).date().isoformat())


def streak_now(db: psycopg.Connection, user: uuid.UUID) -> tuple:
    return db.execute(
        "select current_streak, longest_streak, last_active_day from public.user_streaks where user_id = %s", (user,)
    ).fetchone()


def test_the_current_streak_is_alive_until_a_whole_local_day_passes_without_practice(db: psycopg.Connection) -> None:
    alive, ended = practitioner(db, "Asia/Tokyo"), practitioner(db, "America/Los_Angeles")
    practise_local_days(db, alive, "Asia/Tokyo", [3, 2, 1])  # up to yesterday in Tokyo: today can still continue it
    practise_local_days(db, ended, "America/Los_Angeles", [4, 3, 2])  # yesterday passed without practice

    current, longest, last_day = streak_now(db, alive)
    assert (current, longest) == (3, 3)
    assert streak(db, alive) == {"latest_run": 3, "longest": 3, "last_active_day": last_day.isoformat()}
    assert streak_now(db, ended)[:2] == (0, 3)

    # Each user reads only their own streak, computed in their own timezone.
    with acting_as(db, user_claims(alive)):
        assert db.execute("select user_id, current_streak from public.user_streaks").fetchall() == [(alive, 3)]


def test_a_late_day_joins_the_runs_around_it(db: psycopg.Connection) -> None:
    user = practitioner(db)
    for day in ("2026-03-01", "2026-03-02", "2026-03-04", "2026-03-05"):
        practise(db, user, f"{day} 10:00+00", [60])
        aggregate(db, day)
    assert streak(db, user) == {"latest_run": 2, "longest": 2, "last_active_day": "2026-03-05"}

    # An answer given on the 3rd arrives late (recorded with its own time): the runs are counted again.
    practise(db, user, "2026-03-03 10:00+00", [60])
    aggregate(db, "2026-03-03")
    assert streak(db, user) == {"latest_run": 5, "longest": 5, "last_active_day": "2026-03-05"}


def test_an_answer_scored_a_day_later_is_picked_up_by_re_aggregating_the_window(db: psycopg.Connection) -> None:
    user = practitioner(db)
    practise(db, user, "2026-03-10 22:00+00", [80, None])
    aggregate(db, "2026-03-10")
    assert all_time(db, user)["average_score"] == 80

    late = db.execute(
        "select session_question_id from public.responses where user_id = %s and ai_score is null", (user,)
    ).fetchone()[0]
    score_answer(db, late, 40, "2026-03-11 01:00+00")
    # The schedule's trailing window re-aggregates yesterday and today; the score lands on the day answered.
    aggregate(db, "2026-03-10")
    aggregate(db, "2026-03-11")

    assert days(db, user)["2026-03-10"][1]["score_sum"] == 120
    assert all_time(db, user)["average_score"] == 60


def test_an_answer_scored_days_later_is_counted_on_its_own_local_day(db: psycopg.Connection) -> None:
    user = practitioner(db, "Asia/Tokyo")
    practise(db, user, "2026-03-10 16:00+00", [80, None])  # 01:00 on the 11th in Tokyo
    aggregate(db, "2026-03-10")
    late = db.execute(
        "select session_question_id from public.responses where user_id = %s and ai_score is null", (user,)
    ).fetchone()[0]

    # Scored five days later, outside the days around the 15th, the day of the user's next practice.
    score_answer(db, late, 40, "2026-03-15 12:00+00")
    practise(db, user, "2026-03-15 12:00+00", [70], category="technical")
    aggregate(db, "2026-03-15")

    rows = days(db, user)
    assert set(rows) == {"2026-03-11", "2026-03-15"}
    answered, details = rows["2026-03-11"]
    assert answered == 2
    assert {k: details[k] for k in ("sessions_completed", "scored", "score_sum")} == {
        "sessions_completed": 1,
        "scored": 2,
        "score_sum": 120,
    }
    figures = all_time(db, user)
    assert (figures["questions_answered"], figures["scored_answers"], figures["score_sum"]) == (3, 3, 190)
    assert figures["categories"]["behavioral"]["average_score"] == 60


def test_re_aggregating_an_unchanged_day_writes_nothing_and_gives_the_same_rows(db: psycopg.Connection) -> None:
    user = practitioner(db, "Europe/Berlin")
    practise(db, user, "2026-03-10 09:00+00", [55, 75])
    practise(db, user, "2026-03-10 12:00+00", [65], category="technical")
    first = aggregate(db, "2026-03-10")
    rows = db.execute("select * from public.user_progress where user_id = %s order by id", (user,)).fetchall()
    totals = all_time(db, user)

    again = aggregate(db, "2026-03-10")

    assert (first["changed"], first["recomputed"]) == (2, 1)  # the day row and the all-time row
    assert (again["changed"], again["recomputed"]) == (0, 0)  # nothing new: no all-time row recomputed
    assert again["achievements_awarded"] == 0
    assert db.execute("select * from public.user_progress where user_id = %s order by id", (user,)).fetchall() == rows
    assert all_time(db, user) == totals


def test_all_time_totals_weakest_categories_and_trend(db: psycopg.Connection) -> None:
    user = practitioner(db)
    history = [
        ("2026-03-01", "technical", [40, 50, 45]),
        ("2026-03-02", "behavioral", [70, 80, 75]),
        ("2026-03-03", "leadership", [60, 60, 60]),
        ("2026-03-04", "technical", [55, 60, 65]),
    ]
    for day, category, scores in history:
        practise(db, user, f"{day} 10:00+00", scores, category=category)
        aggregate(db, day)

    figures = all_time(db, user)
    assert figures["questions_answered"] == 12
    assert (figures["sessions_completed"], figures["mock_interviews"]) == (4, 0)
    assert float(figures["average_score"]) == pytest.approx(sum(sum(s) for *_, s in history) / 12, abs=0.01)
    assert figures["categories"]["technical"] == {"scored_answers": 6, "score_sum": 315, "average_score": 52.5}
    assert len(figures["categories"]) == 3
    weakest = db.execute(
        "select category::text, average_score, rank from public.weakest_categories where user_id = %s order by rank",
        (user,),
    ).fetchall()
    assert weakest == [("technical", 52.5, 1), ("leadership", 60, 2), ("behavioral", 75, 3)]
    with acting_as(db, user_claims(user)):
        assert db.execute("select count(*) from public.weakest_categories").fetchone()[0] == 3
    with acting_as(db, user_claims(practitioner(db))):  # someone else sees none of it
        assert db.execute("select count(*) from public.weakest_categories").fetchone()[0] == 0
    # Session scores 45, 75, 60, 60: a least-squares slope of +3 points per session.
    assert (figures["trend_slope"], figures["recent_scores"], figures["improvement"]) == (3, [45, 75, 60, 60], None)
    assert figures["longest_streak"] == 4
    assert figures["best_score"] == 80


def test_a_day_touching_nobody_changes_nothing(db: psycopg.Connection) -> None:
    user = practitioner(db)
    practise(db, user, "2026-03-10 10:00+00", [50])
    assert aggregate(db, "2026-03-09")["users"] == 0
    assert all_time(db, user) is None


def test_all_time_sums_kept_by_differences_equal_a_recount_from_the_day_rows(db: psycopg.Connection) -> None:
    user = practitioner(db, "America/New_York")
    practise(db, user, "2026-03-01 23:30+00", [50, None], category="technical")
    practise(db, user, "2026-03-02 14:00+00", [70], session_type="mock_interview")
    practise(db, user, "2026-03-03 02:00+00", [90, 30], category="leadership")
    for day in ("2026-03-01", "2026-03-02", "2026-03-03"):
        aggregate(db, day)
    late = db.execute(
        "select session_question_id from public.responses where user_id = %s and ai_score is null", (user,)
    ).fetchone()[0]
    score_answer(db, late, 85, "2026-03-03 12:00+00")
    for day in ("2026-03-02", "2026-03-03", "2026-03-03"):  # the trailing window, run twice
        aggregate(db, day)
    kept = all_time(db, user)

    db.execute("delete from public.progress_totals where user_id = %s", (user,))
    aggregate(db, "2026-03-03")

    recounted = all_time(db, user)
    for figures in (kept, recounted):  # the row's own times differ
        del figures["created_at"], figures["updated_at"]
    assert recounted == kept
    assert kept["questions_answered"] == 5
    assert kept["scored_answers"] == 5
    assert (kept["sessions_completed"], kept["mock_interviews"]) == (3, 1)
    assert kept["categories"]["technical"]["score_sum"] == 135


def progress_of(conn: psycopg.Connection, users: list[uuid.UUID]) -> list[list[tuple]]:
    """The users' progress rows, all-time figures and achievements, comparable across runs."""
    return [
        conn.execute(query, (users,)).fetchall()
        for query in (
            "select user_id, period, period_start, metric_value, details from public.user_progress"
            " where user_id = any(%s) order by 1, 2, 3",
            "select user_id, questions_answered, sessions_completed, mock_interviews, scored_answers, score_sum,"
            " best_score, categories, latest_run, longest_streak, last_active_day,"
            " recent_scores, trend_slope, improvement from public.progress_totals where user_id = any(%s) order by 1",
            "select user_id, achievement_type, metadata from public.achievements where user_id = any(%s) order by 1, 2",
        )
    ]


def test_a_day_aggregated_in_shards_gives_the_rows_of_a_single_run(db: psycopg.Connection) -> None:
    users = [practitioner(db, zone) for zone in ("UTC", "Asia/Tokyo", "America/New_York", "Europe/Paris") * 3]
    for n, user in enumerate(users):
        practise(db, user, "2027-02-10 10:00+00", [60 + n], category=("technical", "leadership")[n % 2])
        practise(db, user, "2027-02-11 23:30+00", [70 + n, 100])
    window = ("2027-02-10", "2027-02-11", "2027-02-12")
    for day in window:
        aggregate(db, day)
    single = progress_of(db, users)
    for table in ("user_progress", "progress_totals", "achievements"):
        db.execute(f"delete from public.{table} where user_id = any(%s)", (users,))

    shards = {
        day: [db.execute("select service.aggregate_user_day(%s, %s, 3)", (day, n)).fetchone()[0] for n in range(3)]
        for day in window
    }

    assert progress_of(db, users) == single
    assert sum(shard["users"] for shard in shards["2027-02-10"]) == len(users)
    assert len([shard for shard in shards["2027-02-10"] if shard["users"]]) > 1  # 12 users do not all hash alike


@pytest.mark.parametrize(("shard", "shards"), [(2, 2), (-1, 2), (0, 0), (0, 65), (None, 2)])
def test_a_shard_that_does_not_exist_is_refused(db: psycopg.Connection, shard: int | None, shards: int) -> None:
    named = "" if shard is None else shard
    with pytest.raises(psycopg.errors.InvalidParameterValue, match=f"shard {named} of {shards} does not exist"):
        db.execute("select service.aggregate_user_day('2027-02-10', %s, %s)", (shard, shards))


def test_a_run_waits_only_for_runs_over_the_same_users(database_url: str) -> None:
    with psycopg.connect(database_url) as holder, psycopg.connect(database_url) as other:
        holder.execute("select service.aggregate_user_day('2027-03-01', 0, 2)")  # uncommitted: holds its buckets

        def run(shard: int, shards: int) -> None:
            other.execute("set local lock_timeout = '200ms'")
            try:
                other.execute("select service.aggregate_user_day('2027-03-02', %s, %s)", (shard, shards))
            finally:
                other.rollback()

        run(1, 2)  # the other half of the users: side by side
        for overlapping in ((0, 4), (2, 4), (0, 1)):  # a quarter of the held users, or all users
            with pytest.raises(psycopg.errors.LockNotAvailable):
                run(*overlapping)
        run(1, 4)  # odd buckets only
        holder.rollback()
        run(0, 1)
