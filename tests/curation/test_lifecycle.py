"""The curation step's transitions, each with its audit row (reason, figures, actor), and what it leaves alone."""

from __future__ import annotations

import uuid

import psycopg
import pytest

from tests.curation.bank import add_question, answer, answerers, curate, serve, status, transitions
from tests.support.identities import sign_up


@pytest.fixture
def user(db: psycopg.Connection) -> uuid.UUID:
    return sign_up(db)


def report(db: psycopg.Connection, question: uuid.UUID, reason: str, count: int) -> None:
    for _ in range(count):
        reporter = sign_up(db)
        serve(db, reporter, question)
        db.execute(
            "insert into public.question_reports (user_id, question_id, reason) values (%s, %s, %s)",
            (reporter, question, reason),
        )


def rate(db: psycopg.Connection, user: uuid.UUID, question: uuid.UUID, stars: int) -> None:
    db.execute(
        "insert into public.question_ratings (user_id, question_id, rating) values (%s, %s, %s)",
        (user, question, stars),
    )


def test_a_provisional_question_is_admitted_once_served_to_its_user_unless_rated_low(
    db: psycopg.Connection, user: uuid.UUID
) -> None:
    waiting, served, disliked = (add_question(db, provisional_for=user) for _ in range(3))
    assert status(db, waiting) == ("provisional", True)
    serve(db, user, served)
    serve(db, user, disliked)
    rate(db, user, disliked, 2)

    result = curate(db)

    assert result["questions_promoted"] == 1
    assert status(db, served) == ("active", True)
    assert db.execute("select provisional_for from public.questions where id = %s", (served,)).fetchone() == (None,)
    assert status(db, waiting) == status(db, disliked) == ("provisional", True)
    assert transitions(db, served) == [
        ("provisional", "active", "admitted: served to its user, no rating below 3", "curation", {"usage_count": 0,
         "open_reports": 0, "report_threshold": 3, "offensive_reports": 0, "offensive_threshold": 2, "answers": 0,
         "paired_answers": 0, "rating_count": 0, "bayesian_rating": 3.5})
    ]  # fmt: skip


def test_reports_send_a_question_to_review_at_a_threshold_that_grows_with_exposure(db: psycopg.Connection) -> None:
    quiet, busy = add_question(db), add_question(db)
    db.execute("update public.questions set usage_count = 1000 where id = %s", (busy,))  # threshold 2% = 20
    report(db, quiet, "wrong", 3)
    report(db, busy, "wrong", 3)

    assert curate(db)["questions_sent_to_review"] == 1

    assert status(db, quiet) == ("under_review", False)
    assert status(db, busy) == ("active", True)
    ((before, after, reason, actor, figures),) = transitions(db, quiet)
    assert (before, after, reason, actor) == ("active", "under_review", "reported", "curation")
    assert (figures["open_reports"], figures["report_threshold"]) == (3, 3)


def test_offensive_reports_weigh_more(db: psycopg.Connection) -> None:
    question = add_question(db)
    db.execute("update public.questions set usage_count = 400 where id = %s", (question,))  # 2: offensive, 8: any
    report(db, question, "offensive", 2)
    curate(db)
    assert status(db, question) == ("under_review", False)
    assert transitions(db, question)[-1][2] == "reported offensive"


@pytest.mark.parametrize(
    ("difficulty", "scores", "abilities", "reason"),
    [
        ("medium", [5.0 + i % 10 for i in range(30)], None, "nobody can answer it"),
        ("medium", [90.0 + i % 10 for i in range(30)], None, "everybody aces it"),
        ("easy", [35.0 + i for i in range(30)], None, "harder than its difficulty says"),
        ("hard", [70.0 + i % 15 for i in range(30)], None, "easier than its difficulty says"),
        # Strong and weak candidates score alike: the question tells nobody apart.
        ("medium", [60.0 + (i % 2) * 5 for i in range(50)], [30.0 + i for i in range(50)],
         "scores do not follow ability"),
    ],
    ids=["unanswerable", "aced", "harder-than-labelled", "easier-than-labelled", "no-discrimination"],
)  # fmt: skip
def test_answer_scores_send_a_question_to_review(
    db: psycopg.Connection, difficulty: str, scores: list[float], abilities: list[float] | None, reason: str
) -> None:
    question = add_question(db, difficulty=difficulty)
    answerers(db, question, scores, abilities)

    result = curate(db)

    assert result["answers_tallied"] == len(scores)
    assert status(db, question) == ("under_review", False)
    ((_, _, why, _, figures),) = transitions(db, question)
    assert why == reason
    assert figures["answers"] == len(scores)
    assert figures["mean_score"] == pytest.approx(sum(scores) / len(scores), abs=0.01)


def test_a_question_that_discriminates_stays_and_its_answers_count_once(db: psycopg.Connection) -> None:
    question = add_question(db)
    abilities = [30.0 + i for i in range(50)]
    answerers(db, question, [a + 5 for a in abilities], abilities)

    assert curate(db)["answers_tallied"] == 50
    assert curate(db)["answers_tallied"] == 0  # the next run starts where this one ended
    assert status(db, question) == ("active", True)
    calibration = db.execute(
        "select answers, paired from private.question_score_stats where question_id = %s", (question,)
    ).fetchone()
    assert calibration == (50, 50)
    assert transitions(db, question) == []


