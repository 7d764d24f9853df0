"""recommend_next and recommended sessions, as a signed-in user calls them through PostgREST (RLS applies)."""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from shared.db.rls import acting_as
from tests.adaptive.history import calibrate, question, scored_answer
from tests.support.identities import ANON, give_paid_plan, sign_up, user_claims

NOW = datetime.now(UTC)
LINE = re.compile(r"^(?P<category>[a-z ]+): (?P<why>[^;]+); (?P<chance>\d+)% chance of success at this difficulty$")


def recommend(db: psycopg.Connection, user: uuid.UUID, count: int = 5, category: str | None = None) -> list[dict]:
    with acting_as(db, user_claims(user)):
        return (
            db.cursor(row_factory=dict_row)
            .execute("select * from public.recommend_next(%s, %s)", (count, category))
            .fetchall()
        )


def start(db: psycopg.Connection, user: uuid.UUID, config: dict, kind: str = "quick") -> dict:
    with acting_as(db, user_claims(user)):
        return db.execute("select to_jsonb(public.start_session(%s, %s))", (kind, Jsonb(config))).fetchone()[0]


def refusal(db: psycopg.Connection, user: uuid.UUID, config: dict, kind: str = "quick") -> psycopg.Error:
    with pytest.raises(psycopg.Error) as caught:
        start(db, user, config, kind)
    return caught.value


@pytest.fixture
def practised(db: psycopg.Connection) -> uuid.UUID:
    """A paid user who scored 25 twice in behavioral nine days ago and 80 in technical two days ago (mid level)."""
    user = sign_up(db)
    give_paid_plan(db, user)
    for _ in range(2):
        scored_answer(db, user, question(db, "behavioral", "medium"), 25, NOW - timedelta(days=9, hours=1))
    scored_answer(db, user, question(db, "technical", "medium"), 80, NOW - timedelta(days=2, hours=1))
    calibrate(db, NOW)
    return user


def test_each_pick_says_why_in_one_line(db: psycopg.Connection, practised: uuid.UUID) -> None:
    picks = recommend(db, practised, 6)

    lines = [LINE.match(p["reason"]) for p in picks]
    assert all(lines), [p["reason"] for p in picks]
    # The weakest category first (and due), then two never practised (due as well, and as weak as they may
    # plausibly be: they outrank technical, due too but scored well); the three take turns.
    assert [p["category"] for p in picks] == ["behavioral", "situational", "leadership"] * 2
    assert picks[0]["reason"].startswith(
        "behavioral: lowest score this month (25), last practised 9 days ago (due for review); "
    )
    assert lines[1]["why"] == lines[2]["why"] == "not practised yet"
    for pick, line in zip(picks, lines, strict=True):
        assert int(line["chance"]) == round(100 * pick["success_probability"])
        assert line["category"] == pick["category"].replace("_", " ")


def test_a_category_never_practised_outranks_one_a_single_answer_calls_a_little_weak(db: psycopg.Connection) -> None:
    """Need is read at the ability's upper confidence bound of weakness (the estimate less one standard error):
    one answer scored 40 says little, and the categories never tried may be weaker still."""
    user = sign_up(db)
    scored_answer(db, user, question(db, "behavioral", "medium"), 40, NOW - timedelta(days=3))
    calibrate(db, NOW)
    weak = db.execute(
        "select ability, ability_uncertainty from public.category_abilities where user_id = %s", (user,)
    ).fetchone()
    assert -0.5 < weak[0] < 0
    assert weak[1] > 0.8

    picks = recommend(db, user, 3)

    assert "behavioral" not in {p["category"] for p in picks}
    assert all("not practised yet" in p["reason"] for p in picks)


def test_picks_aim_at_a_70_percent_chance_and_narrow_to_a_category(
    db: psycopg.Connection, practised: uuid.UUID
) -> None:
    picks = recommend(db, practised, 4, "technical")
    assert [p["category"] for p in picks] == ["technical"] * 4
    assert picks[0]["reason"].startswith("technical: scored 80 this month, last practised 2 days ago (due for review)")
    # Of the curated mid-level technical questions (estimates -1, 0, +1), the nearest to a 70% chance come first.
    distance = [abs(p["success_probability"] - 0.7) for p in picks]
    assert distance == sorted(distance)


