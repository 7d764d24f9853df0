"""The practice loop as a client drives it through PostgREST (RLS applies): start, answer, evaluate, complete."""

from __future__ import annotations

import uuid

import psycopg
import pytest
from psycopg.types.json import Jsonb

from shared.db.rls import acting_as
from tests.support.identities import give_paid_plan, sign_up, user_claims


def as_user(db: psycopg.Connection, user: uuid.UUID, statement: str, *params: object) -> object:
    with acting_as(db, user_claims(user)):
        return db.execute(statement, params).fetchone()[0]  # type: ignore[arg-type]


def refused(db: psycopg.Connection, user: uuid.UUID, statement: str, *params: object) -> psycopg.Error:
    with pytest.raises(psycopg.Error) as caught:
        as_user(db, user, statement, *params)
    return caught.value


def start(db: psycopg.Connection, user: uuid.UUID, kind: str, config: dict | None = None) -> dict:
    return as_user(db, user, "select to_jsonb(public.start_session(%s, %s))", kind, Jsonb(config or {}))  # type: ignore[return-value]


def answer(db: psycopg.Connection, user: uuid.UUID, session: dict, position: int = 0, **columns: object) -> uuid.UUID:
    served = session["questions"][position]["session_question_id"]
    fields = {"answer_text": "In my last role I led the migration and cut costs by 20%.", **columns}
    names = ", ".join(fields)
    placeholders = ", ".join(["%s"] * len(fields))
    return as_user(  # type: ignore[return-value]
        db,
        user,
        f"insert into public.responses (session_id, session_question_id, {names})"
        f" values (%s, %s, {placeholders}) returning id",
        session["session_id"],
        served,
        *fields.values(),
    )


@pytest.fixture
def user(db: psycopg.Connection) -> uuid.UUID:
    member = sign_up(db)
    give_paid_plan(db, member)
    return member


def test_session_types_serve_their_questions(db: psycopg.Connection, user: uuid.UUID) -> None:
    quick = start(db, user, "quick", {"category": "technical", "difficulty": "easy"})
    assert len(quick["questions"]) == 3
    assert {q["category"] for q in quick["questions"]} == {"technical"}

    full = start(db, user, "full")
    assert [q["category"] for q in full["questions"]] == [
        "behavioral",
        "behavioral",
        "technical",
        "technical",
        "situational",
        "problem_solving",
        "leadership",
        "culture_fit",
    ]

    custom = start(
        db, user, "custom", {"category": "leadership", "difficulty": "hard", "experience_level": "lead", "count": 4}
    )
    assert [(q["category"], q["difficulty"]) for q in custom["questions"]] == [("leadership", "hard")] * 4

    mock = start(db, user, "mock_interview", {"question_time_limit_seconds": 120})
    assert [q["difficulty"] for q in mock["questions"]] == ["easy", "medium", "medium", "hard", "medium"]
    assert mock["time_limit_seconds"] == 5 * 120
    served = [q["question_id"] for s in (quick, full, custom, mock) for q in s["questions"]]
    assert len(served) == len(set(served))


def test_the_profile_sets_the_level(db: psycopg.Connection, user: uuid.UUID) -> None:
    db.execute("insert into public.user_profiles (user_id, experience_level) values (%s, 'executive')", (user,))
    session = start(db, user, "quick")
    assert {q["experience_level"] for q in session["questions"]} <= {"executive", "lead"}


def test_refusals_are_clear(db: psycopg.Connection) -> None:
    free = sign_up(db)
    error = refused(db, free, "select public.start_session('mock_interview')")
    assert (error.sqlstate, str(error).splitlines()[0]) == ("PT402", "mock interviews come with a paid plan")
    error = refused(db, free, "select public.start_session('custom', '{\"category\": \"technical\"}')")
    assert error.sqlstate == "PT422"
    start(db, free, "quick")
    start(db, free, "quick")
    error = refused(db, free, "select public.start_session('quick')")
    assert error.sqlstate == "PT429"
    assert "daily limit reached: 2 practice sessions" in str(error)


