"""The Stripe webhook, end to end: signed real-shaped events over HTTP, the real database, Stripe's API stand-in."""

from __future__ import annotations

import asyncio
import itertools
import json
import time

import httpx
import pytest

from functions.billing import webhook as webhook_module
from prep.stripe_stand_in import event_payload, sign_payload
from tests.billing.conftest import WEBHOOK_SECRET, Billing
from tests.support.metrics import dimension_sets, documents, values


def test_full_lifecycle_checkout_trial_active_past_due_canceled(billing: Billing) -> None:
    user, subscription, events = billing.subscribe("monthly")
    billing.deliver_all(events)
    row = billing.row(subscription)
    assert row is not None
    assert (row["status"], row["plan"], str(row["user_id"])) == ("trialing", "monthly", user)
    assert row["trial_end"] is not None
    assert row["current_period_end"] is not None

    billing.deliver_all(billing.stand_in.trial_will_end(subscription))
    billing.stand_in.advance_clock(7 * 86_400)
    billing.deliver_all(billing.stand_in.end_trial(subscription, paid=True))
    assert billing.row(subscription)["status"] == "active"

    billing.stand_in.advance_clock(30 * 86_400)
    billing.deliver_all(billing.stand_in.renew(subscription, paid=False))
    past_due = billing.row(subscription)
    assert past_due["status"] == "past_due"
    grace_ends = past_due["current_period_start"].timestamp() + 3 * 86_400
    entitled = billing.conn.execute(
        "select (select plan_code from public.entitlements(%(u)s, to_timestamp(%(inside)s))),"
        " (select plan_code from public.entitlements(%(u)s, to_timestamp(%(after)s)))",
        {"u": user, "inside": grace_ends - 3600, "after": grace_ends + 3600},
    ).fetchone()
    assert entitled == ("monthly", "free")

    billing.deliver_all(billing.stand_in.cancel(subscription))
    assert billing.row(subscription)["status"] == "canceled"
    assert billing.changes(subscription) == [
        (None, "trialing", None, "monthly"),
        ("trialing", "active", "monthly", "monthly"),
        ("active", "past_due", "monthly", "monthly"),
        ("past_due", "canceled", "monthly", "monthly"),
    ]


def test_plan_change_is_audited(billing: Billing) -> None:
    _, subscription, events = billing.subscribe("weekly")
    billing.deliver_all(events)
    billing.deliver_all(billing.stand_in.change_plan(subscription, "price_local_monthly"))
    assert billing.row(subscription)["plan"] == "monthly"
    assert billing.changes(subscription)[-1] == ("trialing", "trialing", "weekly", "monthly")


def test_cancel_at_period_end_keeps_access_until_the_period_ends(billing: Billing) -> None:
    user, subscription, events = billing.subscribe()
    billing.deliver_all(events)
    billing.deliver_all(billing.stand_in.cancel_at_period_end(subscription))
    row = billing.row(subscription)
    assert row["cancel_at_period_end"] is True
    assert row["status"] == "trialing"
    assert billing.conn.execute("select plan_code from public.entitlements(%s)", (user,)).fetchone() == ("monthly",)


def test_pause_resume_and_customer_deletion(billing: Billing) -> None:
    user, subscription, events = billing.subscribe()
    billing.deliver_all(events)
    billing.stand_in.advance_clock(8 * 86_400)
    billing.deliver_all(billing.stand_in.end_trial(subscription))
    billing.deliver_all(billing.stand_in.pause(subscription))
    assert billing.row(subscription)["status"] == "paused"
    billing.deliver_all(billing.stand_in.resume(subscription))
    assert billing.row(subscription)["status"] == "active"
    customer = billing.row(subscription)["stripe_customer_id"]
    results = billing.deliver_all(billing.stand_in.delete_customer(customer))
    assert [r["outcome"] for r in results] == ["applied"] * len(results)
    assert billing.row(subscription)["status"] == "canceled"
    deleted_at = billing.conn.execute(
        "select deleted_at from public.billing_customers where user_id = %s", (user,)
    ).fetchone()[0]
    assert deleted_at is not None


