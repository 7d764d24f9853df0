"""The Stripe stand-in, driven over HTTP by the real stripe library at its pinned API version."""

from __future__ import annotations

import json
import socket
import threading
import time
from typing import Any

import httpx
import pytest
import stripe
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from prep.stripe_stand_in import (
    API_VERSION,
    DAY,
    MONTHLY_PRICE_ID,
    WEEKLY_PRICE_ID,
    StripeStandIn,
    event_payload,
    parse_params,
    sign_payload,
)

SECRET = "whsec_stand_in_test"


def subscribe(
    client: stripe.StripeClient,
    stand_in: StripeStandIn,
    *,
    price: str = WEEKLY_PRICE_ID,
    trial_days: int | None = 7,
    user_id: str = "user-1",
) -> tuple[str, list[dict[str, Any]]]:
    """Sign a user up through Checkout as the platform does; return the subscription id and the events."""
    customer = client.v1.customers.create({"email": f"{user_id}@example.com", "metadata": {"user_id": user_id}})
    subscription_data: dict[str, Any] = {"metadata": {"user_id": user_id}}
    if trial_days:
        subscription_data["trial_period_days"] = trial_days
    session = client.v1.checkout.sessions.create(
        {
            "mode": "subscription",
            "customer": customer.id,
            "line_items": [{"price": price, "quantity": 1}],
            "success_url": "http://localhost/billing/success",
            "cancel_url": "http://localhost/billing/cancel",
            "client_reference_id": user_id,
            "subscription_data": subscription_data,
        }
    )
    events = stand_in.complete_checkout(session.id)
    return events[1]["data"]["object"]["id"], events


def types(events: list[dict[str, Any]]) -> list[str]:
    return [event["type"] for event in events]


def period(subscription: dict[str, Any]) -> tuple[int, int]:
    item = subscription["items"]["data"][0]
    return item["current_period_start"], item["current_period_end"]


# -- server and requests ---------------------------------------------------------------------------------------------


def test_context_manager_serves_on_a_free_port_and_stops() -> None:
    with StripeStandIn() as stand_in:
        url = stand_in.base_url
        assert url is not None
        assert url.startswith("http://127.0.0.1:")
        assert httpx.get(f"{url}/v1/prices/{WEEKLY_PRICE_ID}").status_code == 401  # up, and wants a key
    assert stand_in.base_url is None
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{url}/v1/prices/{WEEKLY_PRICE_ID}")


def test_parse_params_rebuilds_bracket_notation() -> None:
    pairs = [
        ("line_items[0][price]", "price_a"),
        ("line_items[0][quantity]", "1"),
        ("line_items[1][price]", "price_b"),
        ("subscription_data[metadata][user_id]", "u1"),
        ("subscription_data[trial_period_days]", "7"),
        ("expand[]", "subscription"),
        ("expand[]", "customer"),
    ]
    assert parse_params(pairs) == {
        "line_items": [{"price": "price_a", "quantity": "1"}, {"price": "price_b"}],
        "subscription_data": {"metadata": {"user_id": "u1"}, "trial_period_days": "7"},
        "expand": ["subscription", "customer"],
    }


def test_customer_create_retrieve_and_delete(client: stripe.StripeClient, stand_in: StripeStandIn) -> None:
    created = client.v1.customers.create({"email": "ada@example.com", "name": "Ada", "metadata": {"user_id": "u1"}})
    assert created.id.startswith("cus_")
    assert created.object == "customer"
    assert created.created == stand_in.now
    assert created.invoice_settings.default_payment_method is None

    fetched = client.v1.customers.retrieve(created.id)
    assert (fetched.email, fetched.name, fetched.metadata.to_dict()) == ("ada@example.com", "Ada", {"user_id": "u1"})

    stub = {"id": created.id, "object": "customer", "deleted": True}
    assert client.v1.customers.delete(created.id).to_dict() == stub
    assert client.v1.customers.retrieve(created.id).to_dict() == stub  # Stripe still answers for a deleted customer
    with pytest.raises(stripe.InvalidRequestError) as again:
        client.v1.customers.delete(created.id)
    assert again.value.http_status == 404
    assert types(stand_in.events) == ["customer.created", "customer.deleted"]