def test_a_poorly_rated_question_is_retired_by_its_bayesian_average(db: psycopg.Connection) -> None:
    few, many = add_question(db), add_question(db)
    # Three 1-star ratings are not enough against the prior; twelve are.
    db.execute("update public.questions set rating_avg = 1, rating_count = 3 where id = %s", (few,))
    db.execute("update public.questions set rating_avg = 1.2, rating_count = 12 where id = %s", (many,))
    for question in (few, many):
        rater = sign_up(db)
        serve(db, rater, question)
        rate(db, rater, question, 1)

    assert curate(db)["questions_retired"] == 1
    assert status(db, few) == ("active", True)
    assert status(db, many) == ("retired", False)
    figures = transitions(db, many)[0][4]
    assert figures["bayesian_rating"] == pytest.approx((35 + 12 * 1.2) / 22, abs=0.01)


def test_a_near_duplicate_of_an_older_question_is_retired(db: psycopg.Connection) -> None:
    original = add_question(db, content="How would you design a rate limiter for a public API?")
    db.execute("update public.questions set created_at = now() - interval '1 day' where id = %s", (original,))
    copy = add_question(db, content="How would you design a rate limiter for a public API service?")
    unrelated = add_question(db, content="Tell me about a time you disagreed with your manager.")

    curate(db)

    assert status(db, original) == ("active", True)
    assert status(db, unrelated) == ("active", True)
    assert status(db, copy) == ("retired", False)
    ((_, _, reason, _, figures),) = transitions(db, copy)
    assert reason == "near-duplicate of an older question"
    assert figures["duplicate_of"] == str(original)
    assert figures["similarity"] >= 0.6


def test_new_versions_are_checked_for_duplicates_a_bounded_batch_a_run_until_none_wait(
    db: psycopg.Connection,
) -> None:
    """A backlog of new versions (an import, a stopped schedule) is checked max_duplicate_checks a run, oldest
    first, so every run finishes within its statement timeout and the backlog drains; a copy in it is still
    retired when its turn comes."""
    curate(db)  # the seed's versions
    original = add_question(db, content="How would you design a rate limiter for a public API?")
    db.execute("update public.questions set created_at = now() - interval '1 day' where id = %s", (original,))
    db.execute("update private.duplicate_checks_due set created_at = now() - interval '1 day'")
    fillers = [
        add_question(db, content=text)
        for text in (
            "Tell me about a time you disagreed with your manager.",
            "Explain how a B-tree index stays balanced on insert.",
            "What would you measure first in a slow checkout page?",
        )
    ]
    copy = add_question(db, content="How would you design a rate limiter for a public API service?")

    runs = [
        db.execute("select service.curate_questions(now() + interval '10 minutes', 2)").fetchone()[0] for _ in range(3)
    ]

    assert [(r["duplicate_checks"], r["duplicate_checks_waiting"]) for r in runs] == [(2, 3), (2, 1), (1, 0)]
    assert status(db, copy) == ("retired", False)
    assert [status(db, q) for q in (original, *fillers)] == [("active", True)] * 4
    with pytest.raises(psycopg.Error) as refused:
        db.execute("select service.curate_questions(now(), 0)")
    assert refused.value.sqlstate == "PT422", refused.value


def test_under_review_and_retired_questions_are_left_to_people(db: psycopg.Connection) -> None:
    question = add_question(db)
    report(db, question, "unclear", 3)
    curate(db)
    report(db, question, "wrong", 3)
    curate(db)
    assert [t[1] for t in transitions(db, question)] == ["under_review"]


def test_a_direct_status_change_is_audited_and_a_deleted_users_provisional_question_waits_for_review(
    db: psycopg.Connection, user: uuid.UUID
) -> None:
    legacy, orphan = add_question(db), add_question(db, provisional_for=user)
    db.execute("update public.questions set is_active = false where id = %s", (legacy,))
    db.execute("delete from auth.users where id = %s", (user,))

    assert status(db, legacy) == ("retired", False)
    assert status(db, orphan) == ("under_review", False)
    assert [t[:4] for t in transitions(db, orphan)] == [
        ("provisional", "under_review", "status changed outside the curation step", "system")
    ]
    assert transitions(db, legacy)[0][3] == "system"


def test_the_audit_trail_is_append_only_even_for_the_service(db: psycopg.Connection) -> None:
    question = add_question(db)
    report(db, question, "wrong", 3)
    curate(db)
    db.execute("set local role service_role")
    for statement in ("update public.question_transitions set reason = 'nothing happened'",
                      "delete from public.question_transitions"):  # fmt: skip
        with pytest.raises(psycopg.errors.InsufficientPrivilege), db.transaction():
            db.execute(statement)  # type: ignore[arg-type]
    db.execute("reset role")
    assert len(transitions(db, question)) == 1


def test_answers_keep_the_version_they_answered(db: psycopg.Connection, user: uuid.UUID) -> None:
    question = add_question(db, content="What is a write-ahead log for?")
    first = answer(db, user, question, 70)
    db.execute(
        "insert into public.question_transitions (question_id, to_status, reason, content, actor)"
        " values (%s, 'active', 'clearer', 'What is a write-ahead log for, and what does it cost?', 'operator')",
        (question,),
    )
    later = sign_up(db)
    answer(db, later, question, 70)

    versions = db.execute(
        "select r.user_id = %s, sq.question_version, v.content from public.responses r"
        " join public.session_questions sq on sq.id = r.session_question_id"
        " join public.question_versions v on v.question_id = sq.question_id and v.version = sq.question_version"
        " where sq.question_id = %s order by sq.question_version",
        (user, question),
    ).fetchall()
    assert versions == [
        (True, 1, "What is a write-ahead log for?"),
        (False, 2, "What is a write-ahead log for, and what does it cost?"),
    ]
    assert db.execute("select id from public.responses where user_id = %s", (user,)).fetchone() == (first,)
    # One question however many versions: never served twice, one row in the bank.
    with pytest.raises(psycopg.errors.UniqueViolation), db.transaction():
        serve(db, user, question)
    assert db.execute("select count(*) from public.questions where id = %s", (question,)).fetchone() == (1,)
