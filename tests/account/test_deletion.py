"""Deleting an account: every row and object of the user goes, Stripe billing ends, and a failing outside service
leaves the deletion pending (the database untouched) until the scheduled retry finishes it."""

from __future__ import annotations

import json
import time
import uuid

import psycopg
import pytest
import stripe
from psycopg import sql
from typer.testing import CliRunner

from functions.account.deletion import Deleter
from functions.account.retry import run_retries
from prep.cli import app as console
from shared.db import DatabaseError
from shared.db.rls import acting_as
from tests.account.conftest import Accounts
from tests.support.identities import user_claims

# Every column a user id could be written into, whatever its name.
SCANNED_TYPES = ("text", "character varying", "uuid", "jsonb", "json", "text[]", "uuid[]")


def places_holding(conn: psycopg.Connection, needle: str) -> list[str]:
    """Every table.column of every schema whose value, as text, contains `needle` (catalog-driven)."""
    columns = conn.execute(
        """select n.nspname, c.relname, a.attname from pg_class c
           join pg_namespace n on n.oid = c.relnamespace
           join pg_attribute a on a.attrelid = c.oid and a.attnum > 0 and not a.attisdropped
           where c.relkind in ('r', 'p') and n.nspname not in ('pg_catalog', 'information_schema', 'pg_toast')
             and format_type(a.atttypid, null) = any(%s)""",
        (list(SCANNED_TYPES),),
    ).fetchall()
    found = []
    for schema, table, column in columns:
        query = sql.SQL("select exists (select from {}.{} where {}::text like %s)").format(
            sql.Identifier(schema), sql.Identifier(table), sql.Identifier(column)
        )
        if conn.execute(query, (f"%{needle}%",)).fetchone()[0]:
            found.append(f"{schema}.{table}.{column}")
    return found


def test_a_deleted_account_leaves_no_trace_in_any_table_the_bucket_or_stripe(accounts: Accounts) -> None:
    data, customer, subscriptions = accounts.full_user()
    other, _, other_subscriptions = accounts.full_user()
    uid = str(data.user_id)
    assert len(places_holding(accounts.conn, uid)) > 15  # the scan sees the user everywhere before

    state = accounts.deleter.request(uid, requested_by="operator")

    assert (state.status, state.stripe_done, state.storage_done) == ("deleted", True, True)
    assert places_holding(accounts.conn, uid) == []
    assert places_holding(accounts.conn, customer) == []
    assert accounts.storage.names(f"{uid}/") == []
    for subscription in subscriptions:
        assert accounts.stand_in.get(subscription)["status"] == "canceled"
    assert accounts.stripe.v1.customers.retrieve(customer).to_dict().get("deleted") is True
    # The tombstone is a hash of the id, nothing more.
    tombstone = accounts.conn.execute(
        "select user_id, completed_at is not null from private.account_deletions where user_hash = encode(sha256(%s),"
        " 'hex')",
        (uid.encode(),),
    ).fetchone()
    assert tombstone == (None, True)
    # Nobody else lost anything.
    assert len(accounts.storage.names(f"{other.user_id}/")) == 3
    assert accounts.stand_in.get(other_subscriptions[0])["status"] == "active"
    assert accounts.conn.execute(
        "select count(*) from archive.responses where user_id = %s", (other.user_id,)
    ).fetchone() == (1,)


def test_stripe_events_about_a_deleted_account_are_redacted_before_and_after(accounts: Accounts) -> None:
    data, customer, _ = accounts.full_user()
    uid, email = str(data.user_id), accounts.email(data.user_id)
    # An event about no customer that still names the user (e.g. a one-off payment by support).
    accounts.conn.execute(
        """insert into private.stripe_events (id, type, stripe_created_at, livemode, outcome, payload)
           values ('evt_no_customer', 'payment_intent.succeeded', now(), false, 'ignored', %s)""",
        (json.dumps({"data": {"object": {"object": "payment_intent", "description": f"support for {uid}"}}}),),
    )
    accounts.conn.execute(
        "insert into private.operator_alerts (kind, subject, detail) values ('duplicate_live_subscriptions', %s, %s)",
        (uid, json.dumps({"user_id": uid})),
    )
    accounts.deleter.request(uid, requested_by="operator")

    # Cancelling and deleting in Stripe sends events that arrive once the account is gone: the customer's email is
    # in them, the user id is not.
    late = {"object": "customer", "id": customer, "email": email, "name": "Deleted Person"}
    result = accounts.database.call(
        "service.apply_stripe_event",
        {
            "event": {
                "id": "evt_late_customer_deleted",
                "type": "customer.deleted",
                "created": "2026-12-04T12:00:00+00:00",
                "payload": {"type": "customer.deleted", "data": {"object": late}},
            },
            "snapshot": {"deleted_customer": customer},
        },
    )
    assert result["outcome"] == "applied"
    # The subscription's cancellation names the user in its metadata: not applied, not alerted, not kept.
    late_subscription = accounts.database.call(
        "service.apply_stripe_event",
        {
            "event": {
                "id": "evt_late_subscription_deleted",
                "type": "customer.subscription.deleted",
                "created": "2026-12-04T12:00:00+00:00",
                "payload": {"data": {"object": {"customer": customer, "metadata": {"user_id": uid}}}},
            },
            "snapshot": {
                "version": "2026-12-04T12:00:00+00:00",
                "subscription": {
                    "stripe_subscription_id": "sub_late",
                    "stripe_customer_id": customer,
                    "status": "canceled",
                    "price_id": None,
                    "price_lookup_key": "monthly",
                    "user_id": uid,
                },
            },
        },
    )
    assert late_subscription == {"outcome": "applied", "change": "unchanged"}
    assert places_holding(accounts.conn, uid) == []
    assert places_holding(accounts.conn, email) == []
    assert places_holding(accounts.conn, customer) == []
    assert accounts.conn.execute(
        'select count(*) from private.stripe_events where payload = \'{"redacted": "account deleted"}\''
        " and id in ('evt_no_customer', 'evt_late_customer_deleted', 'evt_late_subscription_deleted')"
    ).fetchone() == (3,)