def test_idempotency_key_replays_the_first_response(client: stripe.StripeClient, stand_in: StripeStandIn) -> None:
    first = client.v1.customers.create({"email": "ada@example.com"}, {"idempotency_key": "signup-u1"})
    replayed = client.v1.customers.create({"email": "ada@example.com"}, {"idempotency_key": "signup-u1"})
    assert replayed.id == first.id
    assert replayed.last_response.headers["Idempotent-Replayed"] == "true"
    assert replayed.last_response.request_id == first.last_response.request_id
    assert types(stand_in.events) == ["customer.created"]  # the replay created nothing

    with pytest.raises(stripe.IdempotencyError) as conflict:
        client.v1.customers.create({"email": "grace@example.com"}, {"idempotency_key": "signup-u1"})
    assert conflict.value.http_status == 400
    assert conflict.value.json_body["error"]["type"] == "idempotency_error"


def test_a_missing_or_live_api_key_is_refused(stand_in: StripeStandIn) -> None:
    assert stand_in.base_url
    anonymous = httpx.get(f"{stand_in.base_url}/v1/subscriptions")
    assert anonymous.status_code == 401
    assert anonymous.json()["error"]["type"] == "invalid_request_error"
    assert "You did not provide an API key" in anonymous.json()["error"]["message"]

    # Assembled so no live-key pattern sits in the repository for secret scanners to flag.
    live_key = "sk_" + "live_" + "0123456789abcdef"
    live = stripe.StripeClient(live_key, base_addresses={"api": stand_in.base_url})
    with pytest.raises(stripe.AuthenticationError) as refused:
        live.v1.customers.create({"email": "ada@example.com"})
    assert refused.value.http_status == 401
    assert "0123456789ab" not in str(refused.value)  # the key is masked, as Stripe masks it
    assert stand_in.events == []


def test_another_api_version_is_refused(stand_in: StripeStandIn) -> None:
    assert stand_in.base_url
    old = stripe.StripeClient("sk_test_x", stripe_version="2025-03-31.basil", base_addresses={"api": stand_in.base_url})
    with pytest.raises(stripe.InvalidRequestError, match=API_VERSION):
        old.v1.prices.retrieve(WEEKLY_PRICE_ID)


def test_unknown_ids_are_404_resource_missing(client: stripe.StripeClient) -> None:
    with pytest.raises(stripe.InvalidRequestError) as missing:
        client.v1.subscriptions.retrieve("sub_nope")
    assert missing.value.http_status == 404
    assert missing.value.code == "resource_missing"
    assert missing.value.param == "id"
    assert missing.value.json_body["error"]["message"] == "No such subscription: 'sub_nope'"
    for lookup in (lambda: client.v1.customers.retrieve("cus_nope"), lambda: client.v1.prices.retrieve("price_nope")):
        with pytest.raises(stripe.InvalidRequestError, match="No such"):
            lookup()


def test_outage_answers_500_until_it_ends(client: stripe.StripeClient, stand_in: StripeStandIn) -> None:
    stand_in.outage = True
    with pytest.raises(stripe.APIError) as down:
        client.v1.prices.retrieve(WEEKLY_PRICE_ID)
    assert down.value.http_status == 500
    assert down.value.json_body["error"]["type"] == "api_error"
    stand_in.outage = False
    assert client.v1.prices.retrieve(WEEKLY_PRICE_ID).id == WEEKLY_PRICE_ID


def test_unrecognized_url_is_404(stand_in: StripeStandIn) -> None:
    assert stand_in.base_url
    response = httpx.get(f"{stand_in.base_url}/v1/nope", headers={"Authorization": "Bearer sk_test_x"})
    assert response.status_code == 404
    assert response.json()["error"]["message"].startswith("Unrecognized request URL (GET: /v1/nope)")


# -- prices, checkout, portal ----------------------------------------------------------------------------------------


def test_prices_are_found_by_lookup_key(client: stripe.StripeClient) -> None:
    weekly = client.v1.prices.list({"lookup_keys": ["weekly"], "expand": ["data.product"]})
    assert weekly.object == "list"
    assert weekly.url == "/v1/prices"
    assert [price.id for price in weekly.data] == [WEEKLY_PRICE_ID]
    price = weekly.data[0]
    assert (price.unit_amount, price.currency, price.type) == (900, "usd", "recurring")
    assert (price.recurring.interval, price.recurring.interval_count) == ("week", 1)
    assert price.product.object == "product"
    assert price.product.id.startswith("prod_")

    monthly = client.v1.prices.retrieve(MONTHLY_PRICE_ID)
    assert (monthly.lookup_key, monthly.unit_amount, monthly.recurring.interval) == ("monthly", 2900, "month")
    both = client.v1.prices.list({"lookup_keys": ["weekly", "monthly"]})
    assert {price.id for price in both.data} == {WEEKLY_PRICE_ID, MONTHLY_PRICE_ID}
    assert client.v1.prices.list({"lookup_keys": ["yearly"]}).data == []


