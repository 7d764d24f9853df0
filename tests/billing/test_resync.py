"""`prep billing resync`: state missed by the webhook is repaired from Stripe's API."""

from __future__ import annotations

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
    (alert,) = billing.conn.execute(
        "select subject from private.operator_alerts where kind = 'unlinked_customer' and resolved_at is null"
    ).fetchall()
    assert alert == (stray["customer"],)


def test_resync_needs_a_scope() -> None:
    result = CliRunner().invoke(app, ["billing", "resync"])
    assert result.exit_code != 0
    assert "choose --user ID or --all" in result.output
