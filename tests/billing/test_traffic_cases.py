"""Each case of real Stripe traffic on its own: several live subscriptions per user, invoices in older API
versions, events for customers nobody is linked to, prices no plan has, and the log line of every refusal."""

from __future__ import annotations

import logging
from typing import Any

import psycopg
import pytest

from functions.billing.stripe_objects import UnreadableObjectError, invoice_subscription_id
from prep.stripe_stand_in import sign_payload
from shared.db import DatabaseError
from tests.billing.conftest import WEBHOOK_SECRET, Billing


def two_tabs(billing: Billing, plans: tuple[str, str]) -> tuple[str, list[str], list[dict]]:
    """One user opens two checkouts before finishing either, then finishes both, a minute apart."""
    user = billing.sign_up()
    sessions = []
    for plan in plans:
        response = billing.api.post("/billing/checkout", json={"plan": plan}, headers=billing.auth(user))
        assert response.status_code == 201, response.text
        sessions.append(response.json()["id"])
    events: list[dict] = []
    subscriptions = []
    for session in sessions:
        completed = billing.stand_in.complete_checkout(session)
        subscriptions.append(next(e["data"]["object"]["id"] for e in completed if e["type"].endswith(".created")))
        events += completed
        billing.stand_in.advance_clock(60)
    return user, subscriptions, events


def alert(billing: Billing, kind: str, subject: str) -> dict[str, Any] | None:
    found = [a for a in billing.database.call("service.operator_alerts", {"include_resolved": True})
             if (a["kind"], a["subject"]) == (kind, subject)]  # fmt: skip
    assert len(found) <= 1
    return found[0] if found else None


def entitled(billing: Billing, user: str) -> tuple[str, Any]:
    return billing.conn.execute("select plan_code, current_period_end from public.entitlements(%s)", (user,)).fetchone()


def event_of(events: list[dict], kind: str) -> dict:
    return next(e for e in events if e["type"] == kind)


# -- 1. several live subscriptions ----------------------------------------------------------------------------------


def test_a_second_live_subscription_is_recorded_the_higher_plan_grants_and_the_operator_is_alerted(
    billing: Billing,
) -> None:
    user, (weekly, monthly), events = two_tabs(billing, ("weekly", "monthly"))
    assert {r["outcome"] for r in billing.deliver_all(events)} == {"applied"}
    assert (billing.row(weekly)["status"], billing.row(monthly)["status"]) == ("trialing", "trialing")
    assert entitled(billing, user)[0] == "monthly"
    raised = alert(billing, "duplicate_live_subscriptions", user)
    assert raised is not None
    assert raised["resolved_at"] is None
    assert [s["stripe_subscription_id"] for s in raised["detail"]["live"]] == [monthly, weekly]

    billing.deliver_all(billing.stand_in.cancel(monthly))
    assert entitled(billing, user)[0] == "weekly"
    assert alert(billing, "duplicate_live_subscriptions", user)["resolved_at"] is not None


def test_between_two_subscriptions_of_one_plan_the_one_created_first_grants(billing: Billing) -> None:
    user, (first, second), events = two_tabs(billing, ("monthly", "monthly"))
    billing.deliver_all(list(reversed(events)))  # arrival order does not decide
    assert billing.row(first)["current_period_end"] != billing.row(second)["current_period_end"]
    assert entitled(billing, user) == ("monthly", billing.row(first)["current_period_end"])


def test_with_two_live_subscriptions_checkout_is_refused_and_deleting_the_user_names_both(billing: Billing) -> None:
    user, subscriptions, events = two_tabs(billing, ("weekly", "monthly"))
    billing.deliver_all(events)
    third = billing.api.post("/billing/checkout", json={"plan": "weekly"}, headers=billing.auth(user))
    assert third.status_code == 409
    with pytest.raises(psycopg.Error) as refused:
        billing.conn.execute("delete from public.users where id = %s", (user,))
    assert refused.value.sqlstate == "PT409"
    assert all(s in str(refused.value) for s in subscriptions)


def test_a_constraint_violation_is_logged_but_never_named_in_the_response(
    billing: Billing, caplog: pytest.LogCaptureFixture
) -> None:
    _, subscription, events = billing.subscribe()
    billing.conn.execute(
        """
        create function pg_temp.violate() returns trigger language plpgsql as $$
        begin
          raise unique_violation using
            message = 'duplicate key value violates unique constraint "subscriptions_one_live_per_user"';
        end $$;
        """
    )
    billing.conn.execute(
        "create trigger simulated_violation before insert on public.subscription_changes"
        " for each row execute function pg_temp.violate()"
    )
    created = event_of(events, "customer.subscription.created")
    try:
        response = billing.deliver(created)
    finally:
        billing.conn.execute("drop trigger simulated_violation on public.subscription_changes")
    assert response.status_code == 409
    assert "subscriptions_one_live_per_user" not in response.text
    assert "duplicate key" not in response.text
    (logged,) = [r for r in caplog.records if r.getMessage() == "stripe event refused"]
    assert (logged.event_id, logged.status) == (created["id"], 409)
    assert "subscriptions_one_live_per_user" in logged.reason
    assert billing.row(subscription) is None


