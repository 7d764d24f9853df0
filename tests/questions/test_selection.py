"""Selection and serving in SQL: never a repeat, better-rated first, widening, limits, rollups."""

from __future__ import annotations

import json
import uuid
from concurrent.futures import ThreadPoolExecutor

import psycopg
import pytest

from tests.support.identities import give_paid_plan, sign_up

REQUEST = {"category": "technical", "difficulty": "medium", "experience_level": "mid"}


def request(conn: psycopg.Connection, user: uuid.UUID, **fields: object) -> dict:
    return conn.execute(
        "select service.request_questions(%s, %s)", (user, json.dumps({**REQUEST, "count": 5, **fields}))
    ).fetchone()[0]


@pytest.fixture
def conn(database_url: str) -> psycopg.Connection:
    with psycopg.connect(database_url, autocommit=True) as connection:
        yield connection


@pytest.fixture
def paying_user(conn: psycopg.Connection) -> uuid.UUID:
    user = sign_up(conn)
    give_paid_plan(conn, user)
    return user


def add_questions(conn: psycopg.Connection, n: int, **fields: object) -> list[uuid.UUID]:
    bucket = {**REQUEST, **fields}
    tag = uuid.uuid4().hex[:8]
    return [
        conn.execute(
            "insert into public.questions (content, category, difficulty, experience_level, tags, source)"
            " values (%s, %s, %s, %s, %s, 'ai') returning id",
            (
                f"Question {tag} number {i}: explain caching layer {i} in depth?",
                bucket["category"],
                bucket["difficulty"],
                bucket["experience_level"],
                bucket.get("tags", []),
            ),
        ).fetchone()[0]
        for i in range(n)
    ]


def test_a_user_is_never_served_the_same_question_twice(conn: psycopg.Connection, paying_user: uuid.UUID) -> None:
    seen: list[str] = []
    for _ in range(30):
        result = request(conn, paying_user, count=4)
        seen += [q["id"] for q in result["questions"]]
        if result["deficit"]:
            break
    assert len(seen) == len(set(seen))
    assert len(seen) >= 8  # the bucket and its neighbours held at least that many
    served = conn.execute("select count(*) from public.session_questions where user_id = %s", (paying_user,))
    assert served.fetchone()[0] == len(seen)


def test_better_rated_questions_win_and_one_vote_does_not_beat_two_hundred(conn: psycopg.Connection) -> None:
    one_vote, many_votes, unrated, poor = conn.execute(
        "select private.question_rank(5, 1, 0), private.question_rank(4.6, 200, 0),"
        " private.question_rank(null, 0, 0), private.question_rank(2.0, 100, 0)"
    ).fetchone()
    assert many_votes > one_vote
    assert unrated > poor  # exploration: a new question gets its chance before a known-poor one

    best, fresh, worst = add_questions(
        conn, 3, category="culture_fit", difficulty="hard", experience_level="lead", tags=["remote-work"]
    )
    for question, avg, count in ((best, 4.8, 200), (worst, 2.0, 100)):
        conn.execute(
            "update public.questions set rating_avg = %s, rating_count = %s,"
            " rank_score = private.question_rank(%s::numeric, %s::integer, 0) where id = %s",
            (avg, count, avg, count, question),
        )
    firsts = []
    for _ in range(10):
        user = sign_up(conn)
        give_paid_plan(conn, user)
        result = request(
            conn,
            user,
            category="culture_fit",
            difficulty="hard",
            experience_level="lead",
            tags=["remote-work"],
            count=1,
        )
        firsts.append(result["questions"][0]["id"])
    assert set(firsts) == {str(best)}
    order = [
        q["id"]
        for q in request(
            conn,
            user,
            category="culture_fit",
            difficulty="hard",
            experience_level="lead",
            tags=["remote-work"],
            count=2,
        )["questions"]
    ]
    assert order == [str(fresh), str(worst)]


def test_two_users_asking_alike_get_different_sets(conn: psycopg.Connection) -> None:
    add_questions(conn, 40, category="problem_solving", difficulty="easy", experience_level="senior")
    sets = []
    for _ in range(2):
        user = sign_up(conn)
        give_paid_plan(conn, user)
        sets.append(
            {
                q["id"]
                for q in request(
                    conn, user, category="problem_solving", difficulty="easy", experience_level="senior", count=5
                )["questions"]
            }
        )
    assert sets[0] != sets[1]


def test_widening_drops_tags_then_moves_to_neighbouring_levels(conn: psycopg.Connection) -> None:
    user = sign_up(conn)
    give_paid_plan(conn, user)
    add_questions(
        conn, 1, category="leadership", difficulty="medium", experience_level="senior", tags=["time-management"]
    )
    result = request(
        conn,
        user,
        category="leadership",
        difficulty="medium",
        experience_level="senior",
        tags=["time-management"],
        count=12,
    )
    steps = [q["widening"] for q in result["questions"]]
    assert steps[0] == "exact"
    assert steps == sorted(steps, key=["exact", "any_tags", "neighbour_level"].index)
    assert "any_tags" in steps
    assert "neighbour_level" in steps
    levels = {q["experience_level"] for q in result["questions"] if q["widening"] == "neighbour_level"}
    assert levels <= {"mid", "lead"}


