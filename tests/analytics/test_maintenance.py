"""service.run_maintenance: stale sessions, stuck evaluations, purges, materialized views (its months ahead:
tests/database/test_partitions.py; archiving answers: test_retention.py)."""

from __future__ import annotations

import psycopg

from tests.analytics.history import practise, practitioner
from tests.support.dataset import add_question

NOW = "2026-06-01 12:00+00"


def maintain(conn: psycopg.Connection, as_of: str = NOW, **policy: int) -> dict:
    return conn.execute(
        "select service.run_maintenance(%s, %s::jsonb)", (as_of, psycopg.types.json.Jsonb(policy))
    ).fetchone()[0]


def status(conn: psycopg.Connection, session: object) -> str:
    return conn.execute("select status from public.practice_sessions where id = %s", (session,)).fetchone()[0]


def test_sessions_left_in_progress_for_a_day_are_abandoned(db: psycopg.Connection) -> None:
    user = practitioner(db)
    stale = practise(db, user, "2026-05-31 11:00+00", [None], completed=False)
    recent = practise(db, user, "2026-06-01 09:00+00", [None], completed=False, category="technical")
    finished = practise(db, user, "2026-05-20 09:00+00", [70], category="leadership")

    result = maintain(db)

    assert result["sessions_abandoned"] == 1
    assert (status(db, stale), status(db, recent), status(db, finished)) == ("abandoned", "in_progress", "completed")
    assert maintain(db)["sessions_abandoned"] == 0


def test_a_timed_session_is_abandoned_an_hour_after_its_limit_not_before(db: psycopg.Connection) -> None:
    user = practitioner(db)
    session = practise(db, user, "2026-05-30 12:00+00", [None], completed=False)
    db.execute("update public.practice_sessions set time_limit_seconds = 72 * 3600 where id = %s", (session,))
    assert maintain(db)["sessions_abandoned"] == 0  # 48 h in, limit 72 h
    assert maintain(db, "2026-06-02 12:30+00")["sessions_abandoned"] == 0  # 72.5 h in: within the hour of grace
    assert maintain(db, "2026-06-02 13:30+00")["sessions_abandoned"] == 1  # 73.5 h in


def test_evaluations_stuck_for_two_hours_fail_with_a_reason_and_a_refund(db: psycopg.Connection) -> None:
    user = practitioner(db)
    session = practise(db, user, "2026-06-01 09:00+00", [None, None], completed=False)
    stuck, fresh = db.execute(
        "select id from public.responses where session_id = %s order by created_at, id", (session,)
    ).fetchall()
    for response, state, requested in (
        (stuck, "processing", "2026-06-01 09:30+00"),
        (fresh, "queued", "2026-06-01 10:30+00"),
    ):
        db.execute(
            "update public.responses set evaluation_status = %s, evaluation_requested_at = %s where id = %s",
            (state, requested, response[0]),
        )
    db.execute(
        "insert into public.usage_counters (user_id, metric, period_start, used)"
        " values (%s, 'evaluations', (now() at time zone 'utc')::date, 2)",
        (user,),
    )

    result = maintain(db)

    assert result["evaluations_failed"] == 1
    rows = dict(
        db.execute(
            "select id, (evaluation_status, evaluation_error) from public.responses where session_id = %s", (session,)
        ).fetchall()
    )
    assert rows[stuck[0]] == ("failed", "the evaluation did not finish in time; ask for it again (it was not counted)")
    assert rows[fresh[0]][0] == "queued"
    assert (
        db.execute(
            "select used from public.usage_counters where user_id = %s and metric = 'evaluations'", (user,)
        ).fetchone()[0]
        == 1
    )


def test_old_stripe_events_counters_and_leases_are_purged(db: psycopg.Connection) -> None:
    user = practitioner(db)
    for event, at in (("evt_old", "2026-02-01 00:00+00"), ("evt_recent", "2026-05-20 00:00+00")):
        db.execute(
            "insert into private.stripe_events (id, type, stripe_created_at, livemode, outcome, payload, created_at)"
            " values (%s, 'invoice.paid', %s, false, 'applied', '{}', %s)",
            (event, at, at),
        )
    db.execute(
        "insert into public.usage_counters (user_id, metric, period_start, used) values"
        " (%s, 'question_requests', '2026-01-15', 3), (%s, 'question_requests', '2026-05-30', 1)",
        (user, user),
    )
    db.execute(
        "insert into private.generation_leases (bucket_key, holder, expires_at) values"
        " ('expired', gen_random_uuid(), '2026-06-01 11:00+00'), ('held', gen_random_uuid(), '2026-06-01 12:05+00')"
    )

    result = maintain(db)

    assert (result["stripe_events_purged"], result["usage_counters_purged"], result["generation_leases_purged"]) == (
        1,
        1,
        1,
    )
    assert [r[0] for r in db.execute("select id from private.stripe_events where id like 'evt_%'")] == ["evt_recent"]
    assert [r[0] for r in db.execute("select bucket_key from private.generation_leases")] == ["held"]


def test_materialized_views_are_refreshed(db: psycopg.Connection) -> None:
    def stock() -> int:
        return db.execute(
            "select questions from private.question_bank_stock"
            " where category = 'behavioral' and difficulty = 'easy' and experience_level = 'entry'"
        ).fetchone()[0]

    maintain(db)  # the view is as of the last run: the migration made it before the seed filled the bank
    before = stock()
    add_question(db)
    assert stock() == before
    assert maintain(db)["materialized_views_refreshed"] >= 1
    assert stock() == before + 1
