"""Achievements: every catalog entry can be earned, each is awarded exactly once, concurrent runs included."""

from __future__ import annotations

import threading
from datetime import date, timedelta

import psycopg
import pytest

from shared.db.rls import acting_as
from tests.analytics.history import (
    CATEGORIES,
    DIFFICULTIES,
    achievements,
    aggregate,
    all_time,
    practise,
    practitioner,
)
from tests.support.identities import ANON, user_claims

START = date(2026, 1, 1)


def devoted_history(conn: psycopg.Connection) -> tuple:
    """50 sessions over 30 consecutive days (every category, 2 answers each), one perfect answer, a mock
    interview, and the last 10 sessions improving from 50 to 70."""
    user = practitioner(conn, "Europe/Paris")
    for n in range(50):
        day = START + timedelta(days=min(n, 29))
        score = 100 if n == 3 else (50 if n < 45 else 70)
        practise(
            conn,
            user,
            f"{day} 09:{n:02d}+00",
            [score, score],
            category=CATEGORIES[n % 6],
            difficulty=DIFFICULTIES[(n // 6) % 3],
        )
    practise(conn, user, f"{START + timedelta(days=29)} 18:00+00", [None], session_type="mock_interview")
    return user, [START + timedelta(days=n) for n in range(30)]


def test_a_devoted_user_earns_every_achievement_in_the_catalog_once(db: psycopg.Connection) -> None:
    user, days = devoted_history(db)
    for day in days:
        aggregate(db, day.isoformat())

    earned = achievements(db, user)
    catalog = {row[0] for row in db.execute("select achievement_type from public.achievement_catalog")}
    assert set(earned) == catalog
    assert earned["sessions_50"] == {"sessions_completed": 51}  # the 50th and the mock interview share a day
    assert earned["streak_30"] == {"longest_streak": 30}
    assert earned["perfect_score"] == {"best_score": 100}
    assert earned["improvement"] == {"improvement": 20}  # the last 5 sessions average 70, the 5 before 50
    assert earned["all_categories"] == {"categories_scored": len(CATEGORIES)}
    assert all_time(db, user)["longest_streak"] == 30

    # Running every day again awards nothing new and keeps the first award's time.
    awarded_at = dict(
        db.execute(
            "select achievement_type, awarded_at from public.achievements where user_id = %s", (user,)
        ).fetchall()
    )
    again = [aggregate(db, day.isoformat())["achievements_awarded"] for day in days]
    assert again == [0] * len(days)
    assert (
        dict(
            db.execute(
                "select achievement_type, awarded_at from public.achievements where user_id = %s", (user,)
            ).fetchall()
        )
        == awarded_at
    )


def test_no_achievement_before_it_is_earned(db: psycopg.Connection) -> None:
    user = practitioner(db)
    practise(db, user, "2026-03-10 10:00+00", [40, 60])
    aggregate(db, "2026-03-10")
    assert set(achievements(db, user)) == {"first_session"}


def test_concurrent_runs_award_each_achievement_once(database_url: str) -> None:
    with psycopg.connect(database_url, autocommit=True) as conn:
        user = practitioner(conn)
        for day, score in (("2026-05-01", 60), ("2026-05-02", 70), ("2026-05-03", 100)):
            practise(conn, user, f"{day} 10:00+00", [score])
        # The earlier days are aggregated already (first_session); the 3rd brings a streak of 3 and a 100.
        for day in ("2026-05-01", "2026-05-02"):
            aggregate(conn, day)
    errors: list[BaseException] = []
    barrier = threading.Barrier(6)

    def run() -> None:
        try:
            with psycopg.connect(database_url, autocommit=True) as conn:
                barrier.wait()
                aggregate(conn, "2026-05-03")
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=run) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert errors == []
    with psycopg.connect(database_url) as conn:
        rows = conn.execute(
            "select achievement_type, count(*) from public.achievements where user_id = %s group by 1", (user,)
        ).fetchall()
    assert dict(rows) == {"first_session": 1, "streak_3": 1, "perfect_score": 1}


def test_users_read_their_own_achievements_and_everyone_reads_the_catalog(db: psycopg.Connection) -> None:
    user, stranger = practitioner(db), practitioner(db)
    practise(db, user, "2026-03-10 10:00+00", [50])
    aggregate(db, "2026-03-10")
    with acting_as(db, user_claims(stranger)):
        assert db.execute("select count(*) from public.achievements where user_id = %s", (user,)).fetchone()[0] == 0
    with acting_as(db, user_claims(user)):
        assert db.execute("select achievement_type from public.achievements").fetchall() == [("first_session",)]
    with pytest.raises(psycopg.errors.InsufficientPrivilege), acting_as(db, user_claims(user)):
        db.execute("insert into public.achievements (user_id, achievement_type) values (%s, 'streak_30')", (user,))
    with acting_as(db, ANON):
        assert db.execute("select count(*) from public.achievement_catalog").fetchone()[0] == 11


FIGURES_SQL = """
select c.achievement_type
from public.progress_totals t
cross join lateral (values
  ('sessions_completed', t.sessions_completed), ('questions_answered', t.questions_answered),
  ('longest_streak', t.longest_streak), ('best_score', t.best_score),
  ('categories_scored', (select count(*) from jsonb_object_keys(t.categories))),
  ('mock_interviews', t.mock_interviews), ('improvement', t.improvement)
) f (figure, value)
join public.achievement_catalog c on c.figure = f.figure and f.value >= c.threshold
where t.user_id = %s
"""


def test_what_is_awarded_run_by_run_is_what_the_all_time_figures_have_reached(db: psycopg.Connection) -> None:
    """Awarding on crossing a threshold, day by day and with late data, ends where judging the final figures
    would: nothing missed, nothing extra (no figure here ever falls back below a threshold)."""
    users = [practitioner(db, timezone) for timezone in ("UTC", "Asia/Tokyo", "America/Los_Angeles")]
    for n in range(8):
        day = START + timedelta(days=n)
        for index, user in enumerate(users):
            if (n + index) % 3 != 2:  # gaps, so streaks break and restart
                practise(
                    db,
                    user,
                    f"{day} 10:00+00",
                    [70 + 5 * index, 100 if n == 6 else 60],
                    category=CATEGORIES[(n + index) % 6],
                    session_type="mock_interview" if n == 4 else "custom",
                )
        aggregate(db, day.isoformat())
    # A day practised late: the streak it completes is awarded when the day is aggregated again.
    late_day = START + timedelta(days=1)
    practise(db, users[1], f"{late_day} 10:00+00", [50])
    aggregate(db, late_day.isoformat())

    for user in users:
        expected = {row[0] for row in db.execute(FIGURES_SQL, (user,)).fetchall()}
        assert set(achievements(db, user)) == expected
    assert "streak_3" in achievements(db, users[1])
