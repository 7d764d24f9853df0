"""Signup trigger, cascade deletion, seed idempotency and entitlements, on the real schema."""

from __future__ import annotations

import psycopg
import pytest

from prep import migrations
from shared.db.rls import acting_as
from tests.support.dataset import populate_user
from tests.support.identities import sign_up, user_claims
from tests.support.peers import check_in, matched_room, under_way


def test_signup_creates_the_public_user_from_auth_metadata(db: psycopg.Connection) -> None:
    user_id = sign_up(
        db,
        email="ada@example.test",
        provider="google",
        user_metadata={"full_name": "Ada Lovelace", "avatar_url": "https://img.test/ada.png", "sub": "g-123"},
    )
    row = db.execute(
        "select email, provider, provider_id, display_name, avatar_url from public.users where id = %s",
        (user_id,),
    ).fetchone()
    assert row == ("ada@example.test", "google", "g-123", "Ada Lovelace", "https://img.test/ada.png")


def test_email_change_in_auth_follows_but_custom_display_name_is_kept(db: psycopg.Connection) -> None:
    user_id = sign_up(db, email="old@example.test", user_metadata={"name": "Old Name"})
    db.execute("update public.users set display_name = 'Chosen Name' where id = %s", (user_id,))
    db.execute(
        "update auth.users set email = 'new@example.test', raw_user_meta_data = '{\"name\": \"X\"}' where id = %s",
        (user_id,),
    )
    assert db.execute("select email, display_name from public.users where id = %s", (user_id,)).fetchone() == (
        "new@example.test",
        "Chosen Name",
    )


def test_a_user_stripe_still_charges_cannot_be_deleted_and_nothing_is_lost(db: psycopg.Connection) -> None:
    data = populate_user(db)  # an active monthly subscription
    with pytest.raises(psycopg.Error) as refused, db.transaction():
        db.execute("delete from auth.users where id = %s", (data.user_id,))
    assert refused.value.sqlstate == "PT409"
    assert "which Stripe keeps charging" in refused.value.diag.message_primary
    assert "prep users delete" in refused.value.diag.message_hint
    assert db.execute("select count(*) from auth.users where id = %s", (data.user_id,)).fetchone()[0] == 1
    assert db.execute("select count(*) from public.subscriptions where user_id = %s", (data.user_id,)).fetchone()[0]

    # Set to end with its period, Stripe charges no more: the user can go.
    db.execute("update public.subscriptions set cancel_at_period_end = true where user_id = %s", (data.user_id,))
    db.execute("delete from auth.users where id = %s", (data.user_id,))
    assert db.execute("select count(*) from public.users where id = %s", (data.user_id,)).fetchone()[0] == 0


def test_deleting_the_auth_user_deletes_all_their_data(db: psycopg.Connection) -> None:
    data = populate_user(db)
    keep = populate_user(db)
    room = matched_room(db, data.user_id, keep.user_id)  # they met in a peer session
    under_way(db, room)
    check_in(db, room.id, keep.user_id)
    for user in (data.user_id, keep.user_id):
        db.execute("insert into public.peer_messages (room_id, user_id, body) values (%s, %s, 'Hi')", (room.id, user))
    db.execute("update public.subscriptions set status = 'canceled' where user_id = %s", (data.user_id,))
    for user in (data, keep):
        db.execute(
            "insert into public.question_reports (user_id, question_id, reason) values (%s, %s, 'wrong')",
            (user.user_id, user.question_id),
        )
    tables = db.execute(
        """select format('%I.%I', c.table_schema, c.table_name)
           from information_schema.columns c join information_schema.tables t using (table_schema, table_name)
           where c.column_name = 'user_id' and t.table_type = 'BASE TABLE'
             and c.table_schema in ('public', 'private')
             -- a partition's rows are its parent's (migration 17)
             and not (select relispartition from pg_class
                      where oid = format('%I.%I', c.table_schema, c.table_name)::regclass)
             -- rows only for accounts being deleted (tests/account covers it)
             and (c.table_schema, c.table_name) <> ('private', 'account_deletions')"""
    ).fetchall()
    assert len(tables) >= 12

    db.execute("delete from auth.users where id = %s", (data.user_id,))

    for (table,) in tables:
        left = db.execute(f"select count(*) from {table} where user_id = %s", (data.user_id,)).fetchone()[0]
        assert left == 0, f"{table} still holds rows of the deleted user"
        others = db.execute(f"select count(*) from {table} where user_id = %s", (keep.user_id,)).fetchone()[0]
        assert others >= 1, f"{table} lost another user's rows"
    assert db.execute("select count(*) from public.users where id = %s", (data.user_id,)).fetchone()[0] == 0
    # AI spend stays in the platform's books, anonymised.
    assert db.execute("select count(*) from public.ai_usage where user_id is null").fetchone()[0] == 1


def test_seed_is_idempotent(db: psycopg.Connection) -> None:
    def snapshot() -> list[tuple]:
        return db.execute(
            "select (select count(*) from public.questions), (select count(*) from public.plans),"
            " (select string_agg(code || ':' || coalesce(stripe_price_id, '-'), ',' order by code) from public.plans)"
        ).fetchall()

    before = snapshot()
    migrations.seed(db)
    migrations.seed(db)
    assert snapshot() == before


def test_plans_match_the_price_list(db: psycopg.Connection) -> None:
    rows = db.execute(
        "select code, price_cents, billing_interval::text, trial_days from public.plans order by sort_order"
    ).fetchall()
    assert rows == [("free", 0, None, 0), ("weekly", 900, "week", 7), ("monthly", 2900, "month", 7)]


@pytest.mark.parametrize(
    ("status", "period_started_days_ago", "expected_plan"),
    [
        ("trialing", 0, "monthly"),
        ("active", 3, "monthly"),
        ("past_due", 1, "monthly"),  # inside the 3-day grace period
        ("past_due", 5, "free"),  # grace period over
        ("canceled", 0, "free"),
        ("unpaid", 0, "free"),
        ("paused", 0, "free"),
    ],
)
def test_entitlements_follow_subscription_status(
    db: psycopg.Connection, status: str, period_started_days_ago: int, expected_plan: str
) -> None:
    data = populate_user(db)
    db.execute(
        "update public.subscriptions set status = %s, current_period_start = now() - make_interval(days => %s)"
        " where id = %s",
        (status, period_started_days_ago, data.subscription_id),
    )
    plan, is_paid = db.execute("select plan_code, is_paid from public.entitlements(%s)", (data.user_id,)).fetchone()
    assert (plan, is_paid) == (expected_plan, expected_plan != "free")


def test_a_user_cannot_learn_another_users_entitlements(db: psycopg.Connection) -> None:
    paying = populate_user(db)
    curious = sign_up(db)
    with acting_as(db, user_claims(curious)):
        assert db.execute("select plan_code from public.entitlements(%s)", (paying.user_id,)).fetchone() == ("free",)
        assert db.execute("select plan_code from public.entitlements()").fetchone() == ("free",)
    with acting_as(db, user_claims(paying.user_id)):
        assert db.execute("select plan_code from public.entitlements()").fetchone() == ("monthly",)
