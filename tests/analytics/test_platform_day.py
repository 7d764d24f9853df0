"""service.aggregate_platform_day: every metric of a UTC day from the source tables, idempotently."""

from __future__ import annotations

import uuid
from datetime import date

import psycopg
import pytest

from tests.support.dataset import make_month
from tests.support.identities import sign_up

DAY = date(2026, 3, 10)
AT = "2026-03-10 12:00+00"
BEFORE = "2026-03-09 23:30+00"  # the previous UTC day: must not count


@pytest.fixture
def conn(database_url: str) -> psycopg.Connection:
    with psycopg.connect(database_url, autocommit=True) as connection:
        connection.execute("delete from public.analytics_daily where metric_date = %s", (DAY,))
        yield connection


def metrics(conn: psycopg.Connection) -> dict[str, tuple]:
    rows = conn.execute(
        "select metric_name, metric_value, details from public.analytics_daily where metric_date = %s", (DAY,)
    ).fetchall()
    return {name: (float(value), details) for name, value, details in rows}


def session_on(conn: psycopg.Connection, user: uuid.UUID, kind: str, started: str, *, completed: bool) -> uuid.UUID:
    session = conn.execute(
        "insert into public.practice_sessions (user_id, session_type) values (%s, %s) returning id", (user, kind)
    ).fetchone()[0]
    conn.execute(
        "update public.practice_sessions set started_at = %s where id = %s", (started, session)
    )  # history: when it really started
    if completed:
        conn.execute("update public.practice_sessions set status = 'completed' where id = %s", (session,))
        conn.execute("update public.practice_sessions set ended_at = %s where id = %s", (started, session))
    return session


def subscription_history(conn: psycopg.Connection, user: uuid.UUID, plan: str, *steps: tuple) -> None:
    sub = conn.execute(
        "insert into public.subscriptions (user_id, plan_id, status, stripe_customer_id, stripe_subscription_id)"
        " select %s, id, %s, 'cus_' || %s, 'sub_' || %s from public.plans where code = %s returning id",
        (user, steps[-1][1], user.hex, user.hex, plan),
    ).fetchone()[0]
    for old, new, at in steps:
        conn.execute(
            "insert into public.subscription_changes (subscription_id, user_id, old_status, new_status, old_plan_id,"
            " new_plan_id, occurred_at) select %s, %s, %s, %s, case when %s::text is null then null else id end, id, %s"
            " from public.plans where code = %s",
            (sub, user, old, new, old, at, plan),
        )


def test_a_day_of_activity_becomes_its_metrics(conn: psycopg.Connection) -> None:
    users = [sign_up(conn) for _ in range(3)]
    conn.execute("update public.users set created_at = %s where id = any(%s)", (AT, users[:2]))
    make_month(conn, AT)
    first = session_on(conn, users[0], "quick", AT, completed=False)
    session_on(conn, users[1], "full", AT, completed=False)
    session_on(conn, users[2], "quick", BEFORE, completed=True)
    served = conn.execute(
        "select id from public.session_questions where session_id = %s order by position", (first,)
    ).fetchall()
    conn.execute("update public.session_questions set served_at = %s where session_id = %s", (AT, first))
    conn.execute("update public.session_questions set widening = 'generated' where id = %s", (served[0][0],))
    for (session_question,), score in zip(served[:2], (60, 80), strict=True):
        conn.execute(
            "insert into public.responses (session_id, session_question_id, user_id, answer_text, created_at,"
            " evaluation_status, ai_score, evaluated_at) values (%s, %s, %s, 'answer', %s, 'completed', %s, %s)",
            (first, session_question, users[0], AT, score, AT),
        )
    conn.execute("update public.practice_sessions set status = 'completed' where id = %s", (first,))
    conn.execute("update public.practice_sessions set ended_at = %s where id = %s", (AT, first))
    conn.execute(
        "insert into public.ai_usage (purpose, model, cost_usd, latency_ms, succeeded, created_at) values"
        " ('question_generation', 'm', 0.002, 900, true, %s), ('evaluation', 'm', 0.001, 700, true, %s)",
        (AT, AT),
    )
    conn.execute(
        "update public.questions set created_at = %s where id = (select question_id from"
        " public.session_questions where id = %s)",
        (AT, served[0][0]),
    )
    conn.execute(
        "update public.questions set source = 'ai' where id = (select question_id from"
        " public.session_questions where id = %s)",
        (served[0][0],),
    )
    subscription_history(conn, users[0], "monthly", (None, "trialing", "2026-03-01"), ("trialing", "active", AT))
    subscription_history(conn, users[1], "weekly", (None, "trialing", AT))
    subscription_history(conn, users[2], "monthly", (None, "active", "2026-02-01"), ("active", "canceled", AT))

    result = conn.execute("select service.aggregate_platform_day(%s)", (DAY,)).fetchone()[0]
    assert result["metrics"] == result["changed"] == 20
    m = metrics(conn)
    assert m["signups"][0] == 2
    assert m["active_users.daily"][0] == 2
    assert m["sessions.started"] == (2, {"quick": 1, "full": 1})
    assert m["sessions.completed"] == (1, {"quick": 1})
    assert m["responses"][0] == 2
    assert m["evaluations"][0] == 2
    assert m["average_score"][0] == 70
    assert m["questions.served"] == (3, {"from_bank": 2, "generated": 1})
    assert m["questions.cache_hit_ratio"][0] == pytest.approx(2 / 3, abs=1e-4)
    assert m["ai.calls"] == (2, {"question_generation": 1, "evaluation": 1})
    assert m["ai.cost_usd"][0] == pytest.approx(0.003)
    assert m["ai.cost_saved_by_cache_usd"][0] > 0
    assert m["subscriptions.active"] == (2, {"monthly": 1, "weekly": 1})
    assert m["mrr_usd"][0] == 29  # the trialing weekly plan pays nothing yet
    assert m["trials.started"][0] == 1
    assert m["trials.converted"][0] == 1
    assert m["subscriptions.churned"][0] == 1


def test_running_a_day_again_changes_nothing_and_late_data_is_picked_up(conn: psycopg.Connection) -> None:
    conn.execute("select service.aggregate_platform_day(%s)", (DAY,))
    before = metrics(conn)
    again = conn.execute("select service.aggregate_platform_day(%s)", (DAY,)).fetchone()[0]
    assert again["changed"] == 0
    assert metrics(conn) == before

    late = sign_up(conn)
    conn.execute("update public.users set created_at = %s where id = %s", (AT, late))
    rerun = conn.execute("select service.aggregate_platform_day(%s)", (DAY,)).fetchone()[0]
    assert rerun["changed"] == 1
    assert metrics(conn)["signups"][0] == before["signups"][0] + 1


def test_a_day_with_nothing_scored_has_no_average_score(conn: psycopg.Connection) -> None:
    quiet = date(2026, 3, 11)
    result = conn.execute("select service.aggregate_platform_day(%s)", (quiet,)).fetchone()[0]
    names = {
        row[0]
        for row in conn.execute("select metric_name from public.analytics_daily where metric_date = %s", (quiet,))
    }
    assert result["metrics"] == 19
    assert "evaluations" in names
    assert "average_score" not in names