def test_checkout_with_a_trial_starts_a_trialing_subscription(
    client: stripe.StripeClient, stand_in: StripeStandIn
) -> None:
    customer = client.v1.customers.create({"email": "ada@example.com", "name": "Ada"})
    session = client.v1.checkout.sessions.create(
        {
            "mode": "subscription",
            "customer": customer.id,
            "line_items": [{"price": WEEKLY_PRICE_ID, "quantity": 1}],
            "success_url": "http://localhost/billing/success",
            "cancel_url": "http://localhost/billing/cancel",
            "client_reference_id": "user-1",
            "metadata": {"user_id": "user-1"},
            "subscription_data": {"trial_period_days": 7, "metadata": {"user_id": "user-1"}},
        }
    )
    assert session.id.startswith("cs_test_")
    assert session.url == f"{stand_in.base_url}/checkout/{session.id}"
    assert (session.status, session.payment_status, session.amount_total) == ("open", "unpaid", 0)
    assert session.subscription is None

    events = stand_in.complete_checkout(session.id)
    assert types(events) == ["checkout.session.completed", "customer.subscription.created", "invoice.paid"]
    for event in events:
        assert event["id"].startswith("evt_")
        assert (event["object"], event["api_version"], event["created"]) == ("event", API_VERSION, stand_in.now)
        assert event["request"] == {"id": None, "idempotency_key": None}
        assert "previous_attributes" not in event["data"]
    completed, sub, invoice = (event["data"]["object"] for event in events)

    assert (completed["status"], completed["payment_status"]) == ("complete", "no_payment_required")
    assert (completed["subscription"], completed["customer"], completed["invoice"]) == (
        sub["id"],
        customer.id,
        invoice["id"],
    )
    assert completed["client_reference_id"] == "user-1"
    assert completed["url"] is None

    assert sub["id"].startswith("sub_")
    assert (sub["status"], sub["customer"], sub["metadata"]) == ("trialing", customer.id, {"user_id": "user-1"})
    assert sub["trial_start"] == stand_in.now
    assert sub["trial_end"] == stand_in.now + 7 * DAY
    assert sub["billing_cycle_anchor"] == sub["trial_end"]
    assert "current_period_end" not in sub  # since 2025-03-31.basil periods live on the items
    assert period(sub) == (sub["trial_start"], sub["trial_end"])
    assert sub["items"]["data"][0]["id"].startswith("si_")
    assert sub["items"]["data"][0]["price"]["id"] == WEEKLY_PRICE_ID
    assert sub["latest_invoice"] == invoice["id"]

    assert invoice["id"].startswith("in_")
    assert (invoice["status"], invoice["amount_due"], invoice["amount_paid"]) == ("paid", 0, 0)
    assert invoice["billing_reason"] == "subscription_create"
    assert "subscription" not in invoice  # since basil an invoice names its subscription under parent
    assert invoice["parent"]["subscription_details"]["subscription"] == sub["id"]
    assert invoice["parent"]["subscription_details"]["metadata"] == {"user_id": "user-1"}
    line = invoice["lines"]["data"][0]
    assert line["description"] == "Trial period for Interview Prep Weekly"
    assert line["period"] == {"start": sub["trial_start"], "end": sub["trial_end"]}
    assert line["parent"]["subscription_item_details"]["subscription_item"] == sub["items"]["data"][0]["id"]

    retrieved = client.v1.subscriptions.retrieve(sub["id"], {"expand": ["latest_invoice"]})
    assert retrieved.status == "trialing"
    assert retrieved["items"].data[0].current_period_end == sub["trial_end"]
    assert retrieved.latest_invoice.parent.subscription_details.subscription == sub["id"]
    assert client.v1.checkout.sessions.retrieve(session.id).status == "complete"


def test_checkout_without_a_trial_is_paid_now(client: stripe.StripeClient, stand_in: StripeStandIn) -> None:
    sub_id, events = subscribe(client, stand_in, price=MONTHLY_PRICE_ID, trial_days=None)
    completed, sub, invoice = (event["data"]["object"] for event in events)
    assert completed["payment_status"] == "paid"
    assert completed["amount_total"] == 2900
    assert (sub["status"], sub["trial_end"]) == ("active", None)
    assert period(sub) == (stand_in.now, stand_in.now + 30 * DAY)  # 21 Sep -> 21 Oct
    assert (invoice["amount_paid"], invoice["attempt_count"]) == (2900, 1)
    assert invoice["lines"]["data"][0]["description"] == "1 \u00d7 Interview Prep Monthly (at $29.00 / month)"
    assert client.v1.subscriptions.retrieve(sub_id).status == "active"