# -- 2. API versions ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("invoice", "api_version", "expected"),
    [
        ({"id": "in_1", "parent": {"subscription_details": {"subscription": "sub_1"}}}, "2025-03-31.basil", "sub_1"),
        ({"id": "in_1", "parent": {"subscription_details": {"subscription": "sub_1"}}}, "2026-10-28.endive", "sub_1"),
        ({"id": "in_1", "parent": {"subscription_details": {"subscription": "sub_1"}}}, None, "sub_1"),
        ({"id": "in_1", "parent": None}, "2026-10-28.endive", None),
        ({"id": "in_1", "subscription": "sub_1"}, "2024-06-20", "sub_1"),
        ({"id": "in_1", "subscription": {"id": "sub_1", "object": "subscription"}}, "2022-11-15", "sub_1"),
        ({"id": "in_1", "subscription": None}, "2025-02-24.acacia", None),
    ],
    ids=["basil", "pinned", "no-version", "basil-one-off", "pre-basil", "pre-basil-expanded", "pre-basil-one-off"],
)
def test_an_invoice_names_its_subscription_where_its_api_version_puts_it(
    invoice: dict, api_version: str | None, expected: str | None
) -> None:
    assert invoice_subscription_id(invoice, api_version) == expected


@pytest.mark.parametrize(
    ("invoice", "api_version"),
    [
        ({"id": "in_1", "subscription": "sub_1"}, "2026-10-28.endive"),
        ({"id": "in_1", "parent": {"subscription_details": {"subscription": "sub_1"}}}, "2024-06-20"),
    ],
    ids=["old-shape-new-version", "new-shape-old-version"],
)
def test_an_invoice_without_its_versions_field_is_unreadable(invoice: dict, api_version: str) -> None:
    with pytest.raises(UnreadableObjectError):
        invoice_subscription_id(invoice, api_version)


def test_an_object_another_api_version_shapes_unreadably_is_recorded_and_alerted_not_ignored(billing: Billing) -> None:
    _, subscription, events = billing.subscribe()
    invoice = event_of(events, "invoice.paid")
    invoice["api_version"] = "2024-06-20"  # claims the pre-basil shape but carries no `subscription`
    created = event_of(events, "customer.subscription.created")
    created["api_version"] = "2019-12-03"
    del created["data"]["object"]["items"]

    answers = billing.deliver_all([invoice, created])
    assert [a["outcome"] for a in answers] == ["unreadable", "unreadable"]
    assert [billing.recorded(e["id"]) for e in (invoice, created)] == ["unreadable", "unreadable"]
    assert alert(billing, "unreadable_event", "invoice.paid @ 2024-06-20")["detail"]["stripe_event_id"] == invoice["id"]
    assert alert(billing, "unreadable_event", "customer.subscription.created @ 2019-12-03") is not None
    assert billing.row(subscription) is None

    # The same object in the pinned version is simply malformed: refused, so the sender's bug shows.
    created["id"], created["api_version"] = "evt_pinned_malformed", "2026-10-28.endive"
    assert billing.deliver(created).status_code == 400


def test_the_api_version_of_every_event_is_recorded(billing: Billing) -> None:
    _, _, events = billing.subscribe()
    billing.deliver_all(events)
    versions = billing.conn.execute(
        "select distinct api_version from private.stripe_events where id = any(%s)", ([e["id"] for e in events],)
    ).fetchall()
    assert versions == [("2026-10-28.endive",)]


# -- 3. unknown customers and prices --------------------------------------------------------------------------------


def unlinked_subscription(billing: Billing) -> tuple[str, str, str, list[dict]]:
    """A subscription of a customer nobody is linked to (made in Stripe's dashboard: no user id anywhere)."""
    user, subscription, events = billing.subscribe()
    billing.conn.execute("delete from public.billing_customers where user_id = %s", (user,))
    for event in events:
        if event["type"].startswith("customer.subscription."):
            event["data"]["object"]["metadata"] = {}
    billing.stand_in._objects[subscription]["metadata"] = {}
    customer = billing.stand_in.get(subscription)["customer"]
    return user, subscription, customer, events


