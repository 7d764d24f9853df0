"""`prep billing resync`: state missed by the webhook is repaired from Stripe's API."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from prep.cli import app
from tests.billing.conftest import Billing


@pytest.fixture
def environment(billing: Billing, database_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", database_url)
    monkeypatch.setenv("STRIPE_SECRET_KEY", "sk_test_stand_in")
    monkeypatch.setenv("STRIPE_API_BASE", billing.stand_in.base_url or "")


@pytest.mark.usefixtures("environment")
def test_resync_one_user_applies_what_no_event_delivered(billing: Billing) -> None:
    user, subscription, events = billing.subscribe()
    billing.deliver_all([e for e in events if e["type"] == "checkout.session.completed"])
    billing.stand_in.advance_clock(8 * 86_400)
    billing.stand_in.end_trial(subscription)  # events lost: never delivered
    assert billing.row(subscription)["status"] == "trialing"

    result = CliRunner().invoke(app, ["billing", "resync", "--user", user])
    assert result.exit_code == 0, result.output
    assert f"{subscription}: updated" in result.output
    assert billing.row(subscription)["status"] == "active"
    assert billing.changes(subscription)[-1][:2] == ("trialing", "active")


@pytest.mark.usefixtures("environment")
def test_resync_all_walks_every_subscription_and_reports_strays(billing: Billing) -> None:
    subscribed = [billing.subscribe() for _ in range(3)]
    canceled = subscribed[0][1]
    billing.stand_in.cancel(canceled)
    # A subscription made outside checkout (say, in Stripe's dashboard): no user can be found for it.
    stray = billing.stand_in._objects[subscribed[2][1]]
    stray["metadata"] = {}
    stray["customer"] = billing.stand_in._create_customer({"email": "stray@example.test"}, "")["id"]

    result = CliRunner().invoke(app, ["billing", "resync", "--all"])
    assert result.exit_code == 1, result.output
    assert "2 created" in result.output
    assert "1 unlinked" in result.output
    assert "prep billing alerts" in result.output
    assert billing.row(canceled)["status"] == "canceled"
    assert billing.conn.execute(
        "select count(*) from private.operator_alerts"
        " where kind = 'unlinked_customer' and subject = %s and resolved_at is null",
        (stray["customer"],),
    ).fetchone() == (1,)


def _unlinked(billing: Billing) -> tuple[str, str, str]:
    """A subscription event of a customer nobody is linked to, delivered: recorded 'unlinked'."""
    user, subscription, events = billing.subscribe()
    billing.conn.execute("delete from public.billing_customers where user_id = %s", (user,))
    created = next(e for e in events if e["type"] == "customer.subscription.created")
    created["data"]["object"]["metadata"] = {}
    assert billing.deliver(created).json()["outcome"] == "unlinked"
    return user, subscription, created["data"]["object"]["customer"]


def _alert_open(billing: Billing, customer: str) -> bool:
    return billing.conn.execute(
        "select exists (select from private.operator_alerts"
        " where kind = 'unlinked_customer' and subject = %s and resolved_at is null)",
        (customer,),
    ).fetchone()[0]


@pytest.mark.usefixtures("environment")
def test_resync_applies_what_waited_for_a_customer_once_stripe_names_its_user(billing: Billing) -> None:
    user, subscription, customer = _unlinked(billing)
    # Stripe's copy names the user (support added the metadata in the dashboard; that event was lost).
    assert billing.stand_in.get(subscription)["metadata"] == {"user_id": user}

    result = CliRunner().invoke(app, ["billing", "resync", "--all"])
    assert result.exit_code == 0, result.output
    assert str(billing.row(subscription)["user_id"]) == user
    assert not _alert_open(billing, customer)
    assert billing.conn.execute(
        "select count(*) from private.stripe_events where stripe_customer_id = %s and pending_snapshot is not null",
        (customer,),
    ).fetchone() == (0,)


@pytest.mark.usefixtures("environment")
def test_link_ties_a_customer_to_a_user_and_applies_its_recorded_events(billing: Billing) -> None:
    user, subscription, customer = _unlinked(billing)
    assert _alert_open(billing, customer)
    result = CliRunner().invoke(app, ["billing", "link", "--user", user, "--customer", customer])
    assert result.exit_code == 0, result.output
    assert "Recorded events applied: 1" in result.output
    assert str(billing.row(subscription)["user_id"]) == user
    assert not _alert_open(billing, customer)


@pytest.mark.usefixtures("environment")
def test_alerts_lists_open_alerts_and_resolve_closes_one(billing: Billing) -> None:
    _, _, customer = _unlinked(billing)
    listed = CliRunner().invoke(app, ["billing", "alerts", "--json"])
    assert listed.exit_code == 0, listed.output
    (found,) = [a for a in json.loads(listed.output) if a["subject"] == customer]
    assert (found["kind"], found["resolved_at"]) == ("unlinked_customer", None)
    assert customer in CliRunner().invoke(app, ["billing", "alerts"]).output

    closed = CliRunner().invoke(app, ["billing", "resolve", str(found["id"]), "--note", "test customer, ignored"])
    assert closed.exit_code == 0, closed.output
    assert not _alert_open(billing, customer)
    again = CliRunner().invoke(app, ["billing", "resolve", str(found["id"]), "--note", "twice"])
    assert again.exit_code == 1
    assert "no open alert" in again.output


def test_resync_needs_a_scope() -> None:
    result = CliRunner().invoke(app, ["billing", "resync"])
    assert result.exit_code != 0
    assert "choose --user ID or --all" in result.output