def test_paying_on_the_hosted_page_completes_checkout_and_answers_its_events(
    client: stripe.StripeClient, stand_in: StripeStandIn
) -> None:
    customer = client.v1.customers.create({"email": "ada@example.com"})
    session = client.v1.checkout.sessions.create(
        {"mode": "subscription", "customer": customer.id, "line_items": [{"price": MONTHLY_PRICE_ID, "quantity": 1}]}
    )
    assert session.url
    paid = httpx.post(session.url)  # the customer's browser: no API key
    assert paid.status_code == 200, paid.text
    events = paid.json()["data"]
    assert types(events) == ["checkout.session.completed", "customer.subscription.created", "invoice.paid"]
    assert events == stand_in.events[-3:]
    assert client.v1.checkout.sessions.retrieve(session.id).status == "complete"

    again = httpx.post(session.url)
    assert again.status_code == 400
    assert "is complete, not open" in again.json()["error"]["message"]
    unknown = httpx.post(f"{stand_in.base_url}/checkout/cs_test_nope")
    assert unknown.status_code == 404
    assert unknown.json()["error"]["code"] == "resource_missing"


def test_checkout_rejects_an_unknown_price(client: stripe.StripeClient) -> None:
    with pytest.raises(stripe.InvalidRequestError) as missing:
        client.v1.checkout.sessions.create(
            {"mode": "subscription", "line_items": [{"price": "price_nope", "quantity": 1}]}
        )
    assert (missing.value.http_status, missing.value.param) == (400, "line_items[0][price]")


def test_billing_portal_session(client: stripe.StripeClient, stand_in: StripeStandIn) -> None:
    customer = client.v1.customers.create({"email": "ada@example.com"})
    portal = client.v1.billing_portal.sessions.create({"customer": customer.id, "return_url": "http://localhost/app"})
    assert portal.id.startswith("bps_")
    assert portal.object == "billing_portal.session"
    assert (portal.customer, portal.return_url) == (customer.id, "http://localhost/app")
    assert portal.url == f"{stand_in.base_url}/billing_portal/{portal.id}"
    with pytest.raises(stripe.InvalidRequestError) as missing:
        client.v1.billing_portal.sessions.create({"customer": "cus_nope"})
    assert (missing.value.http_status, missing.value.param) == (400, "customer")


# -- subscriptions over the API --------------------------------------------------------------------------------------


def test_listing_pages_newest_first_across_statuses(client: stripe.StripeClient, stand_in: StripeStandIn) -> None:
    created = []
    for n in range(5):
        created.append(subscribe(client, stand_in, user_id=f"user-{n}")[0])
        if n % 2:
            stand_in.advance_clock(60)  # some share a creation second: ties still list newest first
    client.v1.subscriptions.cancel(created[0])
    client.v1.subscriptions.cancel(created[3])

    first = client.v1.subscriptions.list({"status": "all", "limit": 2})
    assert (first.object, first.url, first.has_more, len(first.data)) == ("list", "/v1/subscriptions", True, 2)
    everything = [sub.id for sub in first.auto_paging_iter()]
    assert everything == created[::-1]

    assert [sub.id for sub in client.v1.subscriptions.list().auto_paging_iter()] == [
        created[4],
        created[2],
        created[1],
    ]
    canceled = client.v1.subscriptions.list({"status": "canceled", "limit": 2})
    assert [sub.id for sub in canceled.data] == [created[3], created[0]]
    assert not canceled.has_more  # exactly a full page left: nothing more
    owner = client.v1.subscriptions.retrieve(created[2]).customer
    assert [sub.id for sub in client.v1.subscriptions.list({"customer": owner}).data] == [created[2]]
    assert client.v1.subscriptions.list({"price": MONTHLY_PRICE_ID}).data == []
    before = client.v1.subscriptions.list({"status": "all", "ending_before": created[2], "limit": 1})
    assert ([sub.id for sub in before.data], before.has_more) == ([created[3]], True)


