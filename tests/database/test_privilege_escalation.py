"""A signed-in user trying to give themselves what only the service may grant, and how the schema says no."""

from __future__ import annotations

import psycopg
import pytest

from shared.db.rls import acting_as
from tests.support.dataset import NEXT_POSITION, UserData, add_question, populate_user
from tests.support.identities import sign_up, user_claims


@pytest.fixture
def me(db: psycopg.Connection) -> UserData:
    return populate_user(db)


def refused(db: psycopg.Connection, me: UserData, statement: str, *params: object) -> str:
    """Run `statement` as the user; return the error it raised (the test fails if it succeeded)."""
    with pytest.raises(psycopg.errors.InsufficientPrivilege) as caught, acting_as(db, user_claims(me.user_id)):
        db.execute(statement, params)  # type: ignore[arg-type]
    return str(caught.value)


@pytest.mark.parametrize(
    "statement",
    [
        "update public.subscriptions set status = 'active' where user_id = %s",
        "update public.subscriptions set plan_id = (select id from public.plans where code = 'weekly')"
        " where user_id = %s",
        "insert into public.subscriptions (user_id, plan_id, status, stripe_customer_id, stripe_subscription_id)"
        " select %s, id, 'active', 'cus_x', 'sub_free_lunch' from public.plans where code = 'monthly'",
        "update public.usage_counters set used = 0 where user_id = %s",
        "delete from public.usage_counters where user_id = %s",
        "insert into public.achievements (user_id, achievement_type) values (%s, 'perfect_score')",
        "update public.user_progress set metric_value = 1000 where user_id = %s",
        "update public.responses set ai_score = 100 where user_id = %s",
        "update public.responses set evaluation_status = 'completed', feedback = 'Flawless' where user_id = %s",
        "update public.practice_sessions set overall_score = 100 where user_id = %s",
        "update public.billing_customers set stripe_customer_id = 'cus_someone_else' where user_id = %s",
        # Clearing a pending deletion would let the account write again while it is being erased.
        "update public.users set deletion_requested_at = null where id = %s",
    ],
)
def test_users_cannot_write_what_the_service_owns(db: psycopg.Connection, me: UserData, statement: str) -> None:
    assert "permission denied" in refused(db, me, statement, me.user_id)


def test_a_user_cannot_insert_an_answer_with_a_score(db: psycopg.Connection, me: UserData) -> None:
    served = db.execute(
        "insert into public.session_questions (session_id, user_id, question_id, position)"
        f" values (%s, %s, %s, {NEXT_POSITION}) returning id",
        (me.session_id, me.user_id, add_question(db), me.session_id),
    ).fetchone()[0]
    error = refused(
        db, me,
        "insert into public.responses (session_id, session_question_id, user_id, answer_text, ai_score)"
        " values (%s, %s, %s, 'answer', 100)",
        me.session_id, served, me.user_id,
    )  # fmt: skip
    assert "permission denied" in error


def test_question_statistics_are_not_writable(db: psycopg.Connection, me: UserData) -> None:
    error = refused(db, me, "update public.questions set rating_avg = 5, rating_count = 999 where id = %s",
                    me.question_id)  # fmt: skip
    assert "permission denied" in error


def test_a_user_cannot_move_their_rows_to_another_user(db: psycopg.Connection, me: UserData) -> None:
    victim = sign_up(db)
    error = refused(db, me, "update public.user_profiles set user_id = %s where user_id = %s", victim, me.user_id)
    assert "permission denied" in error  # the owner column is not the client's to write at all


def test_a_user_cannot_touch_another_users_rows(db: psycopg.Connection, me: UserData) -> None:
    victim = populate_user(db)
    with acting_as(db, user_claims(me.user_id)):
        touched = [
            db.execute("update public.user_profiles set target_role = 'pwned' where user_id = %s",
                       (victim.user_id,)).rowcount,
            db.execute("update public.responses set answer_text = 'pwned' where id = %s",
                       (victim.response_id,)).rowcount,
            db.execute("delete from public.question_ratings where user_id = %s", (victim.user_id,)).rowcount,
            db.execute("update public.practice_sessions set status = 'abandoned' where id = %s",
                       (victim.session_id,)).rowcount,
        ]  # fmt: skip
    assert touched == [0, 0, 0, 0]
    assert db.execute("select target_role from public.user_profiles where user_id = %s",
                      (victim.user_id,)).fetchone() == ("software engineer",)  # fmt: skip


def test_a_user_cannot_answer_in_someone_elses_session(db: psycopg.Connection, me: UserData) -> None:
    victim = populate_user(db)
    error = refused(
        db, me,
        "insert into public.responses (session_id, session_question_id, user_id, answer_text)"
        " values (%s, %s, %s, 'sneaky')",
        victim.session_id, victim.session_question_id, me.user_id,
    )  # fmt: skip
    assert "row-level security" in error


def test_a_user_cannot_rate_a_question_never_served_to_them(db: psycopg.Connection, me: UserData) -> None:
    unseen = add_question(db)
    error = refused(db, me, "insert into public.question_ratings (user_id, question_id, rating) values (%s, %s, 5)",
                    me.user_id, unseen)  # fmt: skip
    assert "row-level security" in error


def test_a_finished_session_stays_finished(db: psycopg.Connection, me: UserData) -> None:
    with acting_as(db, user_claims(me.user_id)):
        db.execute("update public.practice_sessions set status = 'completed' where id = %s", (me.session_id,))
    with (
        pytest.raises(psycopg.Error, match="already completed") as refused,
        acting_as(db, user_claims(me.user_id)),
    ):
        db.execute("update public.practice_sessions set status = 'in_progress' where id = %s", (me.session_id,))
    assert refused.value.sqlstate == "PT409"


def test_no_answers_after_the_session_ended(db: psycopg.Connection, me: UserData) -> None:
    db.execute("update public.practice_sessions set status = 'completed' where id = %s", (me.session_id,))
    with pytest.raises(psycopg.Error, match="answers are closed") as refused, acting_as(db, user_claims(me.user_id)):
        db.execute("update public.responses set answer_text = 'late edit' where id = %s", (me.response_id,))
    assert refused.value.sqlstate == "PT409"


def test_admin_role_comes_from_app_metadata_only(db: psycopg.Connection, me: UserData) -> None:
    db.execute(
        "insert into public.analytics_daily (metric_date, metric_name, metric_value) values (current_date, 'x', 1)"
    )
    count = "select count(*) from public.analytics_daily"
    with acting_as(db, user_claims(me.user_id, user_metadata={"role": "admin"})):
        assert db.execute(count).fetchone()[0] == 0
    with acting_as(db, user_claims(me.user_id, app_metadata={"role": "admin"})):
        assert db.execute(count).fetchone()[0] == 1


@pytest.mark.parametrize("role", ["anon", "authenticated"])
def test_private_and_service_schemas_are_closed_to_api_roles(db: psycopg.Connection, role: str) -> None:
    # authenticated may use schema private for recommend_next's two invoker helpers (migration 28), and nothing
    # else there (tests/database/test_security_catalog.py): its tables are refused one by one.
    private_refusal = "permission denied for table" if role == "authenticated" else "permission denied for schema"
    for statement, refused in (
        ("select * from private.stripe_events", private_refusal),
        ("select * from private.operator_alerts", private_refusal),
        ("select service.operator_alerts()", "permission denied for schema"),
        ("select service.no_such_function()", "permission denied for schema"),
    ):
        with (
            pytest.raises(psycopg.errors.InsufficientPrivilege, match=refused),
            acting_as(db, {"role": role}),
        ):
            db.execute(statement)  # type: ignore[arg-type]
