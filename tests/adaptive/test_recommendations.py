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
    """A paid user who scored 40 in behavioral nine days ago and 80 in technical two days ago (mid level)."""
    user = sign_up(db)
    give_paid_plan(db, user)
    scored_answer(db, user, question(db, "behavioral", "medium"), 40, NOW - timedelta(days=9, hours=1))
    scored_answer(db, user, question(db, "technical", "medium"), 80, NOW - timedelta(days=2, hours=1))
    calibrate(db, NOW)
    return user


def test_each_pick_says_why_in_one_line(db: psycopg.Connection, practised: uuid.UUID) -> None:
    picks = recommend(db, practised, 6)

    lines = [LINE.match(p["reason"]) for p in picks]
    assert all(lines), [p["reason"] for p in picks]
    # The weakest category first (and due), then two never practised (due as well: they outrank technical, due
    # too but scored well); the three take turns.
    assert [p["category"] for p in picks] == ["behavioral", "situational", "leadership"] * 2
    assert picks[0]["reason"].startswith(
        "behavioral: lowest score this month (40), last practised 9 days ago (due for review); "
    )
    assert lines[1]["why"] == lines[2]["why"] == "not practised yet"
    for pick, line in zip(picks, lines, strict=True):
        assert int(line["chance"]) == round(100 * pick["success_probability"])
        assert line["category"] == pick["category"].replace("_", " ")


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


def test_a_session_started_for_someone_else_cannot_be_recommended(db: psycopg.Connection) -> None:
    """The picks read the user's own rows as they would: the service (no user token) is refused, not served."""
    user = sign_up(db)
    with pytest.raises(psycopg.Error) as caught:
        db.execute(
            "insert into public.practice_sessions (user_id, session_type, config)"
            " values (%s, 'quick', '{\"mode\": \"recommended\"}')",
            (user,),
        )
    assert caught.value.sqlstate == "PT422"
    assert "started by its user" in caught.value.diag.message_primary


def test_recommend_next_is_for_signed_in_users_only(db: psycopg.Connection) -> None:
    with pytest.raises(psycopg.errors.InsufficientPrivilege), acting_as(db, ANON):
        db.execute("select * from public.recommend_next()")
