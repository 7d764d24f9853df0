"""What a signed-in user may read: a question's public face, its answer key once answered, and nothing that
tells them about other users (their generation requests, their provisional questions, their response ids)."""

from __future__ import annotations

import re
import uuid

import psycopg
import pytest

from shared.db.rls import acting_as
from tests.abuse.attempts import open_session, refusal
from tests.support.dataset import UserData, populate_user
from tests.support.identities import sign_up, user_claims

PUBLIC_QUESTION_COLUMNS = (
    "id, content, category, difficulty, experience_level, target_role, tags, source, is_active, usage_count,"
    " rating_avg, rating_count, created_at, updated_at"
)


@pytest.fixture
def me(db: psycopg.Connection) -> UserData:
    return populate_user(db)


def rows_as(db: psycopg.Connection, user: uuid.UUID, statement: str, *params: object) -> list[tuple]:
    with acting_as(db, user_claims(user)):
        return db.execute(statement, params).fetchall()  # type: ignore[arg-type]


# Questions ---------------------------------------------------------------------------------------------------


def test_reading_another_users_generation_request_is_refused(db: psycopg.Connection, me: UserData) -> None:
    # generation_metadata holds the request that caused an AI question: another user's role, tags, wording.
    error = refusal(db, me.user_id, "select generation_metadata from public.questions limit 1")
    assert isinstance(error, psycopg.errors.InsufficientPrivilege)
    assert "permission denied" in str(error)


def test_select_star_from_questions_is_refused_but_the_public_face_is_readable(
    db: psycopg.Connection, me: UserData
) -> None:
    error = refusal(db, me.user_id, "select * from public.questions limit 1")
    assert isinstance(error, psycopg.errors.InsufficientPrivilege)
    assert "permission denied" in str(error)
    rows = rows_as(db, me.user_id, f"select {PUBLIC_QUESTION_COLUMNS} from public.questions where id = %s",
                   me.question_id)  # fmt: skip
    assert [row[0] for row in rows] == [me.question_id]


def test_another_users_provisional_question_is_invisible(db: psycopg.Connection, me: UserData) -> None:
    owner = sign_up(db)
    provisional = db.execute(
        "insert into public.questions (content, category, difficulty, experience_level, source, provisional_for)"
        " values (%s, 'behavioral', 'easy', 'entry', 'ai', %s) returning id",
        (f"Describe a time you shipped under pressure ({uuid.uuid4().hex[:8]}).", owner),
    ).fetchone()[0]
    visible = "select id from public.questions where id = %s"
    assert rows_as(db, me.user_id, visible, provisional) == []
    assert rows_as(db, owner, visible, provisional) == [(provisional,)]


# Answer keys -------------------------------------------------------------------------------------------------


def test_reading_the_answer_key_before_answering_is_refused(db: psycopg.Connection) -> None:
    user = sign_up(db)
    session = open_session(db, user)
    has_key = "select count(*) from public.question_answer_keys where question_id = %s"
    assert db.execute(has_key, (session.question_id,)).fetchone()[0] == 1  # the bank's question has a key

    keys = "select question_id from public.question_answer_keys where question_id = %s"
    assert rows_as(db, user, keys, session.question_id) == []
    assert rows_as(db, user, "select question_id from public.question_answer_keys") == []

    db.execute(
        "insert into public.responses (session_id, session_question_id, user_id, answer_text)"
        " values (%s, %s, %s, 'My answer.')",
        (session.session_id, session.session_question_id, user),
    )
    assert rows_as(db, user, keys, session.question_id) == [(session.question_id,)]
    assert rows_as(db, user, "select question_id from public.question_answer_keys") == [(session.question_id,)]


# Response ids ------------------------------------------------------------------------------------------------


def evaluation_refusal(db: psycopg.Connection, user: uuid.UUID, response: uuid.UUID) -> psycopg.Error:
    with pytest.raises(psycopg.Error) as caught, db.transaction():
        db.execute("select service.request_evaluation(%s, %s)", (user, response))
    return caught.value


def test_probing_someone_elses_response_id_answers_as_a_missing_one(db: psycopg.Connection, me: UserData) -> None:
    someone = populate_user(db)
    theirs = evaluation_refusal(db, me.user_id, someone.response_id)
    missing = evaluation_refusal(db, me.user_id, uuid.uuid4())

    def shape(error: psycopg.Error) -> tuple[str | None, str, str | None]:
        message = re.sub(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", "<id>",
                         error.diag.message_primary or "")  # fmt: skip
        return error.sqlstate, message, error.diag.message_hint

    assert shape(theirs) == ("PT404", "no response <id> of yours", None)
    assert shape(theirs) == shape(missing)
    assert str(someone.response_id) in theirs.diag.message_primary