def test_redelivery_is_a_200_with_no_effect(billing: Billing) -> None:
    _, subscription, events = billing.subscribe()
    first = billing.deliver_all(events)
    again = billing.deliver_all(events)
    assert [r["outcome"] for r in first] == ["applied"] * len(events)
    assert [r["outcome"] for r in again] == ["duplicate"] * len(events)
    assert len(billing.changes(subscription)) == 1


def test_twenty_concurrent_deliveries_of_one_event_apply_it_once(billing: Billing) -> None:
    _, subscription, events = billing.subscribe()
    created = next(e for e in events if e["type"] == "customer.subscription.created")
    body = event_payload(created)

    async def deliver_concurrently() -> list[httpx.Response]:
        transport = httpx.ASGITransport(app=billing.webhook_app)
        async with httpx.AsyncClient(transport=transport, base_url="http://webhook") as client:
            return await asyncio.gather(
                *[
                    client.post(
                        "/stripe/webhook",
                        content=body,
                        headers={"stripe-signature": sign_payload(body, WEBHOOK_SECRET)},
                    )
                    for _ in range(20)
                ]
            )

    responses = asyncio.run(deliver_concurrently())
    assert [r.status_code for r in responses] == [200] * 20
    outcomes = sorted(r.json()["outcome"] for r in responses)
    assert outcomes == ["applied"] + ["duplicate"] * 19
    assert len(billing.changes(subscription)) == 1


def _lifecycle(billing: Billing) -> tuple[str, list[dict]]:
    """A subscription through trial, payment, a failed renewal and cancellation; its events, undelivered."""
    _, subscription, events = billing.subscribe()
    billing.stand_in.advance_clock(7 * 86_400)
    events += billing.stand_in.end_trial(subscription)
    billing.stand_in.advance_clock(30 * 86_400)
    events += billing.stand_in.renew(subscription, paid=False)
    billing.stand_in.advance_clock(86_400)
    events += billing.stand_in.cancel(subscription)
    return subscription, events


LIFECYCLE_LENGTH = 9  # checkout (3) + end_trial (2) + failed renewal (3) + cancel (1)


def test_the_lifecycle_has_the_expected_length(billing: Billing) -> None:
    _, events = _lifecycle(billing)
    assert len(events) == LIFECYCLE_LENGTH, [e["type"] for e in events]


@pytest.mark.parametrize(("early", "late"), list(itertools.combinations(range(LIFECYCLE_LENGTH), 2)))
def test_out_of_order_pairs_never_let_older_state_win(billing: Billing, early: int, late: int) -> None:
    subscription, events = _lifecycle(billing)
    swapped = list(events)
    swapped[early], swapped[late] = swapped[late], swapped[early]
    billing.deliver_all(swapped)
    row = billing.row(subscription)
    final = billing.stand_in.get(subscription)
    assert row["status"] == final["status"] == "canceled"
    assert row["ended_at"].timestamp() == final["ended_at"]
    statuses = [new for _, new, _, _ in billing.changes(subscription)]
    assert statuses[-1] == "canceled"


def test_events_of_the_same_second_are_settled_by_reading_stripe(billing: Billing) -> None:
    _, subscription, events = billing.subscribe()
    billing.deliver_all(events)
    billing.stand_in.advance_clock(7 * 86_400)
    same_second = billing.stand_in.end_trial(subscription, paid=False)
    updates = [e for e in same_second if e["type"] == "customer.subscription.updated"]
    assert len(updates) == 2
    assert updates[0]["created"] == updates[1]["created"]
    results = billing.deliver_all(list(reversed(same_second)))
    assert "needs_refresh" not in {r["outcome"] for r in results}
    assert billing.row(subscription)["status"] == billing.stand_in.get(subscription)["status"] == "past_due"