def test_cancel_at_period_end_through_the_api(client: stripe.StripeClient, stand_in: StripeStandIn) -> None:
    sub_id, _ = subscribe(client, stand_in, trial_days=None)
    start, end = period(stand_in.get(sub_id))
    updated = client.v1.subscriptions.update(sub_id, {"cancel_at_period_end": True}, {"idempotency_key": "cancel-1"})
    assert (updated.status, updated.cancel_at_period_end, updated.cancel_at) == ("active", True, end)
    assert updated.cancellation_details.reason == "cancellation_requested"

    event = stand_in.events[-1]
    assert event["type"] == "customer.subscription.updated"
    assert event["request"]["idempotency_key"] == "cancel-1"
    assert event["request"]["id"] == updated.last_response.request_id
    assert event["data"]["previous_attributes"] == {
        "cancel_at": None,
        "cancel_at_period_end": False,
        "canceled_at": None,
        "cancellation_details": {"reason": None},
    }

    resumed = client.v1.subscriptions.update(sub_id, {"cancel_at_period_end": False})
    assert (resumed.cancel_at_period_end, resumed.cancel_at, resumed.canceled_at) == (False, None, None)
    assert period(stand_in.get(sub_id)) == (start, end)


def test_plan_change_through_the_api(client: stripe.StripeClient, stand_in: StripeStandIn) -> None:
    sub_id, _ = subscribe(client, stand_in, trial_days=None)
    item_id = client.v1.subscriptions.retrieve(sub_id)["items"].data[0].id
    with pytest.raises(stripe.InvalidRequestError):  # without the item's id Stripe would add a second item
        client.v1.subscriptions.update(sub_id, {"items": [{"price": MONTHLY_PRICE_ID}]})
    with pytest.raises(stripe.InvalidRequestError, match="pause_collection"):
        client.v1.subscriptions.update(sub_id, {"pause_collection": {"behavior": "void"}})

    updated = client.v1.subscriptions.update(sub_id, {"items": [{"id": item_id, "price": MONTHLY_PRICE_ID}]})
    assert updated["items"].data[0].id == item_id
    assert updated["items"].data[0].price.id == MONTHLY_PRICE_ID
    assert types(stand_in.events[-2:]) == ["customer.subscription.updated", "invoice.paid"]
    assert stand_in.events[-2]["request"]["id"] == updated.last_response.request_id


def test_cancel_now_through_the_api(client: stripe.StripeClient, stand_in: StripeStandIn) -> None:
    sub_id, _ = subscribe(client, stand_in)
    stand_in.advance_clock(DAY)
    canceled = client.v1.subscriptions.cancel(sub_id)
    assert (canceled.status, canceled.canceled_at, canceled.ended_at) == ("canceled", stand_in.now, stand_in.now)
    assert stand_in.events[-1]["type"] == "customer.subscription.deleted"
    with pytest.raises(stripe.InvalidRequestError):
        client.v1.subscriptions.cancel(sub_id)


def test_expand_replaces_ids_with_objects(client: stripe.StripeClient, stand_in: StripeStandIn) -> None:
    sub_id, _ = subscribe(client, stand_in)
    sub = client.v1.subscriptions.retrieve(sub_id, {"expand": ["customer", "latest_invoice"]})
    assert sub.customer.object == "customer"
    assert sub.latest_invoice.object == "invoice"
    with pytest.raises(stripe.InvalidRequestError, match="cannot be expanded"):
        client.v1.subscriptions.retrieve(sub_id, {"expand": ["status"]})


# -- webhook signatures ----------------------------------------------------------------------------------------------


def test_signed_payload_verifies_and_tampering_or_age_fails(
    client: stripe.StripeClient, stand_in: StripeStandIn
) -> None:
    _, events = subscribe(client, stand_in)
    payload = event_payload(events[2])
    now = int(time.time())
    header = sign_payload(payload, SECRET, timestamp=now)
    assert header.startswith(f"t={now},v1=")
    assert len(header.split("v1=")[1]) == 64

    assert stripe.WebhookSignature.verify_header(payload, header, SECRET, tolerance=300)
    event = stripe.Webhook.construct_event(payload, header, SECRET)
    assert event.type == "invoice.paid"
    assert event.data.object.parent.subscription_details.subscription == events[1]["data"]["object"]["id"]

    tampered = payload.replace(b'"amount_paid": 0', b'"amount_paid": 900')
    assert tampered != payload
    failures = [
        (tampered, header, SECRET),
        (payload, sign_payload(payload, SECRET, timestamp=now - 301), SECRET),
        (payload, header, "whsec_other"),
    ]
    for body, signature, secret in failures:
        with pytest.raises(stripe.SignatureVerificationError):
            stripe.WebhookSignature.verify_header(body, signature, secret, tolerance=300)


# -- simulation --------------------------------------------------------------------------------------------------------