def test_a_session_ends_once(db: psycopg.Connection, user: uuid.UUID) -> None:
    session = start(db, user, "quick")
    summary = as_user(db, user, "select to_jsonb(public.end_session(%s, 'completed'))", session["session_id"])
    assert summary["status"] == "completed"  # type: ignore[index]
    error = refused(db, user, "select public.end_session(%s, 'completed')", session["session_id"])
    assert (error.sqlstate, "already completed" in str(error)) == ("PT409", True)
    error = refused(db, user, "select public.end_session(%s, 'abandoned')", session["session_id"])
    assert error.sqlstate == "PT409"
    stranger = sign_up(db)
    error = refused(db, stranger, "select public.end_session(%s, 'completed')", session["session_id"])
    assert error.sqlstate == "PT404"


def test_answers_close_with_the_session(db: psycopg.Connection, user: uuid.UUID) -> None:
    session = start(db, user, "quick")
    response = answer(db, user, session, 0)
    as_user(db, user, "select public.end_session(%s, 'abandoned')", session["session_id"])
    error = refused(db, user, "update public.responses set answer_text = 'late' where id = %s returning id", response)
    assert error.sqlstate == "PT409"
    assert "answers are closed" in str(error)
    with pytest.raises(psycopg.Error) as late:
        answer(db, user, session, 1)
    assert late.value.sqlstate == "PT409"


def test_audio_must_live_in_the_users_own_folder(db: psycopg.Connection, user: uuid.UUID) -> None:
    session = start(db, user, "quick")
    mine = answer(db, user, session, 0, answer_text=None, audio_path=f"{user}/answer-1.webm")
    assert mine
    for elsewhere in (f"{uuid.uuid4()}/stolen.webm", f"{user}/../{uuid.uuid4()}/stolen.webm"):
        with pytest.raises(psycopg.Error) as caught, db.transaction():
            answer(db, user, session, 1, audio_path=elsewhere)
        assert caught.value.sqlstate == "PT422"


def test_evaluation_is_charged_once_refunded_on_failure_and_scores_the_session(
    db: psycopg.Connection, user: uuid.UUID
) -> None:
    session = start(db, user, "quick")
    responses = [answer(db, user, session, i) for i in range(2)]
    used = "select coalesce(sum(used), 0) from public.usage_counters where user_id = %s and metric = 'evaluations'"

    first = db.execute("select service.request_evaluation(%s, %s)", (user, responses[0])).fetchone()[0]
    again = db.execute("select service.request_evaluation(%s, %s)", (user, responses[0])).fetchone()[0]
    assert (first["already_requested"], again["already_requested"]) == (False, True)
    assert db.execute(used, (user,)).fetchone()[0] == 1

    error = refused(
        db, user, "update public.responses set answer_text = 'changed' where id = %s returning id", responses[0]
    )
    assert "final once sent for evaluation" in str(error)

    context = db.execute("select service.begin_evaluation(%s)", (responses[0],)).fetchone()[0]
    assert context["question"]["content"]
    assert db.execute("select service.begin_evaluation(%s)", (responses[0],)).fetchone()[0]["response_id"]
    result = {
        "ai_score": 80,
        "feedback": "Good",
        "strengths": ["Clear"],
        "improvements": ["Numbers"],
        "criterion_scores": {"action": {"score": 4, "max": 5, "weight": 1, "justification": "ok"}},
        "evaluator": {"model": "m", "rubric_version": "v1", "prompt_hash": "h"},
    }
    done = db.execute("select service.complete_evaluation(%s, %s)", (responses[0], Jsonb(result))).fetchone()[0]
    assert done == {"already": False, "session_overall_score": None}  # the session is still open
    assert db.execute("select service.complete_evaluation(%s, %s)", (responses[0], Jsonb(result))).fetchone()[0][
        "already"
    ]

    db.execute("select service.request_evaluation(%s, %s)", (user, responses[1]))
    db.execute("select service.begin_evaluation(%s)", (responses[1],))
    as_user(db, user, "select public.end_session(%s, 'completed')", session["session_id"])
    assert db.execute(
        "select overall_score from public.practice_sessions where id = %s", (session["session_id"],)
    ).fetchone() == (None,)  # one evaluation still pending
    db.execute("select service.fail_evaluation(%s, 'model refused')", (responses[1],))
    assert db.execute(used, (user,)).fetchone()[0] == 1  # the failed one was refunded
    assert db.execute(
        "select evaluation_status::text, evaluation_error from public.responses where id = %s", (responses[1],)
    ).fetchone() == ("failed", "model refused")
    assert db.execute(
        "select overall_score from public.practice_sessions where id = %s", (session["session_id"],)
    ).fetchone() == (80,)


