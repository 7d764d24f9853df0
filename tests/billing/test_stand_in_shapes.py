"""Every event type the Stripe stand-in emits has the shape Stripe gives it at the pinned API version: the same keys,
nested the same way, as the events of tests/billing/fixtures/real_traffic.json at that version. A type the fixture
lacks (customer.subscription.updated...) is checked by its object (a subscription, an invoice...), whose shape the
fixture has under another type; updates also carry data.previous_attributes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import stripe

from prep.stripe_stand_in import MONTHLY_PRICE_ID, WEEKLY_PRICE_ID, StripeStandIn
from shared.stripe_client import STRIPE_API_VERSION

FIXTURE = Path(__file__).parent / "fixtures" / "real_traffic.json"
# The flows the platform meets, enough to make the stand-in emit each event type it knows.
EMITTED = {
    "customer.created",
    "checkout.session.completed",
    "customer.subscription.created",
    "customer.subscription.updated",
    "customer.subscription.deleted",
    "customer.subscription.trial_will_end",
    "customer.subscription.paused",
    "customer.subscription.resumed",
    "invoice.paid",
    "invoice.payment_failed",
    "invoice.payment_action_required",
    "customer.deleted",
}


def shape_differences(ours: Any, theirs: Any, path: str = "") -> list[str]:
    """Where `ours` and `theirs` differ in keys or nesting. A null on either side matches anything (a field that is
    null in one flow is an object in another), lists compare their first items, and metadata is the account's own."""
    if ours is None or theirs is None or path.endswith(".metadata"):
        return []
    if isinstance(ours, dict) and isinstance(theirs, dict):
        differences = [f"{path}.{key}: not in Stripe's" for key in sorted(set(ours) - set(theirs))]
        differences += [f"{path}.{key}: missing" for key in sorted(set(theirs) - set(ours))]
        for key in sorted(set(ours) & set(theirs)):
            differences += shape_differences(ours[key], theirs[key], f"{path}.{key}")
        return differences
    if isinstance(ours, list) and isinstance(theirs, list):
        return shape_differences(ours[0], theirs[0], f"{path}[0]") if ours and theirs else []
    if isinstance(ours, dict | list) or isinstance(theirs, dict | list):
        return [f"{path}: {type(ours).__name__}, Stripe's is {type(theirs).__name__}"]
    return []


def emit_every_event(client: stripe.StripeClient, stand_in: StripeStandIn) -> list[dict[str, Any]]:
    def checkout(email: str, trial: bool) -> str:
        customer = client.v1.customers.create({"email": email})
        data: dict[str, Any] = {"metadata": {"user_id": email}} | ({"trial_period_days": 7} if trial else {})
        session = client.v1.checkout.sessions.create(
            {
                "mode": "subscription",
                "customer": customer.id,
                "client_reference_id": email,
                "line_items": [{"price": WEEKLY_PRICE_ID, "quantity": 1}],
                "subscription_data": data,
            }
        )
        stand_in.complete_checkout(session.id)
        return stand_in.get(session.id)["subscription"]

    trialing = checkout("a@example.test", trial=True)
    stand_in.trial_will_end(trialing)
    stand_in.end_trial(trialing, paid=False)
    stand_in.recover(trialing)
    stand_in.require_action(trialing)
    stand_in.mark_unpaid(trialing)
    paying = checkout("b@example.test", trial=False)
    stand_in.change_plan(paying, MONTHLY_PRICE_ID)
    stand_in.pause(paying)
    stand_in.resume(paying)
    stand_in.cancel_at_period_end(paying)
    stand_in.cancel(paying)
    stand_in.delete_customer(stand_in.get(trialing)["customer"])
    return stand_in.events


def test_every_event_the_stand_in_emits_has_stripes_shape_at_the_pinned_version(
    client: stripe.StripeClient, stand_in: StripeStandIn
) -> None:
    recorded = [e for e in json.loads(FIXTURE.read_text())["events"] if e["api_version"] == STRIPE_API_VERSION]
    by_type = {event["type"]: event for event in recorded}
    by_object = {event["data"]["object"]["object"]: event["data"]["object"] for event in recorded}
    events = emit_every_event(client, stand_in)
    assert {event["type"] for event in events} == EMITTED

    differences = []
    for event in events:
        kind, obj = event["type"], event["data"]["object"]
        assert event["api_version"] == STRIPE_API_VERSION
        assert obj["object"] in by_object, f"the fixture has no {obj['object']} to compare {kind} with"
        if kind in by_type:
            theirs = by_type[kind]
            differences += [f"{kind}{d}" for d in shape_differences({**event, "data": {}}, {**theirs, "data": {}})]
        expected_data = {"object", "previous_attributes"} if kind.endswith(".updated") else {"object"}
        if set(event["data"]) != expected_data:
            differences.append(f"{kind}.data: {sorted(event['data'])}, Stripe's is {sorted(expected_data)}")
        differences += [f"{kind}.data.object{d}" for d in shape_differences(obj, by_object[obj["object"]])]
    assert not sorted(set(differences)), "\n".join(sorted(set(differences)))


def test_the_comparison_names_missing_extra_and_renested_fields() -> None:
    stripe_object = {"id": "x", "parent": {"subscription_details": {"subscription": "sub"}}, "lines": [{"a": 1}]}
    ours = {"id": "x", "subscription": "sub", "parent": {"subscription_details": "sub"}, "lines": [{"b": 1}]}
    assert shape_differences(ours, stripe_object) == [
        ".subscription: not in Stripe's",
        ".lines[0].b: not in Stripe's",
        ".lines[0].a: missing",
        ".parent.subscription_details: str, Stripe's is dict",
    ]
