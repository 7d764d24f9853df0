"""POST /billing/checkout and POST /billing/portal for a signed-in user, against the Stripe stand-in."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from tests.billing.conftest import Billing


def customers(billing: Billing) -> list[dict]:
    return [o for o in billing.stand_in._objects.values() if o.get("object") == "customer"]


def test_checkout_needs_a_token(billing: Billing) -> None:
    response = billing.api.post("/billing/checkout", json={"plan": "monthly"})
    assert response.status_code == 401
    assert response.headers["content-type"] == "application/problem+json"


def test_checkout_names_the_bad_field(billing: Billing) -> None:
    user = billing.sign_up()
    response = billing.api.post("/billing/checkout", json={"plan": "Monthly!"}, headers=billing.auth(user))
    assert response.status_code == 422
    assert response.json()["errors"][0]["field"] == "body.plan"
    extra = billing.api.post("/billing/checkout", json={"plan": "monthly", "price": 0}, headers=billing.auth(user))
    assert extra.status_code == 422
    assert extra.json()["errors"][0]["field"] == "body.price"


def test_an_unknown_plan_is_a_404_listing_the_plans(billing: Billing) -> None:
    user = billing.sign_up()
    response = billing.api.post("/billing/checkout", json={"plan": "gold"}, headers=billing.auth(user))
    assert response.status_code == 404
    assert response.json()["hint"] == "Choose one of: weekly, monthly"


def test_first_checkout_creates_the_customer_once_and_offers_the_trial(billing: Billing) -> None:
    user = billing.sign_up()
    first = billing.api.post("/billing/checkout", json={"plan": "weekly"}, headers=billing.auth(user))
    again = billing.api.post("/billing/checkout", json={"plan": "monthly"}, headers=billing.auth(user))
    assert (first.status_code, again.status_code) == (201, 201)
    assert first.json()["trial_days"] == 7
    assert first.json()["url"].startswith("http")
    assert len(customers(billing)) == 1
    session = billing.stand_in.get(again.json()["id"])
    assert session["client_reference_id"] == user
    assert session["customer"] == customers(billing)[0]["id"]
    stored = billing.conn.execute(
        "select stripe_customer_id from public.billing_customers where user_id = %s", (user,)
    ).fetchone()
    assert stored == (session["customer"],)


def test_concurrent_checkouts_share_one_customer(billing: Billing) -> None:
    user = billing.sign_up()
    with ThreadPoolExecutor(4) as pool:
        responses = list(
            pool.map(
                lambda _: billing.api.post("/billing/checkout", json={"plan": "monthly"}, headers=billing.auth(user)),
                range(4),
            )
        )
    assert [r.status_code for r in responses] == [201] * 4
    assert len(customers(billing)) == 1


def test_a_live_subscription_refuses_a_second_checkout(billing: Billing) -> None:
    user, _, events = billing.subscribe()
    billing.deliver_all(events)
    response = billing.api.post("/billing/checkout", json={"plan": "weekly"}, headers=billing.auth(user))
    assert response.status_code == 409
    assert "portal" in response.json()["hint"]


def test_no_second_trial_after_a_canceled_subscription(billing: Billing) -> None:
    user, subscription, events = billing.subscribe()
    billing.deliver_all(events)
    billing.deliver_all(billing.stand_in.cancel(subscription))
    response = billing.api.post("/billing/checkout", json={"plan": "monthly"}, headers=billing.auth(user))
    assert response.status_code == 201
    assert response.json()["trial_days"] == 0
    assert "trial_period_days" not in str(billing.stand_in.get(response.json()["id"]).get("subscription_data", ""))


def test_portal_needs_a_billing_account_then_opens(billing: Billing) -> None:
    user = billing.sign_up()
    missing = billing.api.post("/billing/portal", headers=billing.auth(user))
    assert missing.status_code == 404
    assert "checkout" in missing.json()["hint"]
    billing.api.post("/billing/checkout", json={"plan": "monthly"}, headers=billing.auth(user))
    opened = billing.api.post("/billing/portal", headers=billing.auth(user))
    assert opened.status_code == 201
    assert opened.json()["id"].startswith("bps_")


def test_stripe_down_is_a_503(billing: Billing) -> None:
    user = billing.sign_up()
    billing.stand_in.outage = True
    try:
        response = billing.api.post("/billing/checkout", json={"plan": "monthly"}, headers=billing.auth(user))
    finally:
        billing.stand_in.outage = False
    assert response.status_code == 503
    assert response.headers["retry-after"]