@pytest.mark.parametrize(
    ("mangle", "reason"),
    [
        (lambda body, header: (body.replace(b"trialing", b"active"), header), "No signatures found matching"),
        (lambda body, header: (body, sign_payload(body, "whsec_someone_else")), "No signatures found matching"),
        (lambda body, header: (body, sign_payload(body, WEBHOOK_SECRET, int(time.time()) - 301)), "tolerance"),
        (lambda body, header: (body, None), "No stripe-signature header"),
        (lambda body, header: (body, "t=1,v0=abc"), "No signatures found"),
    ],
    ids=["tampered-body", "wrong-secret", "expired", "missing", "garbage"],
)
def test_bad_signatures_are_400_and_write_nothing(
    billing: Billing, mangle, reason: str, caplog: pytest.LogCaptureFixture
) -> None:
    _, subscription, events = billing.subscribe()
    created = next(e for e in events if e["type"] == "customer.subscription.created")
    body = event_payload(created)
    body, header = mangle(body, sign_payload(body, WEBHOOK_SECRET))
    response = billing.webhook.post(
        "/stripe/webhook", content=body, headers={"stripe-signature": header} if header else {}
    )
    assert response.status_code == 400
    assert response.headers["content-type"] == "application/problem+json"
    assert reason.lower() in response.json()["detail"].lower()
    assert billing.recorded(created["id"]) is None
    assert billing.row(subscription) is None
    # The operator sees why too: the log names the refusal and what to check.
    (refusal,) = [r for r in caplog.records if r.getMessage() == "request refused"]
    assert (refusal.levelname, refusal.status, refusal.title) == ("WARNING", 400, "Invalid signature")
    assert "STRIPE_WEBHOOK_SECRET" in refusal.detail


@pytest.mark.parametrize(
    "body",
    [
        b"{not json",
        b'{"id": "evt_1"}',
        b'{"id": "evt_2", "object": "event", "type": "customer.subscription.updated",'
        b' "created": 1, "data": {"object": {"id": "sub_x"}}}',
        # Each of these was a 500 (found fuzzing the webhook, tests/fuzz).
        b'{"id": "evt_1", "type": "charge.refunded", "created": 100000000000000000000, "data": {"object": {}}}',
        b'{"id": "evt_2", "type": "customer.subscription.updated", "created": 1, "data": {"object": {"id": "sub_x",'
        b' "customer": "cus_x", "status": "active", "items": {"data": []}, "trial_end": 100000000000000000000}}}',
        b"[" * 100_000 + b"]" * 100_000,
        # Was refused as an invalid signature, though correctly signed: the bytes were decoded lossily to verify.
        b'{"id": "evt_1", "type": "charge.refunded", "created": 1, "data": {"object": {"name": "Ren\xe9"}}}',
        # Was accepted (found by tests/fuzz), though Stripe never types the envelope so.
        b'{"id": "evt_1", "type": "charge.refunded", "created": 1, "livemode": 0, "data": {"object": {}}}',
    ],
    ids=[
        "not-json",
        "not-an-event",
        "subscription-without-fields",
        "created-after-year-9999",
        "trial-end-after-year-9999",
        "nested-too-deep",
        "not-utf-8",
        "livemode-not-a-boolean",
    ],
)
def test_malformed_bodies_are_400_and_write_nothing(billing: Billing, body: bytes) -> None:
    response = billing.webhook.post(
        "/stripe/webhook", content=body, headers={"stripe-signature": sign_payload(body, WEBHOOK_SECRET)}
    )
    assert response.status_code == 400
    assert response.json()["title"] == "Malformed event"
    assert (
        billing.conn.execute("select count(*) from private.stripe_events where id in ('evt_1', 'evt_2')").fetchone()[0]
        == 0
    )


def test_unhandled_event_types_are_recorded_as_ignored(billing: Billing) -> None:
    event = {
        "id": "evt_unhandled_1",
        "object": "event",
        "api_version": "2026-10-28.endive",
        "created": 1_790_000_000,
        "livemode": False,
        "type": "charge.refunded",
        "data": {"object": {"id": "ch_1", "object": "charge"}},
    }
    response = billing.deliver(event)
    assert response.status_code == 200
    assert response.json()["outcome"] == "ignored"
    assert billing.recorded("evt_unhandled_1") == "ignored"


def test_database_failing_mid_event_is_a_503_then_the_retry_applies(billing: Billing) -> None:
    _, subscription, events = billing.subscribe()
    billing.conn.execute(
        """
        create function pg_temp.fail_once() returns trigger language plpgsql as $$
        begin
          raise exception 'simulated connection loss' using errcode = '08006';
        end $$;
        """
    )
    billing.conn.execute(
        "create trigger simulated_outage before insert on public.subscription_changes"
        " for each row execute function pg_temp.fail_once()"
    )
    created = next(e for e in events if e["type"] == "customer.subscription.created")
    try:
        failed = billing.deliver(created)
    finally:
        billing.conn.execute("drop trigger simulated_outage on public.subscription_changes")
    assert failed.status_code == 503
    assert failed.headers["retry-after"]
    assert billing.recorded(created["id"]) is None
    assert billing.row(subscription) is None  # the subscription written before the failure was rolled back

    retried = billing.deliver(created)
    assert retried.status_code == 200
    assert retried.json()["outcome"] == "applied"
    assert billing.row(subscription)["status"] == "trialing"