def test_an_event_of_an_unknown_customer_is_a_200_recorded_and_applied_once_a_checkout_links_it(
    billing: Billing,
) -> None:
    user, subscription, customer, events = unlinked_subscription(billing)
    created = event_of(events, "customer.subscription.created")
    answer = billing.deliver(created)
    assert answer.status_code == 200, answer.text
    assert answer.json()["outcome"] == "unlinked"
    assert billing.row(subscription) is None
    assert alert(billing, "unlinked_customer", customer)["resolved_at"] is None

    billing.deliver(event_of(events, "checkout.session.completed"))  # carries client_reference_id: the link
    assert (str(billing.row(subscription)["user_id"]), billing.row(subscription)["status"]) == (user, "trialing")
    assert billing.recorded(created["id"]) in ("applied", "stale")
    assert alert(billing, "unlinked_customer", customer)["resolved_at"] is not None


def test_a_price_matching_no_plan_is_a_200_recorded_alerted_and_applied_once_configured(billing: Billing) -> None:
    _, subscription, events = billing.subscribe()
    created = event_of(events, "customer.subscription.created")
    price = created["data"]["object"]["items"]["data"][0]["price"]
    price["id"], price["lookup_key"] = "price_unknown", None
    answer = billing.deliver(created)
    assert answer.status_code == 200, answer.text
    assert answer.json()["outcome"] == "unmatched_price"
    assert billing.row(subscription) is None
    assert alert(billing, "unknown_price", "price_unknown")["detail"]["stripe_subscription_id"] == subscription

    billing.conn.execute("update public.plans set stripe_price_id = 'price_unknown' where code = 'monthly'")
    try:
        pending = billing.database.call("service.apply_pending_stripe_events", {})
    finally:
        billing.conn.execute("update public.plans set stripe_price_id = 'price_local_monthly' where code = 'monthly'")
    assert pending["applied"] >= 1
    assert billing.row(subscription)["plan"] == "monthly"
    assert billing.recorded(created["id"]) == "applied"
    assert alert(billing, "unknown_price", "price_unknown")["resolved_at"] is not None


def test_an_operator_resolves_an_alert_by_hand_once(billing: Billing) -> None:
    user, _, events = two_tabs(billing, ("weekly", "monthly"))
    billing.deliver_all(events)
    open_alert = alert(billing, "duplicate_live_subscriptions", user)
    closed = billing.database.call(
        "service.resolve_operator_alert", {"alert_id": open_alert["id"], "resolution": "refunded the weekly one"}
    )
    assert closed["resolution"] == "refunded the weekly one"
    assert alert(billing, "duplicate_live_subscriptions", user)["resolved_at"] is not None
    with pytest.raises(DatabaseError) as again:
        billing.database.call("service.resolve_operator_alert", {"alert_id": open_alert["id"], "resolution": "x"})
    assert again.value.status == 404


# -- 4. every refusal in the log ------------------------------------------------------------------------------------


def test_every_refusal_is_logged_with_its_reason_and_event_id(
    billing: Billing, caplog: pytest.LogCaptureFixture
) -> None:
    _, _, events = billing.subscribe()
    completed = event_of(events, "checkout.session.completed")
    created = event_of(events, "customer.subscription.created")
    billing.stand_in.outage = True
    try:
        unavailable = billing.deliver(completed)
    finally:
        billing.stand_in.outage = False
    forged = billing.deliver(created, secret="whsec_someone_else")
    body = b'{"id": "evt_malformed", "type": "customer.subscription.updated", "created": 1, "data": {"object": {}}}'
    malformed = billing.webhook.post(
        "/stripe/webhook", content=body, headers={"stripe-signature": sign_payload(body, WEBHOOK_SECRET)}
    )
    garbage = billing.webhook.post("/stripe/webhook", content=b"\xff", headers={"stripe-signature": "t=1,v1=x"})
    assert [r.status_code for r in (unavailable, forged, malformed, garbage)] == [503, 400, 400, 400]

    refusals = [r for r in caplog.records if r.getMessage() == "stripe event refused"]
    assert [(r.levelno, r.status, r.event_id) for r in refusals] == [
        (logging.ERROR, 503, completed["id"]),
        (logging.WARNING, 400, created["id"]),
        (logging.WARNING, 400, "evt_malformed"),
        (logging.WARNING, 400, None),
    ]
    assert "Stripe unavailable" in refusals[0].reason
    assert "Invalid signature" in refusals[1].reason
    assert "does not carry the expected object" in refusals[2].reason
    assert "not UTF-8" in refusals[3].reason
