"""Moderators (JWT app_metadata.role = 'moderator') review the queue and decide through PostgREST under RLS; a
moderator claim in user_metadata (which users write themselves) grants nothing. Reports: once, own only."""

from __future__ import annotations

import uuid
from typing import Any

import psycopg
import pytest

from shared.db.rls import acting_as
from tests.curation.bank import add_question, curate, serve, status, transitions
from tests.support.identities import sign_up, user_claims


@pytest.fixture
def moderator(db: psycopg.Connection) -> dict[str, Any]:
    return user_claims(sign_up(db, app_metadata={"role": "moderator"}), app_metadata={"role": "moderator"})


@pytest.fixture
def pretender(db: psycopg.Connection) -> dict[str, Any]:
    """Claims to be a moderator where users write what they like."""
    user = sign_up(db, user_metadata={"role": "moderator"})
    return user_claims(user, user_metadata={"role": "moderator"})


@pytest.fixture
def flagged(db: psycopg.Connection) -> uuid.UUID:
    """A question three users reported as wrong, sent to review by the curation step."""
    question = add_question(db, content="What does HTTP status 418 mean in production systems?")
    for _ in range(3):
        reporter = sign_up(db)
        serve(db, reporter, question)
        db.execute(
            "insert into public.question_reports (user_id, question_id, reason, details) values (%s, %s, 'wrong', %s)",
            (reporter, question, "It is a joke status"),
        )
    curate(db)
    assert status(db, question) == ("under_review", False)
    return question


def decide(
    db: psycopg.Connection, claims: dict[str, Any], question: uuid.UUID, to: str, reason: str, **more: Any
) -> tuple[Any, ...]:
    """Insert a transition as `claims`, as a client does through PostgREST; (from, to, version, actor)."""
    columns = {"question_id": question, "to_status": to, "reason": reason, **more}
    with acting_as(db, claims):
        return db.execute(
            f"insert into public.question_transitions ({', '.join(columns)})"
            f" values ({', '.join(['%s'] * len(columns))})"
            " returning from_status::text, to_status::text, version, actor",
            list(columns.values()),
        ).fetchone()


def test_a_moderator_reads_the_queue_reports_and_history_a_pretender_reads_nothing(
    db: psycopg.Connection, moderator: dict[str, Any], pretender: dict[str, Any], flagged: uuid.UUID
) -> None:
    reads = (
        "select count(*) from public.question_review_queue where id = %s",
        "select count(*) from public.questions where id = %s",
        "select count(*) from public.question_reports where question_id = %s",
        "select count(*) from public.question_transitions where question_id = %s",
        "select count(*) from public.question_versions where question_id = %s",
    )
    for claims, expected in ((moderator, [1, 1, 3, 1, 1]), (pretender, [0, 0, 0, 0, 0])):
        with acting_as(db, claims):
            assert [db.execute(q, (flagged,)).fetchone()[0] for q in reads] == expected  # type: ignore[arg-type]
    with acting_as(db, moderator):
        reason, open_reports = db.execute(
            "select reason, open_reports from public.question_review_queue where id = %s", (flagged,)
        ).fetchone()
    assert (reason, open_reports) == ("reported", 3)


def test_a_pretender_and_a_plain_user_cannot_decide(
    db: psycopg.Connection, pretender: dict[str, Any], flagged: uuid.UUID
) -> None:
    for claims in (pretender, user_claims(sign_up(db))):
        with pytest.raises(psycopg.errors.InsufficientPrivilege), db.transaction():
            decide(db, claims, flagged, "active", "looks fine to me")
    assert status(db, flagged) == ("under_review", False)
    assert len(transitions(db, flagged)) == 1


def test_a_moderator_approves_and_the_reports_are_resolved(
    db: psycopg.Connection, moderator: dict[str, Any], flagged: uuid.UUID
) -> None:
    assert decide(db, moderator, flagged, "active", "418 is a fair trivia question") == (
        "under_review", "active", 1, "moderator"
    )  # fmt: skip
    assert status(db, flagged) == ("active", True)
    assert db.execute(
        "select count(*) from public.question_reports where question_id = %s and resolved_at is null", (flagged,)
    ).fetchone() == (0,)
    who = db.execute(
        "select moderator_id::text, figures from public.question_transitions where question_id = %s order by id desc"
        " limit 1",
        (flagged,),
    ).fetchone()
    assert who == (moderator["sub"], {})
    curate(db)  # the heard reports no longer count
    assert status(db, flagged) == ("active", True)


def test_a_moderator_edit_makes_a_new_version_and_a_retirement_needs_a_reason(
    db: psycopg.Connection, moderator: dict[str, Any], flagged: uuid.UUID
) -> None:
    better = "What does HTTP status 429 mean, and how should a client react to it?"
    assert decide(db, moderator, flagged, "active", "rewritten", content=better) == (
        "under_review", "active", 2, "moderator"
    )  # fmt: skip
    assert db.execute(
        "select version, content from public.question_versions where question_id = %s order by version", (flagged,)
    ).fetchall() == [(1, "What does HTTP status 418 mean in production systems?"), (2, better)]
    with pytest.raises(psycopg.errors.CheckViolation), db.transaction():
        decide(db, moderator, flagged, "retired", "")
    assert decide(db, moderator, flagged, "retired", "duplicate of the 429 question")[:2] == ("active", "retired")
    assert status(db, flagged) == ("retired", False)


def test_a_moderator_cannot_forge_the_figures_or_make_a_question_provisional(
    db: psycopg.Connection, moderator: dict[str, Any], flagged: uuid.UUID
) -> None:
    with pytest.raises(psycopg.errors.InsufficientPrivilege), db.transaction():
        decide(db, moderator, flagged, "active", "ok", figures='{"mean_score": 99}')
    with pytest.raises(psycopg.Error, match="cannot be made provisional"), db.transaction():
        decide(db, moderator, flagged, "provisional", "try again")


def test_a_user_reports_a_served_question_once_and_reads_only_their_own(db: psycopg.Connection) -> None:
    me, other = sign_up(db), sign_up(db)
    served, unserved = add_question(db), add_question(db)
    serve(db, me, served)
    serve(db, other, served)
    insert = "insert into public.question_reports (user_id, question_id, reason, details) values (%s, %s, %s, %s)"
    with acting_as(db, user_claims(me)):
        db.execute(insert, (me, served, "unclear", "Which system?"))
    with pytest.raises(psycopg.errors.UniqueViolation), acting_as(db, user_claims(me)):
        db.execute(insert, (me, served, "wrong", "again"))
    with (
        pytest.raises(psycopg.errors.InsufficientPrivilege, match="row-level security"),
        acting_as(db, user_claims(me)),
    ):
        db.execute(insert, (me, unserved, "wrong", None))
    with acting_as(db, user_claims(other)):
        assert db.execute("select count(*) from public.question_reports").fetchone() == (0,)
    with acting_as(db, user_claims(me)):
        assert db.execute("select reason::text, question_version from public.question_reports").fetchall() == [
            ("unclear", 1)
        ]