def test_stripe_api_down_is_a_503_then_the_retry_applies(billing: Billing) -> None:
    _, subscription, events = billing.subscribe()
    completed = next(e for e in events if e["type"] == "checkout.session.completed")
    billing.stand_in.outage = True
    try:
        failed = billing.deliver(completed)
    finally:
        billing.stand_in.outage = False
    assert failed.status_code == 503
    assert billing.recorded(completed["id"]) is None
    assert billing.deliver(completed).json()["outcome"] == "applied"
    assert billing.row(subscription)["status"] == "trialing"


def test_a_database_that_is_down_is_a_503_problem(billing: Billing) -> None:
    from fastapi.testclient import TestClient

    from functions.billing.settings import WebhookSettings
    from functions.billing.webhook import build_app
    from shared.db import connect

    settings = WebhookSettings(
        database_url="postgresql://postgres@127.0.0.1:1/x",
        db_timeout_seconds=1,
        stripe_secret_key="sk_test_x",
        stripe_webhook_secret=WEBHOOK_SECRET,
    )
    # Closed at the end, or its pool keeps retrying the dead server in the background after the test.
    database = connect(settings)
    app = build_app(settings, database=database)
    event = {
        "id": "evt_db_down",
        "object": "event",
        "created": 1_790_000_000,
        "type": "customer.deleted",
        "data": {"object": {"id": "cus_x", "object": "customer"}},
    }
    body = json.dumps(event).encode()
    response = TestClient(app).post(
        "/stripe/webhook", content=body, headers={"stripe-signature": sign_payload(body, WEBHOOK_SECRET)}
    )
    database.close()
    assert response.status_code == 503
    assert response.json()["title"] == "Database unavailable"


def test_first_events_of_a_new_subscription_arriving_together_all_succeed(billing: Billing) -> None:
    _, subscription, events = billing.subscribe()
    billing.stand_in.advance_clock(8 * 86_400)
    events += billing.stand_in.end_trial(subscription)
    updates = [e for e in events if e["type"].startswith("customer.subscription.")]

    async def deliver_together() -> list[httpx.Response]:
        transport = httpx.ASGITransport(app=billing.webhook_app)
        async with httpx.AsyncClient(transport=transport, base_url="http://webhook") as client:
            bodies = [event_payload(e) for e in updates]
            return await asyncio.gather(
                *[
                    client.post(
                        "/stripe/webhook",
                        content=body,
                        headers={"stripe-signature": sign_payload(body, WEBHOOK_SECRET)},
                    )
                    for body in bodies
                ]
            )

    responses = asyncio.run(deliver_together())
    assert [r.status_code for r in responses] == [200] * len(updates)
    assert billing.row(subscription)["status"] == "active"


@pytest.mark.usefixtures("in_lambda")
def test_each_delivery_counts_in_webhook_events_by_type_and_outcome(
    billing: Billing, capsys: pytest.CaptureFixture[str]
) -> None:
    _, _, events = billing.subscribe()
    capsys.readouterr()
    billing.deliver_all(events)
    billing.deliver(events[0])  # again: a duplicate
    assert billing.deliver(events[0], secret="whsec_wrong").status_code == 400
    found = documents(capsys.readouterr().out)

    assert values(found, "WebhookEvents", EventType="customer.subscription.created", Outcome="applied") == [1]
    assert sum(values(found, "WebhookEvents", Outcome="duplicate")) == 1
    assert sum(values(found, "WebhookEvents", Outcome="refused")) == 1
    assert len(values(found, "WebhookEvents")) == len(events) + 2
    # By outcome alone too: the 5xx alarm watches Outcome=failed over every event type.
    assert dimension_sets(found, "WebhookEvents") == {("EventType", "Outcome"), ("Outcome",)}
    assert {d["EventType"] for d in found} <= webhook_module.HANDLED_EVENTS | {"other"}
