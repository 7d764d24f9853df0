"""Scored answers written as they would have happened, at given times, for the calibration to read."""

from __future__ import annotations

import uuid
from datetime import datetime

import psycopg

from tests.support.dataset import NEXT_POSITION, make_month


def question(db: psycopg.Connection, category: str, difficulty: str, level: str = "mid") -> uuid.UUID:
    """A question of the shared bank (`ai` source, already admitted), apart from the curated ones."""
    return db.execute(
        "insert into public.questions (content, category, difficulty, experience_level, source)"
        " values (%s, %s, %s, %s, 'ai') returning id",
        (f"Tell me about {uuid.uuid4().hex} and what you learned.", category, difficulty, level),
    ).fetchone()[0]


def scored_answer(db: psycopg.Connection, user: uuid.UUID, question_id: uuid.UUID, score: float, at: datetime) -> None:
    """`user` is served `question_id` and answers it at `at`, scored `score` at the same moment. The session's own
    first question is a problem_solving one, a category these tests never calibrate."""
    session = db.execute(
        "insert into public.practice_sessions (user_id, session_type, config)"
        ' values (%s, \'quick\', \'{"category": "problem_solving", "count": 1}\') returning id',
        (user,),
    ).fetchone()[0]
    served = db.execute(
        f"insert into public.session_questions (session_id, user_id, question_id, position)"
        f" values (%s, %s, %s, {NEXT_POSITION}) returning id",
        (session, user, question_id, session),
    ).fetchone()[0]
    make_month(db, at)
    db.execute(
        "insert into public.responses (session_id, session_question_id, user_id, answer_text, created_at)"
        " values (%s, %s, %s, 'my answer', %s)",
        (session, served, user, at),
    )
    db.execute(
        "update public.responses set evaluation_status = 'completed', ai_score = %s, evaluated_at = %s"
        " where session_question_id = %s",
        (score, at, served),
    )


def calibrate(db: psycopg.Connection, as_of: datetime) -> dict:
    return db.execute("select service.calibrate_answers(%s)", (as_of,)).fetchone()[0]
