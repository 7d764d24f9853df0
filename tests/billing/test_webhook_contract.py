"""The webhook's OpenAPI document says what it accepts: for each event type billing acts on, the object it reads.

Real-shaped events from the Stripe stand-in match the document, and an event missing any field the document
requires of its type's object is refused before anything is written. A signed event holding a NUL, which the
database cannot store, is recorded as unreadable with an operator alert and acknowledged.
"""

from __future__ import annotations

import copy
import json
from typing import Any

import jsonschema_rs
import pytest

from functions.billing.stripe_objects import HANDLED_EVENTS, INVOICE_EVENTS, SUBSCRIPTION_EVENTS
from prep.stripe_stand_in import event_payload, sign_payload
from shared.stripe_client import STRIPE_API_VERSION
from tests.billing.conftest import WEBHOOK_SECRET, Billing
from tests.support.contracts import database_text_in

# What each handled event type's object must carry, as the handler reads it.
REQUIRED = {
    **dict.fromkeys(SUBSCRIPTION_EVENTS, frozenset({"id", "customer", "status", "items"})),
    **dict.fromkeys(INVOICE_EVENTS, frozenset({"id"})),
    "checkout.session.completed": frozenset({"id", "mode"}),
    "customer.deleted": frozenset({"id"}),
}


def delivery_schema(billing: Billing) -> dict[str, Any]:
    """The body's schema from the webhook's own document, with the components its references point into."""
    document = billing.webhook.get("/openapi.json").json()
    body = document["paths"]["/stripe/webhook"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    return {**body, "components": document["components"]}


def resolve(schema: dict[str, Any], node: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in node:
        node = schema["components"]["schemas"][node["$ref"].rsplit("/", 1)[-1]]
    return node


def test_the_document_gives_each_event_types_object(billing: Billing) -> None:
    schema = delivery_schema(billing)
    documented: dict[str, frozenset[str]] = {}
    other = other_version = None
    for branch in (resolve(schema, b) for b in schema["oneOf"]):
        types, version = branch["properties"]["type"], branch["properties"]["api_version"]
        if "not" in version:
            other_version = version
            continue
        assert version["anyOf"] == [{"const": STRIPE_API_VERSION, "type": "string"}, {"type": "null"}]
        if "not" in types:
            other = types
            continue
        data = resolve(schema, branch["properties"]["data"])
        obj = resolve(schema, data["properties"]["object"])
        for event_type in types.get("enum", [types.get("const")]):
            documented[event_type] = frozenset(obj["required"])
        if event_type in SUBSCRIPTION_EVENTS:
            statuses = obj["properties"]["status"]["enum"]
            assert set(statuses) == {
                "incomplete", "incomplete_expired", "trialing", "active", "past_due", "canceled", "unpaid", "paused"
            }  # fmt: skip
    assert documented == REQUIRED
    # Every other type is accepted and acknowledged, whatever its object; so is an event of another API version
    # (read by its own version's shape, recorded as unreadable if that fails).
    assert other == {"type": "string", "not": {"enum": sorted(HANDLED_EVENTS)}, "title": "Type"}
    assert other_version == {"type": "string", "not": {"const": STRIPE_API_VERSION}, "title": "Api Version"}


def _events(billing: Billing) -> list[dict[str, Any]]:
    """One subscription's events through checkout, trial, renewal and cancellation; and its customer's deletion."""
    _, subscription, events = billing.subscribe()
    billing.stand_in.advance_clock(7 * 86_400)
    events += billing.stand_in.end_trial(subscription, paid=True)
    events += billing.stand_in.cancel(subscription)
    events += billing.stand_in.delete_customer(events[0]["data"]["object"]["customer"])
    return events


def test_stripes_events_match_the_document_and_each_required_field_is_needed(billing: Billing) -> None:
    validator = jsonschema_rs.Draft202012Validator(delivery_schema(billing))
    events = _events(billing)
    seen = {event["type"] for event in events}
    assert seen >= {"checkout.session.completed", "customer.subscription.created", "invoice.paid", "customer.deleted"}
    for event in events:
        assert validator.is_valid(event), next(validator.iter_errors(event))
    one_of_each = {event["type"]: event for event in events if event["type"] in REQUIRED}
    for event_type, event in one_of_each.items():
        for field in sorted(REQUIRED[event_type]):
            lacking = copy.deepcopy(event)
            del lacking["data"]["object"][field]
            assert not validator.is_valid(lacking), f"the document lets {event_type} lack {field}"
            response = billing.deliver(lacking)
            assert response.status_code == 400, response.text
            problem = response.json()
            assert problem["title"] == "Malformed event"
            assert f"data.object.{field}: Field required" in problem["detail"]
            assert billing.recorded(event["id"]) is None


def test_a_status_stripe_never_gives_is_refused_in_the_projects_words(billing: Billing) -> None:
    _, _, events = billing.subscribe()
    created = copy.deepcopy(next(e for e in events if e["type"] == "customer.subscription.created"))
    created["data"]["object"]["status"] = "gold"
    response = billing.deliver(created)
    assert response.status_code == 400
    assert "data.object.status" in response.json()["detail"]
    assert database_text_in(response.text) is None
    assert billing.recorded(created["id"]) is None


def _signed(billing: Billing, body: bytes) -> Any:
    return billing.webhook.post(
        "/stripe/webhook",
        content=body,
        headers={"stripe-signature": sign_payload(body, WEBHOOK_SECRET), "content-type": "application/json"},
    )


@pytest.mark.parametrize("where", ["metadata", "id"])
def test_a_signed_event_holding_a_nul_is_recorded_unreadable_and_acknowledged(billing: Billing, where: str) -> None:
    _, subscription, events = billing.subscribe()
    created = copy.deepcopy(next(e for e in events if e["type"] == "customer.subscription.created"))
    if where == "metadata":
        created["data"]["object"]["metadata"]["note"] = "before\x00after"
    else:
        created["data"]["object"]["id"] += "\x00"
    body = event_payload(created)
    assert b"\\u0000" in body
    response = _signed(billing, body)
    assert response.status_code == 200, response.text
    assert response.json()["outcome"] == "unreadable"
    assert billing.row(subscription) is None, "an unreadable event changed the subscription"
    payload, alert = billing.conn.execute(
        "select e.payload, a.detail from private.stripe_events e"
        " join private.operator_alerts a on a.kind = 'unreadable_event' and a.detail ->> 'stripe_event_id' = e.id"
        " where e.id = %s",
        (created["id"],),
    ).fetchone()
    assert "\ufffd" in json.dumps(payload, ensure_ascii=False), "the stored copy has U+FFFD in the NUL's place"
    assert "NUL" in alert["reason"]
    # Delivered again, it is the same event, already recorded.
    assert _signed(billing, body).json()["outcome"] == "duplicate"


def test_the_text_backslash_u0000_is_not_a_nul(billing: Billing) -> None:
    _, subscription, events = billing.subscribe()
    created = copy.deepcopy(next(e for e in events if e["type"] == "customer.subscription.created"))
    created["data"]["object"]["metadata"]["note"] = "\\u0000 is how JSON writes a NUL"
    response = _signed(billing, event_payload(created))
    assert (response.status_code, response.json()["outcome"]) == (200, "applied")
    assert billing.row(subscription) is not None
