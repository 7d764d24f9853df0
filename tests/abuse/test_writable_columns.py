"""What a signed-in user may write: their own columns only, their own time zone, and only what their plan has.

Timestamps and counters are the server's (column grants); ratings are of questions served to the user; every
plan feature is checked where it is used, and FEATURE_REFUSALS proves it for each flag of `public.plan_features`.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable

import psycopg
import pytest
from psycopg.types.json import Jsonb

from tests.abuse.attempts import as_user, open_session, refusal
from tests.support.dataset import NEXT_POSITION, UserData, add_question, populate_user
from tests.support.identities import sign_up


@pytest.fixture
def me(db: psycopg.Connection) -> UserData:
    return populate_user(db)


@pytest.fixture
def free_user(db: psycopg.Connection) -> uuid.UUID:
    return sign_up(db)


def serve(db: psycopg.Connection, user: UserData, question: uuid.UUID) -> uuid.UUID:
    """Serve `question` in the user's session (as the service does); return the session_questions id."""
    return db.execute(
        "insert into public.session_questions (session_id, user_id, question_id, position)"
        f" values (%s, %s, %s, {NEXT_POSITION}) returning id",
        (user.session_id, user.user_id, question, user.session_id),
    ).fetchone()[0]


# Answers ------------------------------------------------------------------------------------------------------


def test_answering_someone_elses_served_question_is_refused_and_leaves_their_answer_free(
    db: psycopg.Connection, me: UserData, free_user: uuid.UUID
) -> None:
    """The one-answer ledger (public.served_questions) is claimed by the answer's insert trigger: a stranger who
    names my served question must be refused without using up the one answer it allows."""
    served = serve(db, me, add_question(db))
    # In my session: row security refuses. In their own session: my served question is not theirs to answer there.
    for session, refused_by in (
        (me.session_id, psycopg.errors.InsufficientPrivilege),
        (open_session(db, free_user).session_id, psycopg.errors.ForeignKeyViolation),
    ):
        error = refusal(
            db, free_user,
            "insert into public.responses (session_id, session_question_id, user_id, answer_text)"
            " values (%s, %s, %s, 'x')",
            session, served, free_user,
        )  # fmt: skip
        assert isinstance(error, refused_by), error
    assert db.execute(
        "select response_id from public.served_questions where session_question_id = %s", (served,)
    ).fetchone() == (None,)
    answered = as_user(
        db, me.user_id,
        "insert into public.responses (session_id, session_question_id, user_id, answer_text)"
        " values (%s, %s, %s, 'mine') returning id",
        me.session_id, served, me.user_id,
    )  # fmt: skip
    assert answered is not None


# Ratings -----------------------------------------------------------------------------------------------------


def test_rating_a_question_never_served_is_refused(db: psycopg.Connection, me: UserData) -> None:
    unseen = add_question(db)
    error = refusal(
        db, me.user_id, "insert into public.question_ratings (user_id, question_id, rating) values (%s, %s, 1)",
        me.user_id, unseen,
    )  # fmt: skip
    assert isinstance(error, psycopg.errors.InsufficientPrivilege)
    assert "row-level security" in str(error)


def test_moving_a_rating_to_another_question_is_refused(db: psycopg.Connection, me: UserData) -> None:
    # A 1-star rating moved onto a question the user never saw would sink it in everyone's ranking.
    target = add_question(db)
    error = refusal(
        db, me.user_id, "update public.question_ratings set question_id = %s, rating = 1 where user_id = %s",
        target, me.user_id,
    )  # fmt: skip
    assert isinstance(error, psycopg.errors.InsufficientPrivilege)
    assert "permission denied" in str(error)
    assert db.execute(
        "select question_id, rating from public.question_ratings where user_id = %s", (me.user_id,)
    ).fetchall() == [(me.question_id, 4)]


def test_changing_the_rating_itself_is_allowed(db: psycopg.Connection, me: UserData) -> None:
    rows = as_user(
        db, me.user_id,
        "with changed as (update public.question_ratings set rating = 2 where user_id = %s returning 1)"
        " select count(*) from changed",
        me.user_id,
    )  # fmt: skip
    assert rows == 1


@pytest.mark.parametrize(
    "statement",
    [
        "insert into public.question_ratings (user_id, question_id, rating, created_at)"
        " values (%(user)s, %(fresh)s, 5, '2020-01-01')",
        "insert into public.question_ratings (user_id, question_id, rating, updated_at)"
        " values (%(user)s, %(fresh)s, 5, now() + interval '1 year')",
        "update public.question_ratings set created_at = '2020-01-01' where user_id = %(user)s",
        "update public.question_ratings set updated_at = '2020-01-01' where user_id = %(user)s",
        "update public.user_profiles set created_at = '2020-01-01' where user_id = %(user)s",
        "update public.user_profiles set updated_at = '2020-01-01' where user_id = %(user)s",
    ],
)
def test_forging_timestamps_is_refused(db: psycopg.Connection, me: UserData, statement: str) -> None:
    # `fresh` is served to the user and unrated: only the column grant can refuse the insert.
    fresh = add_question(db)
    serve(db, me, fresh)
    error = refusal(db, me.user_id, statement, {"user": me.user_id, "fresh": fresh})
    assert isinstance(error, psycopg.errors.InsufficientPrivilege)
    assert "permission denied" in str(error)