def test_evaluation_requests_check_ownership(db: psycopg.Connection, user: uuid.UUID) -> None:
    session = start(db, user, "quick")
    response = answer(db, user, session)
    stranger = sign_up(db)
    # Someone else's answer is as missing as a missing one: a 403 would confirm that the id exists.
    for caller, target, sqlstate in ((stranger, response, "PT404"), (user, uuid.uuid4(), "PT404")):
        with pytest.raises(psycopg.Error) as caught, db.transaction():
            db.execute("select service.request_evaluation(%s, %s)", (caller, target))
        assert caught.value.sqlstate == sqlstate


@pytest.mark.parametrize(
    ("statement", "allowed"),
    [
        (
            "insert into storage.objects (bucket_id, name, owner_id) values ('answers', '{me}/a.webm', '{me}')"
            " returning id",
            True,
        ),
        (
            "insert into storage.objects (bucket_id, name, owner_id) values ('answers', '{other}/a.webm', '{me}')"
            " returning id",
            False,
        ),
        (
            "insert into storage.objects (bucket_id, name, owner_id) values ('answers', 'a.webm', '{me}') returning id",
            False,
        ),
    ],
)
def test_storage_policies_keep_audio_in_the_owners_folder(
    db: psycopg.Connection, user: uuid.UUID, statement: str, allowed: bool
) -> None:
    sql = statement.format(me=user, other=uuid.uuid4())
    if allowed:
        assert as_user(db, user, sql)
    else:
        assert "row-level security" in str(refused(db, user, sql))


def test_users_see_only_their_own_audio(db: psycopg.Connection, user: uuid.UUID) -> None:
    other = sign_up(db)
    db.execute(
        "insert into storage.objects (bucket_id, name) values ('answers', %s), ('answers', %s)",
        (f"{user}/mine.webm", f"{other}/theirs.webm"),
    )
    assert as_user(db, user, "select array_agg(name) from storage.objects") == [f"{user}/mine.webm"]
    with acting_as(db, {"role": "anon"}):
        assert db.execute("select count(*) from storage.objects").fetchone() == (0,)


def test_an_answer_carries_its_questions_category_and_only_a_question_of_its_session(
    db: psycopg.Connection, user: uuid.UUID
) -> None:
    full = start(db, user, "full")
    response = answer(db, user, full, position=2)
    assert (
        as_user(db, user, "select category::text from public.responses where id = %s", response)
        == (full["questions"][2]["category"])
    )

    # The category is the bank's, not the client's to set.
    error = refused(
        db,
        user,
        "insert into public.responses (session_id, session_question_id, answer_text, category)"
        " values (%s, %s, 'x', 'technical') returning id",
        full["session_id"],
        full["questions"][3]["session_question_id"],
    )
    assert isinstance(error, psycopg.errors.InsufficientPrivilege)

    # A served question of another session is refused, saying which and how to fix it.
    other = start(db, user, "quick")
    error = refused(
        db,
        user,
        "insert into public.responses (session_id, session_question_id, answer_text) values (%s, %s, 'x')",
        full["session_id"],
        other["questions"][0]["session_question_id"],
    )
    assert isinstance(error, psycopg.errors.ForeignKeyViolation)
    assert f"was not served in session {full['session_id']}" in error.diag.message_primary
    assert "session_questions ids" in error.diag.message_hint
