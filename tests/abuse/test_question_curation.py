"""Reports and moderators' decisions are client-written: bounded in bytes first (constant time), then in characters;
what the service sets (the version seen, resolution, figures, actor) is not the client's to write."""

from __future__ import annotations

import uuid
from typing import Any

import psycopg
import pytest

from shared.db.rls import acting_as
from tests.abuse.attempts import as_user, refusal, timed_refusal
from tests.curation.bank import add_question, serve
from tests.support.identities import sign_up, user_claims

REFUSED_WITHIN_SECONDS = 1.0
MEGABYTES = "".join(chr(0x4E00 + i % 20000) for i in range(700_000))  # ~2 MB of UTF-8, not compressible to 4 kB

REPORT = "insert into public.question_reports (user_id, question_id, reason, details) values (%s, %s, 'wrong', %s)"


@pytest.fixture
def served(db: psycopg.Connection) -> tuple[uuid.UUID, uuid.UUID]:
    user, question = sign_up(db), add_question(db)
    serve(db, user, question)
    return user, question


def test_a_report_of_megabytes_is_refused_fast_by_size(
    db: psycopg.Connection, served: tuple[uuid.UUID, uuid.UUID]
) -> None:
    user, question = served
    error, seconds = timed_refusal(db, user, REPORT, user, question, MEGABYTES)
    assert error.sqlstate == "PT413", error
    assert "details is" in error.diag.message_primary
    assert seconds < REFUSED_WITHIN_SECONDS


def test_a_report_just_over_1000_characters_is_refused(
    db: psycopg.Connection, served: tuple[uuid.UUID, uuid.UUID]
) -> None:
    user, question = served
    error = refusal(db, user, REPORT, user, question, "é" * 1001)
    assert isinstance(error, psycopg.errors.CheckViolation), error
    assert as_user(db, user, REPORT + " returning question_version", user, question, "é" * 1000) == 1


@pytest.mark.parametrize("column", ["question_version", "resolved_at", "created_at"])
def test_a_reporter_cannot_write_what_the_service_sets(
    db: psycopg.Connection, served: tuple[uuid.UUID, uuid.UUID], column: str
) -> None:
    user, question = served
    value: Any = 7 if column == "question_version" else "2020-01-01T00:00:00Z"
    error = refusal(
        db, user,
        f"insert into public.question_reports (user_id, question_id, reason, {column}) values (%s, %s, 'wrong', %s)",
        user, question, value,
    )  # fmt: skip
    assert isinstance(error, psycopg.errors.InsufficientPrivilege), error


@pytest.mark.parametrize("column", ["reason", "content"])
def test_a_moderators_decision_of_megabytes_is_refused_fast_by_size(db: psycopg.Connection, column: str) -> None:
    moderator = sign_up(db, app_metadata={"role": "moderator"})
    claims = user_claims(moderator, app_metadata={"role": "moderator"})
    values = {"reason": "fine", "content": None, column: MEGABYTES}
    question = add_question(db)
    with pytest.raises(psycopg.Error) as caught, acting_as(db, claims):
        db.execute(
            "insert into public.question_transitions (question_id, to_status, reason, content)"
            " values (%s, 'active', %s, %s)",
            (question, values["reason"], values["content"]),
        )
    assert caught.value.sqlstate == "PT413", caught.value


@pytest.mark.parametrize("column", ["figures", "actor", "moderator_id", "from_status", "version"])
def test_a_moderator_cannot_write_the_evidence_or_who_decided(db: psycopg.Connection, column: str) -> None:
    moderator = sign_up(db, app_metadata={"role": "moderator"})
    value = {"figures": "{}", "actor": "curation", "moderator_id": str(uuid.uuid4()), "from_status": "active",
             "version": 9}[column]  # fmt: skip
    question = add_question(db)
    with (
        pytest.raises(psycopg.errors.InsufficientPrivilege, match="permission denied for table"),
        acting_as(db, user_claims(moderator, app_metadata={"role": "moderator"})),
    ):
        db.execute(
            f"insert into public.question_transitions (question_id, to_status, reason, {column})"
            " values (%s, 'active', 'ok', %s)",
            (question, value),
        )