def test_trial_will_end_three_days_before(client: stripe.StripeClient, stand_in: StripeStandIn) -> None:
    sub_id, _ = subscribe(client, stand_in)
    events = stand_in.trial_will_end(sub_id)
    assert types(events) == ["customer.subscription.trial_will_end"]
    sub = events[0]["data"]["object"]
    assert stand_in.now == sub["trial_end"] - 3 * DAY
    assert events[0]["created"] == stand_in.now
    assert sub["status"] == "trialing"


def test_trial_ends_paid(client: stripe.StripeClient, stand_in: StripeStandIn) -> None:
    sub_id, signup = subscribe(client, stand_in)
    trial_end = signup[1]["data"]["object"]["trial_end"]
    events = stand_in.end_trial(sub_id)
    assert types(events) == ["customer.subscription.updated", "invoice.paid"]
    assert stand_in.now == trial_end
    sub, previous = events[0]["data"]["object"], events[0]["data"]["previous_attributes"]
    assert sub["status"] == "active"
    assert period(sub) == (trial_end, trial_end + 7 * DAY)
    assert previous["status"] == "trialing"
    assert period(previous) == (trial_end - 7 * DAY, trial_end)
    assert previous["latest_invoice"] == signup[2]["data"]["object"]["id"]

    invoice = events[1]["data"]["object"]
    assert sub["latest_invoice"] == invoice["id"]
    assert (invoice["status"], invoice["amount_paid"], invoice["billing_reason"]) == ("paid", 900, "subscription_cycle")
    assert invoice["lines"]["data"][0]["period"] == {"start": trial_end, "end": trial_end + 7 * DAY}
    assert client.v1.subscriptions.retrieve(sub_id).status == "active"


def test_trial_ends_unpaid_and_goes_past_due(client: stripe.StripeClient, stand_in: StripeStandIn) -> None:
    sub_id, _ = subscribe(client, stand_in)
    events = stand_in.end_trial(sub_id, paid=False)
    assert types(events) == [
        "customer.subscription.updated",
        "invoice.payment_failed",
        "customer.subscription.updated",
    ]
    assert events[0]["data"]["previous_attributes"]["status"] == "trialing"
    assert events[0]["data"]["object"]["status"] == "active"
    invoice = events[1]["data"]["object"]
    assert (invoice["status"], invoice["amount_remaining"], invoice["attempt_count"]) == ("open", 900, 1)
    assert invoice["next_payment_attempt"] > stand_in.now
    assert events[2]["data"]["object"]["status"] == "past_due"
    assert events[2]["data"]["previous_attributes"] == {"status": "active"}


def test_renewals_dunning_and_recovery(client: stripe.StripeClient, stand_in: StripeStandIn) -> None:
    sub_id, _ = subscribe(client, stand_in, trial_days=None)
    start, end = period(stand_in.get(sub_id))

    renewed = stand_in.renew(sub_id)
    assert types(renewed) == ["customer.subscription.updated", "invoice.paid"]
    assert period(renewed[0]["data"]["object"]) == (end, end + 7 * DAY)
    assert period(renewed[0]["data"]["previous_attributes"]) == (start, end)
    assert "status" not in renewed[0]["data"]["previous_attributes"]
    assert renewed[1]["data"]["object"]["period_start"] == start  # a cycle invoice's period is the one that ended
    assert renewed[1]["data"]["object"]["period_end"] == end

    failed = stand_in.renew(sub_id, paid=False)
    assert types(failed) == ["customer.subscription.updated", "invoice.payment_failed", "customer.subscription.updated"]
    assert failed[2]["data"]["object"]["status"] == "past_due"

    recovered = stand_in.recover(sub_id)
    assert types(recovered) == ["invoice.paid", "customer.subscription.updated"]
    assert recovered[0]["data"]["object"]["id"] == failed[1]["data"]["object"]["id"]
    assert recovered[0]["data"]["object"]["attempt_count"] == 2
    assert recovered[1]["data"]["previous_attributes"] == {"status": "past_due"}
    assert recovered[1]["data"]["object"]["status"] == "active"

    action = stand_in.require_action(sub_id)
    assert types(action) == [
        "customer.subscription.updated",
        "invoice.payment_action_required",
        "customer.subscription.updated",
    ]
    assert action[1]["data"]["object"]["status"] == "open"
    assert action[2]["data"]["object"]["status"] == "past_due"

    unpaid = stand_in.mark_unpaid(sub_id)
    assert types(unpaid) == ["invoice.payment_failed", "customer.subscription.updated"]
    assert unpaid[0]["data"]["object"]["next_payment_attempt"] is None  # retries are exhausted
    assert unpaid[1]["data"]["previous_attributes"] == {"status": "past_due"}
    assert client.v1.subscriptions.retrieve(sub_id).status == "unpaid"