def test_forging_profile_timestamps_on_insert_is_refused(db: psycopg.Connection, free_user: uuid.UUID) -> None:
    error = refusal(
        db, free_user,
        "insert into public.user_profiles (user_id, created_at, updated_at) values (%s, '2020-01-01', '2020-01-01')",
        free_user,
    )  # fmt: skip
    assert isinstance(error, psycopg.errors.InsufficientPrivilege)
    assert "permission denied" in str(error)


# Profiles ----------------------------------------------------------------------------------------------------


def test_a_fake_time_zone_is_refused(db: psycopg.Connection, free_user: uuid.UUID) -> None:
    # 'UTC+167' is a valid POSIX offset to `at time zone`: a week ahead, which would stretch streaks and quotas.
    error = refusal(
        db, free_user, "insert into public.user_profiles (user_id, timezone) values (%s, 'UTC+167')", free_user
    )
    assert error.sqlstate == "PT422", error
    assert "is not an IANA time zone name" in error.diag.message_primary


def test_an_iana_time_zone_is_accepted(db: psycopg.Connection, free_user: uuid.UUID) -> None:
    stored = as_user(
        db, free_user,
        "insert into public.user_profiles (user_id, timezone) values (%s, 'Europe/Paris') returning timezone",
        free_user,
    )  # fmt: skip
    assert stored == "Europe/Paris"


# Plan features -----------------------------------------------------------------------------------------------


def voice_answer_insert_is_refused(db: psycopg.Connection, user: uuid.UUID) -> None:
    session = open_session(db, user)
    error = refusal(
        db, user,
        "insert into public.responses (session_id, session_question_id, user_id, audio_path)"
        " values (%s, %s, %s, %s)",
        session.session_id, session.session_question_id, user, f"{user}/answer.webm",
    )  # fmt: skip
    assert error.sqlstate == "PT402", error
    assert "voice answers come with a paid plan" in error.diag.message_primary


def voice_answers_are_refused(db: psycopg.Connection, user: uuid.UUID) -> None:
    voice_answer_insert_is_refused(db, user)
    # Nor can the recording be uploaded.
    upload = refusal(
        db, user, "insert into storage.objects (bucket_id, name, owner_id) values ('answers', %s, %s)",
        f"{user}/answer.webm", str(user),
    )  # fmt: skip
    assert isinstance(upload, psycopg.errors.InsufficientPrivilege)
    assert "row-level security" in str(upload)


def mock_interviews_are_refused(db: psycopg.Connection, user: uuid.UUID) -> None:
    error = refusal(db, user, "select public.start_session('mock_interview', %s)", Jsonb({}))
    assert error.sqlstate == "PT402", error
    assert "mock interviews come with a paid plan" in error.diag.message_primary


def ai_generated_questions_are_refused(db: psycopg.Connection, user: uuid.UUID) -> None:
    # More than the bank holds for the bucket and its neighbouring levels: the handler would generate the rest
    # if, and only if, the flag says so.
    request = {"category": "leadership", "difficulty": "hard", "experience_level": "lead", "count": 20}
    result = db.execute("select service.request_questions(%s, %s)", (user, Jsonb(request))).fetchone()[0]
    assert result["deficit"] > 0, result
    assert result["ai_generation_included"] is False


def peer_sessions_are_refused(db: psycopg.Connection, user: uuid.UUID) -> None:
    error = refusal(
        db, user,
        "insert into public.peer_requests (user_id, target_role, experience_level, available_from, available_until,"
        " timezone) values (%s, 'software engineer', 'mid', now(), now() + interval '2 hours', 'UTC')",
        user,
    )  # fmt: skip
    assert error.sqlstate == "PT402", error
    assert "peer sessions come with a paid plan" in error.diag.message_primary


FEATURE_REFUSALS: dict[str, Callable[[psycopg.Connection, uuid.UUID], None]] = {
    "voice_answers": voice_answers_are_refused,
    "mock_interviews": mock_interviews_are_refused,
    "ai_generated_questions": ai_generated_questions_are_refused,
    "peer_sessions": peer_sessions_are_refused,
}


def test_a_free_user_inserting_a_voice_answer_is_refused(db: psycopg.Connection, free_user: uuid.UUID) -> None:
    voice_answer_insert_is_refused(db, free_user)


def test_a_free_user_starting_a_mock_interview_is_refused(db: psycopg.Connection, free_user: uuid.UUID) -> None:
    mock_interviews_are_refused(db, free_user)


def test_every_plan_feature_is_refused_to_a_user_without_it(db: psycopg.Connection) -> None:
    # Every attribute of the features' type, whether or not a plan grants it yet.
    features = {
        row[0]
        for row in db.execute(
            "select attname from pg_attribute"
            " where attrelid = 'public.plan_features'::regclass and attnum > 0 and not attisdropped"
        )
    }
    untested = features - FEATURE_REFUSALS.keys()
    assert not untested, f"plan features with no refusal test in FEATURE_REFUSALS: {sorted(untested)}"
    for feature, attempt in FEATURE_REFUSALS.items():
        user = sign_up(db)  # a fresh free user per feature: one attempt's quota use cannot refuse the next
        granted = db.execute("select to_jsonb(e.features) from public.entitlements(%s) e", (user,)).fetchone()[0]
        assert granted[feature] is False, f"the free plan grants {feature}"
        attempt(db, user)