def test_a_recommended_session_serves_the_picks_with_their_reasons_and_never_repeats(
    db: psycopg.Connection, practised: uuid.UUID
) -> None:
    first = start(db, practised, {"mode": "recommended", "count": 5})
    second = start(db, practised, {"mode": "recommended", "count": 5})

    for session in (first, second):
        assert len(session["questions"]) == 5
        assert all(LINE.match(q["reason"]) for q in session["questions"])
    assert not {q["question_id"] for q in first["questions"]} & {q["question_id"] for q in second["questions"]}
    stored = db.execute(
        "select widening, pick_reason from public.session_questions where session_id = %s order by position",
        (first["session_id"],),
    ).fetchall()
    assert stored == [("recommended", q["reason"]) for q in first["questions"]]


def test_recommended_sessions_count_against_the_plans_daily_sessions(db: psycopg.Connection) -> None:
    free = sign_up(db)  # the free plan: 2 sessions a day
    for _ in range(2):
        assert len(start(db, free, {"mode": "recommended", "count": 3})["questions"]) == 3
    error = refusal(db, free, {"mode": "recommended", "count": 3})
    assert error.sqlstate == "PT429", error
    assert "2 practice sessions a day on the free plan" in error.diag.message_primary


def test_a_mock_interview_has_no_recommended_mode(db: psycopg.Connection) -> None:
    user = sign_up(db)
    give_paid_plan(db, user)
    error = refusal(db, user, {"mode": "recommended"}, "mock_interview")
    assert error.sqlstate == "PT422", error


def test_a_recommended_session_inserted_by_the_service_serves_its_users_picks(
    db: psycopg.Connection, practised: uuid.UUID
) -> None:
    """As POST /questions starts one: the service (no user token) inserts it, and the picks are that user's."""
    expected = [(p["question_id"], p["reason"]) for p in recommend(db, practised, 3)]
    session = db.execute(
        "insert into public.practice_sessions (user_id, session_type, config)"
        ' values (%s, \'quick\', \'{"mode": "recommended", "count": 3}\') returning id',
        (practised,),
    ).fetchone()[0]
    served = db.execute(
        "select question_id, pick_reason from public.session_questions where session_id = %s order by position",
        (session,),
    ).fetchall()
    assert served == expected


def serve_everything(db: psycopg.Connection, user: uuid.UUID, where: str) -> None:
    """Every active question matching `where` is served to `user` (in a session of their own)."""
    session = db.execute(
        "insert into public.practice_sessions (user_id, session_type) values (%s, 'quick') returning id", (user,)
    ).fetchone()[0]
    db.execute(
        "insert into public.session_questions (session_id, user_id, question_id, position)"
        " select %s, %s, q.id, 100 + row_number() over () from public.questions q"
        f" where q.is_active and ({where})"
        " and not exists (select from public.served_questions s where s.user_id = %s and s.question_id = q.id)",
        (session, user, user),
    )


def test_a_level_with_nothing_left_is_made_up_from_the_nearest_level(db: psycopg.Connection) -> None:
    user = sign_up(db)
    db.execute(
        "insert into public.user_profiles (user_id, experience_level) values (%s, 'entry')"
        " on conflict (user_id) do update set experience_level = 'entry'",
        (user,),
    )
    serve_everything(db, user, "q.category = 'leadership' and q.experience_level = 'entry'")

    picks = recommend(db, user, 4, "leadership")

    assert len(picks) == 4
    levels = db.execute(
        "select distinct experience_level::text from public.questions where id = any(%s)",
        ([p["question_id"] for p in picks],),
    ).fetchall()
    assert levels == [("mid",)]  # entry's nearest level
    for pick in picks:
        assert LINE.match(pick["reason"]), pick["reason"]
        assert "no unserved entry question left so a mid one" in pick["reason"]


def test_categories_with_nothing_left_are_made_up_from_the_next_in_rank(db: psycopg.Connection) -> None:
    user = sign_up(db)
    # Never practised, the categories tie on need and rank in the enum's order: the first three are emptied.
    serve_everything(db, user, "q.category in ('behavioral', 'technical', 'situational')")

    picks = recommend(db, user, 5)

    assert len(picks) == 5
    assert {p["category"] for p in picks} <= {"leadership", "problem_solving", "culture_fit"}
    assert all("in place of higher-ranked categories with no unserved question left" in p["reason"] for p in picks)

    serve_everything(db, user, "true")
    assert recommend(db, user, 5) == []  # served everything: fewer (none), never a repeat


def test_recommend_next_is_for_signed_in_users_only(db: psycopg.Connection) -> None:
    with pytest.raises(psycopg.errors.InsufficientPrivilege), acting_as(db, ANON):
        db.execute("select * from public.recommend_next()")