def test_monthly_periods_keep_the_anchor_day(client: stripe.StripeClient, stand_in: StripeStandIn) -> None:
    stand_in.now = 1_801_396_800  # 2027-01-31 12:00 UTC
    sub_id, _ = subscribe(client, stand_in, price=MONTHLY_PRICE_ID, trial_days=None)
    assert period(stand_in.get(sub_id))[1] == 1_803_816_000  # 2027-02-28 12:00: clamped to February's last day
    stand_in.renew(sub_id)
    assert period(stand_in.get(sub_id)) == (1_803_816_000, 1_806_494_400)  # back to the 31st: 2027-03-31 12:00


def test_plan_change_across_intervals_prorates_and_charges_now(
    client: stripe.StripeClient, stand_in: StripeStandIn
) -> None:
    sub_id, _ = subscribe(client, stand_in, trial_days=None)
    stand_in.advance_clock(7 * DAY // 2)  # half the week is unused
    events = stand_in.change_plan(sub_id, MONTHLY_PRICE_ID)
    assert types(events) == ["customer.subscription.updated", "invoice.paid"]
    sub, previous = events[0]["data"]["object"], events[0]["data"]["previous_attributes"]
    assert sub["items"]["data"][0]["price"]["id"] == MONTHLY_PRICE_ID
    assert previous["items"]["data"][0]["price"]["id"] == WEEKLY_PRICE_ID
    assert period(sub)[0] == stand_in.now
    assert sub["billing_cycle_anchor"] == stand_in.now

    invoice = events[1]["data"]["object"]
    assert invoice["billing_reason"] == "subscription_update"
    amounts = [line["amount"] for line in invoice["lines"]["data"]]
    assert amounts == [-450, 2900]
    assert invoice["lines"]["data"][0]["parent"]["subscription_item_details"]["proration"] is True
    assert (invoice["total"], invoice["amount_paid"]) == (2450, 2450)


def test_plan_change_during_a_trial_keeps_the_trial(client: stripe.StripeClient, stand_in: StripeStandIn) -> None:
    sub_id, signup = subscribe(client, stand_in)
    events = stand_in.change_plan(sub_id, MONTHLY_PRICE_ID)
    assert types(events) == ["customer.subscription.updated"]
    sub = events[0]["data"]["object"]
    assert (sub["status"], sub["trial_end"]) == ("trialing", signup[1]["data"]["object"]["trial_end"])
    assert sub["items"]["data"][0]["plan"]["interval"] == "month"


def test_cancel_at_period_end_ends_the_subscription_at_renewal(
    client: stripe.StripeClient, stand_in: StripeStandIn
) -> None:
    sub_id, _ = subscribe(client, stand_in, trial_days=None)
    end = period(stand_in.get(sub_id))[1]
    scheduled = stand_in.cancel_at_period_end(sub_id)
    assert types(scheduled) == ["customer.subscription.updated"]
    assert scheduled[0]["data"]["previous_attributes"]["cancel_at_period_end"] is False

    ended = stand_in.renew(sub_id)
    assert types(ended) == ["customer.subscription.deleted"]
    sub = ended[0]["data"]["object"]
    assert (sub["status"], sub["ended_at"], sub["canceled_at"]) == ("canceled", end, scheduled[0]["created"])
    assert client.v1.subscriptions.list().data == []


def test_cancel_now(client: stripe.StripeClient, stand_in: StripeStandIn) -> None:
    sub_id, _ = subscribe(client, stand_in)
    events = stand_in.cancel(sub_id)
    assert types(events) == ["customer.subscription.deleted"]
    sub = events[0]["data"]["object"]
    assert (sub["status"], sub["canceled_at"], sub["ended_at"]) == ("canceled", stand_in.now, stand_in.now)
    with pytest.raises(ValueError, match="canceled"):
        stand_in.renew(sub_id)


def test_pause_and_resume(client: stripe.StripeClient, stand_in: StripeStandIn) -> None:
    sub_id, _ = subscribe(client, stand_in, trial_days=None)
    paused = stand_in.pause(sub_id)
    assert types(paused) == ["customer.subscription.paused"]
    sub = paused[0]["data"]["object"]
    assert sub["status"] == "paused"
    assert sub["status_details"]["paused"]["subscription"]["type"] == "pause_requested"

    stand_in.advance_clock(30 * DAY)
    resumed = stand_in.resume(sub_id)
    assert types(resumed) == ["customer.subscription.resumed", "invoice.paid"]
    sub = resumed[0]["data"]["object"]
    assert (sub["status"], sub["status_details"]) == ("active", None)
    assert period(sub) == (stand_in.now, stand_in.now + 7 * DAY)
    assert resumed[1]["data"]["object"]["amount_paid"] == 900


def test_delete_customer_cancels_live_subscriptions_first(client: stripe.StripeClient, stand_in: StripeStandIn) -> None:
    sub_id, _ = subscribe(client, stand_in)
    customer_id = stand_in.get(sub_id)["customer"]
    events = stand_in.delete_customer(customer_id)
    assert types(events) == ["customer.subscription.deleted", "customer.deleted"]
    assert events[0]["data"]["object"]["id"] == sub_id
    assert events[1]["data"]["object"]["id"] == customer_id
    assert client.v1.customers.retrieve(customer_id).deleted is True
    assert client.v1.subscriptions.retrieve(sub_id).status == "canceled"


def test_steps_refuse_a_subscription_in_the_wrong_state(client: stripe.StripeClient, stand_in: StripeStandIn) -> None:
    sub_id, _ = subscribe(client, stand_in, trial_days=None)
    with pytest.raises(ValueError, match="trialing"):
        stand_in.end_trial(sub_id)
    with pytest.raises(ValueError, match="past_due"):
        stand_in.recover(sub_id)
    assert stand_in.events[-1]["type"] == "invoice.paid"  # nothing was emitted


# -- outside the API: hosted pages and webhook deliveries --------------------------------------------------------------


def test_events_are_delivered_signed_to_a_registered_endpoint(
    client: stripe.StripeClient, stand_in: StripeStandIn
) -> None:
    received: list[tuple[bytes, str]] = []

    async def endpoint(request: Request) -> Response:
        received.append((await request.body(), request.headers["stripe-signature"]))
        return Response(status_code=500 if len(received) == 1 else 200)  # the first delivery fails and is retried

    listener = socket.create_server(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(Starlette(routes=[Route("/hook", endpoint, methods=["POST"])])))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [listener]}, daemon=True)
    thread.start()
    try:
        while not server.started:
            time.sleep(0.01)
        stand_in.deliver_events_to(f"http://127.0.0.1:{listener.getsockname()[1]}/hook", "whsec_endpoint")
        _, events = subscribe(client, stand_in)
        stand_in.wait_for_deliveries()
    finally:
        stand_in.stop_delivering()  # closes its connection, which the server would otherwise wait for
        server.should_exit = True
        thread.join(timeout=10)
        listener.close()
    assert received[0][0] == received[1][0]  # the refused one again
    delivered = [json.loads(body) for body, _ in received[1:]]
    assert [event["id"] for event in delivered] == [event["id"] for event in stand_in.events]
    assert set(types(events)) <= {event["type"] for event in delivered}
    for body, signature in received:
        stripe.Webhook.construct_event(body, signature, "whsec_endpoint")  # raises unless signed with the secret


