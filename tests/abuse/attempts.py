"""Helpers shared by the abuse tests: act as a user, catch the refusal, time it, open a session to answer in."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import psycopg
import pytest

from shared.db.rls import acting_as
from tests.support.identities import user_claims


def _arguments(params: tuple[object, ...]) -> Sequence[object] | Mapping[str, object]:
    """Positional parameters, or one mapping for a statement with named placeholders."""
    return params[0] if len(params) == 1 and isinstance(params[0], Mapping) else params


def as_user(db: psycopg.Connection, user: uuid.UUID, statement: str, *params: object) -> object:
    """Run `statement` as the signed-in user; return the first column of its first row (None if no row)."""
    with acting_as(db, user_claims(user)):
        row = db.execute(statement, _arguments(params)).fetchone()  # type: ignore[arg-type]
    return row[0] if row else None


def refusal(db: psycopg.Connection, user: uuid.UUID, statement: str, *params: object) -> psycopg.Error:
    """Run `statement` as the user and return the error it raised (the test fails if it succeeded)."""
    with pytest.raises(psycopg.Error) as caught, acting_as(db, user_claims(user)):
        db.execute(statement, _arguments(params))  # type: ignore[arg-type]
    return caught.value


@dataclass
class Elapsed:
    seconds: float = float("nan")


@contextmanager
def stopwatch() -> Iterator[Elapsed]:
    """Time the block, also when it raises (the refusal is what is being timed)."""
    elapsed = Elapsed()
    started = time.perf_counter()
    try:
        yield elapsed
    finally:
        elapsed.seconds = time.perf_counter() - started


def timed_refusal(
    db: psycopg.Connection, user: uuid.UUID, statement: str, *params: object
) -> tuple[psycopg.Error, float]:
    """Like `refusal`, with the seconds the statement itself took."""
    with pytest.raises(psycopg.Error) as caught, acting_as(db, user_claims(user)), stopwatch() as elapsed:
        db.execute(statement, _arguments(params))  # type: ignore[arg-type]
    return caught.value, elapsed.seconds


@dataclass(frozen=True)
class OpenSession:
    session_id: uuid.UUID
    session_question_id: uuid.UUID
    question_id: uuid.UUID


def open_session(db: psycopg.Connection, user: uuid.UUID) -> OpenSession:
    """A quick session started for `user` (as the service would), with the first question it served."""
    session_id = db.execute(
        "insert into public.practice_sessions (user_id, session_type) values (%s, 'quick') returning id", (user,)
    ).fetchone()[0]
    served, question = db.execute(
        "select id, question_id from public.session_questions where session_id = %s order by position limit 1",
        (session_id,),
    ).fetchone()
    return OpenSession(session_id, served, question)


def sqlstate_and_message(error: psycopg.Error) -> tuple[str | None, str]:
    return error.sqlstate, error.diag.message_primary or str(error)
