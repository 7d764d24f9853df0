"""Questions, answerers and the curation step, written as the service (the migrating superuser) would."""

from __future__ import annotations

import uuid
from typing import Any

import psycopg

from tests.support.dataset import NEXT_POSITION
from tests.support.identities import sign_up


def add_question(
    db: psycopg.Connection,
    *,
    content: str | None = None,
    category: str = "technical",
    difficulty: str = "medium",
    provisional_for: uuid.UUID | None = None,
) -> uuid.UUID:
    return db.execute(
        "insert into public.questions (content, category, difficulty, experience_level, source, provisional_for)"
        " values (%s, %s, %s, 'mid', 'ai', %s) returning id",
        (content or f"How would you shard a queue of {uuid.uuid4().hex}?", category, difficulty, provisional_for),
    ).fetchone()[0]


def serve(db: psycopg.Connection, user: uuid.UUID, question: uuid.UUID) -> tuple[uuid.UUID, uuid.UUID]:
    """Serve `question` to `user` in their open session (started if needed); return (session, served row)."""
    row = db.execute(
        "select id from public.practice_sessions where user_id = %s and status = 'in_progress' limit 1", (user,)
    ).fetchone()
    session = (
        row[0]
        if row
        else db.execute(
            "insert into public.practice_sessions (user_id, session_type) values (%s, 'quick') returning id", (user,)
        ).fetchone()[0]
    )
    served = db.execute(
        "insert into public.session_questions (session_id, user_id, question_id, position)"
        f" values (%s, %s, %s, {NEXT_POSITION}) returning id",
        (session, user, question, session),
    ).fetchone()[0]
    return session, served


def answer(db: psycopg.Connection, user: uuid.UUID, question: uuid.UUID, score: float) -> uuid.UUID:
    """Serve, answer and evaluate: an answer scored `score` (0-100), evaluated now."""
    session, served = serve(db, user, question)
    return db.execute(
        "insert into public.responses (session_id, session_question_id, user_id, answer_text, evaluation_status,"
        " ai_score, evaluated_at) values (%s, %s, %s, 'An answer', 'completed', %s, now()) returning id",
        (session, served, user, score),
    ).fetchone()[0]


def answerers(
    db: psycopg.Connection, question: uuid.UUID, scores: list[float], abilities: list[float] | None = None
) -> list[uuid.UUID]:
    """One new user per score, each with an overall mean (their ability: `abilities`, else their score)."""
    users = []
    for score, ability in zip(scores, abilities or scores, strict=True):
        user = sign_up(db)
        db.execute(
            "insert into public.progress_totals (user_id, scored_answers, score_sum) values (%s, 1, %s)",
            (user, ability),
        )
        answer(db, user, question, score)
        users.append(user)
    return users


def curate(db: psycopg.Connection) -> dict[str, Any]:
    """The scheduled step, past the 5 minutes it leaves evaluations still committing."""
    return db.execute("select service.curate_questions(now() + interval '10 minutes')").fetchone()[0]


def status(db: psycopg.Connection, question: uuid.UUID) -> tuple[str, bool]:
    return db.execute("select status::text, is_active from public.questions where id = %s", (question,)).fetchone()


def transitions(db: psycopg.Connection, question: uuid.UUID) -> list[tuple[Any, ...]]:
    """(from, to, reason, actor, figures) of every transition of the question, in order."""
    return db.execute(
        "select from_status::text, to_status::text, reason, actor, figures from public.question_transitions"
        " where question_id = %s order by id",
        (question,),
    ).fetchall()