def test_the_portal_page_acts_only_on_its_customers_subscriptions(
    client: stripe.StripeClient, stand_in: StripeStandIn
) -> None:
    own, _ = subscribe(client, stand_in, user_id="ada")
    other, _ = subscribe(client, stand_in, user_id="bob")
    customer = client.v1.subscriptions.retrieve(own).customer
    portal = client.v1.billing_portal.sessions.create({"customer": customer, "return_url": "http://localhost/app"})
    page = httpx.get(portal.url)
    assert own in page.text
    assert other not in page.text
    refused = httpx.post(f"{portal.url}/cancel", data={"subscription": other})
    assert refused.status_code == 404
    assert not client.v1.subscriptions.retrieve(other).cancel_at_period_end
    assert httpx.post(f"{portal.url}/delete", data={"subscription": own}).status_code == 404
    done = httpx.post(f"{portal.url}/cancel", data={"subscription": own})
    assert (done.status_code, done.headers["location"]) == (303, f"/billing_portal/{portal.id}")
    assert client.v1.subscriptions.retrieve(own).cancel_at_period_end
    assert types(stand_in.events[-1:]) == ["customer.subscription.updated"]
    assert httpx.post(f"{portal.url}/renew", data={"subscription": own}).status_code == 303
    assert not client.v1.subscriptions.retrieve(own).cancel_at_period_end
    assert httpx.get(f"{stand_in.base_url}/billing_portal/bps_nope").status_code == 404