def test_stripe_failing_leaves_the_database_untouched_and_the_scheduled_retry_finishes(accounts: Accounts) -> None:
    data, _, subscriptions = accounts.full_user()
    uid = str(data.user_id)
    accounts.stand_in.outage = True

    state = accounts.deleter.request(uid, requested_by="user", confirm=accounts.email(data.user_id))

    assert (state.status, state.stripe_done, state.storage_done) == ("pending", False, False)
    assert state.attempts == 1
    assert (state.last_error or "").startswith("stripe:")
    assert accounts.conn.execute("select count(*) from public.responses where user_id = %s", (uid,)).fetchone() == (1,)
    assert len(accounts.storage.names(f"{uid}/")) == 3
    assert run_retries(accounts.deleter, batch=10) == {"deleted": 0, "pending": 0}  # not due yet

    accounts.stand_in.outage = False
    accounts.conn.execute("update private.account_deletions set next_attempt_at = now() where user_id = %s", (uid,))
    assert run_retries(accounts.deleter, batch=10) == {"deleted": 1, "pending": 0}
    assert places_holding(accounts.conn, uid) == []
    assert all(accounts.stand_in.get(s)["status"] == "canceled" for s in subscriptions)


def test_storage_failing_leaves_the_database_untouched_and_the_scheduled_retry_finishes(accounts: Accounts) -> None:
    data, _, subscriptions = accounts.full_user()
    uid = str(data.user_id)
    accounts.storage.fail_next = 1

    state = accounts.deleter.request(uid, requested_by="operator")

    assert (state.status, state.stripe_done, state.storage_done) == ("pending", True, False)
    assert "HTTP 503" in (state.last_error or "")
    assert accounts.conn.execute("select count(*) from public.users where id = %s", (uid,)).fetchone() == (1,)
    assert accounts.conn.execute("select count(*) from archive.responses where user_id = %s", (uid,)).fetchone() == (1,)
    # Billing is over in Stripe (the cancellation events have not arrived: the rows still say active).
    assert all(accounts.stand_in.get(s)["status"] == "canceled" for s in subscriptions)

    accounts.conn.execute("update private.account_deletions set next_attempt_at = now() where user_id = %s", (uid,))
    assert run_retries(accounts.deleter, batch=10) == {"deleted": 1, "pending": 0}
    assert places_holding(accounts.conn, uid) == []
    assert accounts.storage.names(f"{uid}/") == []


def test_a_pending_deletion_refuses_new_sessions_answers_and_recordings(accounts: Accounts) -> None:
    data, _, _ = accounts.full_user()
    accounts.storage.fail_next = 1
    accounts.deleter.request(str(data.user_id), requested_by="operator")
    with (
        pytest.raises(psycopg.Error, match="being deleted"),
        acting_as(accounts.conn, user_claims(data.user_id)),
    ):
        accounts.conn.execute(
            "insert into public.practice_sessions (user_id, session_type) values (%s, 'quick')", (data.user_id,)
        )
    with acting_as(accounts.conn, user_claims(data.user_id)):
        assert accounts.conn.execute(
            "select public.stored_recordings(), deletion_requested_at is not null from public.users"
        ).fetchone() == (
            200,
            True,
        )


def test_a_pending_deletion_refuses_checkout(accounts: Accounts) -> None:
    data, _, _ = accounts.full_user()
    accounts.storage.fail_next = 1
    accounts.deleter.request(str(data.user_id), requested_by="operator")
    with pytest.raises(DatabaseError) as refused:
        accounts.database.call("service.checkout_context", {"user_id": str(data.user_id), "plan_code": "monthly"})
    assert refused.value.status == 409
    assert "being deleted" in refused.value.detail