def test_free_plan_limits_and_no_generation(conn: psycopg.Connection) -> None:
    user = sign_up(conn)
    first = request(conn, user, count=1)
    results = [first] + [request(conn, user, count=1, session_id=first["session_id"]) for _ in range(4)]
    assert all(r["ai_generation_included"] is False for r in results)
    with pytest.raises(psycopg.Error, match="daily limit reached: 5 question requests") as refused:
        request(conn, user, count=1, session_id=first["session_id"])
    assert refused.value.sqlstate == "PT429"
    assert conn.execute(
        "select used from public.usage_counters where user_id = %s and metric = 'question_requests'", (user,)
    ).fetchone() == (5,)


def test_free_plan_sessions_per_day(conn: psycopg.Connection) -> None:
    user = sign_up(conn)
    conn.execute("insert into public.practice_sessions (user_id, session_type) values (%s, 'quick')", (user,))
    conn.execute("insert into public.practice_sessions (user_id, session_type) values (%s, 'quick')", (user,))
    with pytest.raises(psycopg.Error, match="daily limit reached: 2 practice sessions") as refused:
        conn.execute("insert into public.practice_sessions (user_id, session_type) values (%s, 'quick')", (user,))
    assert refused.value.sqlstate == "PT429"


def test_bad_requests_are_refused_clearly(conn: psycopg.Connection, paying_user: uuid.UUID) -> None:
    with pytest.raises(psycopg.Error, match="count must be a whole number from 1 to 20") as refused:
        request(conn, paying_user, count=50)
    assert refused.value.sqlstate == "PT422"
    with pytest.raises(psycopg.Error, match="category must be one of: behavioral, technical") as refused:
        request(conn, paying_user, category="astrology")
    assert refused.value.sqlstate == "PT422"
    other = sign_up(conn)
    give_paid_plan(conn, other)
    session = request(conn, other, count=1)["session_id"]
    with pytest.raises(psycopg.Error, match="no session") as refused:
        request(conn, paying_user, session_id=session)
    assert refused.value.sqlstate == "PT404"
    assert conn.execute(
        "select count(*) from public.session_questions where user_id = %s", (paying_user,)
    ).fetchone() == (0,)


def test_continuing_a_session_appends_in_order(conn: psycopg.Connection, paying_user: uuid.UUID) -> None:
    first = request(conn, paying_user, count=2)
    second = request(conn, paying_user, count=2, session_id=first["session_id"])
    assert second["session_id"] == first["session_id"]
    assert [q["position"] for q in first["questions"] + second["questions"]] == [1, 2, 3, 4]


def test_serving_writes_no_question_rows_and_concurrent_serving_does_not_block(
    conn: psycopg.Connection, database_url: str
) -> None:
    add_questions(conn, 200, category="situational", difficulty="hard", experience_level="executive")
    users = [sign_up(conn) for _ in range(20)]
    for user in users:
        give_paid_plan(conn, user)
    before = conn.execute("select sum(n_tup_upd) from pg_stat_user_tables where relname = 'questions'").fetchone()

    def serve(user: uuid.UUID) -> int:
        with psycopg.connect(database_url, autocommit=True) as own:
            return len(
                request(own, user, category="situational", difficulty="hard", experience_level="executive", count=5)[
                    "questions"
                ]
            )

    with ThreadPoolExecutor(8) as pool:
        assert list(pool.map(serve, users)) == [5] * 20
    conn.execute("select pg_stat_force_next_flush()")
    after = conn.execute("select sum(n_tup_upd) from pg_stat_user_tables where relname = 'questions'").fetchone()
    assert after == before


def test_rollup_counts_serves_and_ratings_idempotently(conn: psycopg.Connection, paying_user: uuid.UUID) -> None:
    served = request(conn, paying_user, count=2)["questions"]
    question = served[0]["id"]
    conn.execute(
        "insert into public.question_ratings (user_id, question_id, rating) values (%s, %s, 5)", (paying_user, question)
    )
    conn.execute("select service.rollup_question_stats()")
    first = conn.execute(
        "select usage_count, rating_avg, rating_count, rank_score from public.questions where id = %s", (question,)
    ).fetchone()
    times_served = conn.execute(
        "select count(*) from public.session_questions where question_id = %s", (question,)
    ).fetchone()[0]
    assert first[:3] == (times_served, 5, 1)
    assert first[3] > conn.execute("select private.question_rank(null, 0, 0)").fetchone()[0]
    again = conn.execute("select service.rollup_question_stats()").fetchone()[0]
    assert again["questions_updated"] == 0
    assert (
        conn.execute(
            "select usage_count, rating_avg, rating_count, rank_score from public.questions where id = %s", (question,)
        ).fetchone()
        == first
    )


def test_updating_question_statistics_does_not_wait_for_serving(conn: psycopg.Connection, database_url: str) -> None:
    """Serving share-locks the served question's key (the foreign key); the rollup must not need a key lock."""
    user = sign_up(conn)
    give_paid_plan(conn, user)
    [question] = add_questions(conn, 1, category="technical", difficulty="easy", experience_level="lead")
    with psycopg.connect(database_url) as serving, psycopg.connect(database_url, autocommit=True) as rollup:
        session = serving.execute(
            "insert into public.practice_sessions (user_id, session_type) values (%s, 'quick') returning id", (user,)
        ).fetchone()[0]
        serving.execute(
            "insert into public.session_questions (session_id, user_id, question_id, position) values (%s, %s, %s, 99)",
            (session, user, question),
        )  # still open: its foreign key check holds a key-share lock on the question
        rollup.execute("set lock_timeout = '1s'")
        rollup.execute("update public.questions set usage_count = usage_count + 1 where id = %s", (question,))
        serving.rollback()
