"""Practice history written as it would have happened: sessions started, answered, scored and ended at given
times (the clock is frozen by giving every timestamp explicitly)."""

from __future__ import annotations

import uuid
from collections.abc import Sequence

import psycopg
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from tests.support.dataset import make_month
from tests.support.identities import give_paid_plan, sign_up

CATEGORIES = ("behavioral", "technical", "situational", "leadership", "problem_solving", "culture_fit")
DIFFICULTIES = ("easy", "medium", "hard")


def practitioner(conn: psycopg.Connection, timezone: str = "UTC") -> uuid.UUID:
    """A paid user (mock interviews included) with a profile in `timezone`, free of daily limits."""
    user = sign_up(conn)
    give_paid_plan(conn, user)
    conn.execute("insert into public.user_profiles (user_id, timezone) values (%s, %s)", (user, timezone))
    conn.execute("update public.plans set usage_limits.practice_sessions = 10000")
    return user


def practise(
    conn: psycopg.Connection,
    user: uuid.UUID,
    at: str,
    scores: Sequence[float | None],
    *,
    category: str = "behavioral",
    difficulty: str = "medium",
    session_type: str = "custom",
    completed: bool = True,
    scored_at: str | None = None,
) -> uuid.UUID:
    """A session at `at` answering len(scores) questions (None: answered, not scored yet), scored at
    `scored_at` (default `at`), completed at `at`."""
    config = {"category": category, "difficulty": difficulty, "count": len(scores)}
    session = conn.execute(
        "insert into public.practice_sessions (user_id, session_type, config) values (%s, %s, %s) returning id",
        (user, session_type, Jsonb(config)),
    ).fetchone()[0]
    conn.execute("update public.practice_sessions set started_at = %s where id = %s", (at, session))
    served = conn.execute(
        "select id from public.session_questions where session_id = %s order by position limit %s",
        (session, len(scores)),
    ).fetchall()
    assert len(served) == len(scores), "the bank ran out of questions for this history"
    make_month(conn, at)
    for (session_question,), score in zip(served, scores, strict=True):
        conn.execute(
            "insert into public.responses (session_id, session_question_id, user_id, answer_text, created_at)"
            " values (%s, %s, %s, 'my answer', %s)",
            (session, session_question, user, at),
        )
        if score is not None:
            score_answer(conn, session_question, score, scored_at or at)
    if completed:
        conn.execute("update public.practice_sessions set status = 'completed' where id = %s", (session,))
        conn.execute("update public.practice_sessions set ended_at = %s where id = %s", (at, session))
    return session


def score_answer(conn: psycopg.Connection, session_question: uuid.UUID, score: float, at: str) -> None:
    conn.execute(
        "update public.responses set evaluation_status = 'completed', ai_score = %s, evaluated_at = %s"
        " where session_question_id = %s",
        (score, at, session_question),
    )
    conn.execute(
        "select private.refresh_session_score(session_id) from public.session_questions where id = %s",
        (session_question,),
    )


def aggregate(conn: psycopg.Connection, day: str) -> dict:
    return conn.execute("select service.aggregate_user_day(%s)", (day,)).fetchone()[0]


def all_time(conn: psycopg.Connection, user: uuid.UUID) -> dict | None:
    """The user's all-time figures: their progress_totals row."""
    return (
        conn.cursor(row_factory=dict_row)
        .execute("select * from public.progress_totals where user_id = %s", (user,))
        .fetchone()
    )


def streak(conn: psycopg.Connection, user: uuid.UUID) -> dict:
    """The stored runs: {latest_run, longest, last_active_day (ISO)}."""
    figures = all_time(conn, user)
    assert figures is not None, "no all-time figures"
    last = figures["last_active_day"]
    return {
        "latest_run": figures["latest_run"],
        "longest": figures["longest_streak"],
        "last_active_day": last and last.isoformat(),
    }


def days(conn: psycopg.Connection, user: uuid.UUID) -> dict[str, tuple[float, dict]]:
    """The user's day rows: {local day: (questions answered, details)}."""
    rows = conn.execute(
        "select period_start::text, metric_value, details from public.user_progress"
        " where user_id = %s and metric_name = 'practice' and period = 'day'",
        (user,),
    ).fetchall()
    return {day: (float(value), details) for day, value, details in rows}


def achievements(conn: psycopg.Connection, user: uuid.UUID) -> dict[str, dict]:
    rows = conn.execute(
        "select achievement_type, metadata from public.achievements where user_id = %s", (user,)
    ).fetchall()
    return dict(rows)