def test_answers_are_purged_in_batches_only_once_stripe_and_storage_are_done(accounts: Accounts) -> None:
    data, _, _ = accounts.full_user()
    user = str(data.user_id)
    answers = accounts.conn.execute(
        "select (select count(*) from public.responses where user_id = %(u)s)"
        " + (select count(*) from archive.responses where user_id = %(u)s)",
        {"u": user},
    ).fetchone()[0]
    assert answers >= 2
    accounts.storage.fail_next = 1
    accounts.deleter.request(user, requested_by="operator")
    with pytest.raises(DatabaseError) as refused:
        accounts.database.call("service.purge_account_answers", {"user_id": user, "batch_size": 1})
    assert refused.value.status == 409
    accounts.deleter.recordings.delete_folder(user)
    accounts.database.call("service.record_account_deletion_step", {"user_id": user, "step": "storage"})
    purged = []
    while batch := accounts.database.call("service.purge_account_answers", {"user_id": user, "batch_size": 1}):
        purged.append(batch)
    assert purged == [1] * answers
    state = accounts.database.call("service.complete_account_deletion", {"user_id": user})
    assert state["status"] == "deleted"
    assert accounts.database.call("service.purge_account_answers", {"user_id": user}) == 0


def test_the_deleter_pauses_after_each_purged_batch_as_long_as_it_took(
    accounts: Accounts, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each batch's burst of WAL is followed by as long a pause (bench/account_deletion.py: other users' write p95
    during a heavy deletion 1.37 / 1.85 without the pauses, 1.06 / 1.11 with them, against <= 1.2)."""
    data, _, _ = accounts.full_user()
    user = str(data.user_id)
    purge_seconds: list[float] = []
    original_call = accounts.database.call

    def timed_call(function: str, *args: object, **kwargs: object) -> object:
        started = time.monotonic()
        result = original_call(function, *args, **kwargs)
        if function == "service.purge_account_answers" and result:
            purge_seconds.append(time.monotonic() - started)
        return result

    pauses: list[float] = []
    monkeypatch.setattr(accounts.database, "call", timed_call)
    deleter = Deleter(accounts.database, accounts.stripe, accounts.deleter.recordings, pause=pauses.append)

    state = deleter.request(user, requested_by="operator")

    assert state.status == "deleted"
    assert len(pauses) == len(purge_seconds) >= 1
    for pause, took in zip(pauses, purge_seconds, strict=True):
        assert pause >= took * 0.9


def test_deleting_a_billed_user_outside_the_flow_is_still_refused(accounts: Accounts) -> None:
    data, _, _ = accounts.full_user()
    with pytest.raises(psycopg.Error, match="Stripe keeps charging"):
        accounts.conn.execute("delete from auth.users where id = %s", (data.user_id,))


def test_completing_before_stripe_and_storage_are_done_is_refused(accounts: Accounts) -> None:
    data, _, _ = accounts.full_user()
    accounts.stand_in.outage = True
    accounts.deleter.request(str(data.user_id), requested_by="operator")
    with pytest.raises(DatabaseError) as refused:
        accounts.database.call("service.complete_account_deletion", {"user_id": str(data.user_id)})
    assert refused.value.status == 409


def test_the_console_names_an_unknown_account(accounts: Accounts, database_url: str, monkeypatch) -> None:
    monkeypatch.setenv("DATABASE_URL", database_url)
    for who in ("nobody@example.test", str(uuid.uuid4())):
        result = CliRunner().invoke(console, ["users", "delete", who, "--yes"])
        assert result.exit_code == 1
        assert f"no account with id or email '{who}'" in result.output


def test_the_stand_in_refuses_a_prorated_or_invoiced_cancellation(accounts: Accounts) -> None:
    _, _, subscriptions = accounts.full_user()
    for flag in ("prorate", "invoice_now"):
        with pytest.raises(stripe.InvalidRequestError, match=f"{flag}=false only"):
            accounts.stripe.v1.subscriptions.cancel(subscriptions[0], {flag: True})
    assert accounts.stand_in.get(subscriptions[0])["status"] == "active"


def test_the_console_exports_every_page_into_one_file(
    accounts: Accounts, database_url: str, monkeypatch, tmp_path
) -> None:
    data, _, _ = accounts.full_user()
    monkeypatch.setenv("DATABASE_URL", database_url)
    out = tmp_path / "account.json"
    result = CliRunner().invoke(console, ["users", "export", accounts.email(data.user_id), "--out", str(out)])
    assert result.exit_code == 0, result.output
    export = json.loads(out.read_text())
    assert export["user_id"] == str(data.user_id)
    assert len(export["answers"]) == 2  # one live, one archived
    assert export["next"] is None
