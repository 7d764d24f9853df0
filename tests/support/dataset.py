"""A user with a row in every table that holds user data, written as the migrating superuser."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

import psycopg

from tests.support.identities import sign_up


@dataclass(frozen=True)
class UserData:
    user_id: uuid.UUID
    subscription_id: uuid.UUID
    session_id: uuid.UUID
    session_question_id: uuid.UUID
    question_id: uuid.UUID
    response_id: uuid.UUID


# Starting a session serves its first questions; rows a test adds go after them.
NEXT_POSITION = "(select coalesce(max(position), 0) + 1 from public.session_questions where session_id = %s)"


def add_question(conn: psycopg.Connection, content: str | None = None) -> uuid.UUID:
    row = conn.execute(
        """insert into public.questions (content, category, difficulty, experience_level, source)
           values (%s, 'behavioral', 'easy', 'entry', 'ai') returning id""",
        (content or f"Tell me about a decision you regret ({uuid.uuid4().hex[:8]}).",),
    ).fetchone()
    return row[0]


def populate_user(conn: psycopg.Connection, *, email: str | None = None) -> UserData:
    user_id = sign_up(conn, email=email)
    one = lambda sql, *params: conn.execute(sql, params).fetchone()[0]  # noqa: E731
    conn.execute(
        "insert into public.user_profiles (user_id, target_role, skills) values (%s, 'software engineer', '{sql}')",
        (user_id,),
    )
    customer = f"cus_{user_id.hex[:14]}"
    conn.execute(
        "insert into public.billing_customers (user_id, stripe_customer_id) values (%s, %s)",
        (user_id, customer),
    )
    plan_id = one("select id from public.plans where code = 'monthly'")
    subscription_id = one(
        """insert into public.subscriptions (user_id, plan_id, status, stripe_customer_id, stripe_subscription_id,
                                             current_period_start, current_period_end)
           values (%s, %s, 'active', %s, %s, now(), now() + interval '1 month') returning id""",
        user_id,
        plan_id,
        customer,
        f"sub_{user_id.hex[:14]}",
    )
    conn.execute(
        """insert into public.subscription_changes (subscription_id, user_id, stripe_event_id, new_status,
                                                    new_plan_id, occurred_at)
           values (%s, %s, %s, 'active', %s, now())""",
        (subscription_id, user_id, f"evt_{user_id.hex[:14]}", plan_id),
    )
    conn.execute(
        "insert into public.usage_counters (user_id, metric, period_start, used) values (%s, 'evaluations', "
        "current_date, 1)",
        (user_id,),
    )
    question_id = add_question(conn)
    session_id = one(
        "insert into public.practice_sessions (user_id, session_type) values (%s, 'quick') returning id",
        user_id,
    )
    session_question_id = one(
        f"""insert into public.session_questions (session_id, user_id, question_id, position)
           values (%s, %s, %s, {NEXT_POSITION}) returning id""",
        session_id,
        user_id,
        question_id,
        session_id,
    )
    response_id = one(
        """insert into public.responses (session_id, session_question_id, user_id, answer_text)
           values (%s, %s, %s, 'I led the migration to ...') returning id""",
        session_id,
        session_question_id,
        user_id,
    )
    conn.execute(
        "insert into public.question_ratings (user_id, question_id, rating) values (%s, %s, 4)",
        (user_id, question_id),
    )
    conn.execute("insert into public.achievements (user_id, achievement_type) values (%s, 'first_session')", (user_id,))
    conn.execute(
        """insert into public.user_progress (user_id, metric_name, period, period_start, metric_value)
           values (%s, 'questions_answered', 'all_time', '2026-01-01', 1)""",
        (user_id,),
    )
    conn.execute("insert into public.progress_totals (user_id, questions_answered) values (%s, 1)", (user_id,))
    # test_partitions populates a database migrated only up to 17: no abilities table there.
    if conn.execute("select to_regclass('public.category_abilities')").fetchone()[0] is not None:
        conn.execute(
            "insert into public.category_abilities (user_id, category, ability, answers)"
            " values (%s, 'behavioral', 0.4, 1)",
            (user_id,),
        )
    conn.execute(
        """insert into public.ai_usage (user_id, purpose, model, latency_ms, succeeded)
           values (%s, 'evaluation', 'gpt-4o-mini', 900, true)""",
        (user_id,),
    )
    return UserData(user_id, subscription_id, session_id, session_question_id, question_id, response_id)


def make_month(conn: psycopg.Connection, at: str | datetime) -> None:
    """The partitions of `at`'s month for every live partitioned table, as a database with that history has
    them: a row older than a table's oldest month has no partition (migration 33)."""
    conn.execute(
        "select private.create_month_partition(parent, (%s::timestamptz at time zone 'UTC')::date)"
        " from unnest(private.partitioned_parents()) parent",
        (at,),
    )
