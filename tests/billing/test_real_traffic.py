"""Billing under real Stripe traffic: a recorded set of events (tests/billing/fixtures) replayed signed through
the webhook, in several API versions, with a user holding two live subscriptions, a customer nobody is linked to
until later, and a deleted customer. Every delivery is a 200 and the state is the documented one."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tests.billing.conftest import Billing

FIXTURES = Path(__file__).parent / "fixtures"


def load_fixture(name: str, users: dict[str, str]) -> dict[str, Any]:
    text = (FIXTURES / name).read_text()
    for placeholder, user_id in users.items():
        text = text.replace("{{" + placeholder + "}}", user_id)
    return json.loads(text)


def open_alerts(billing: Billing) -> list[tuple[str, str]]:
    return billing.conn.execute(
        "select kind, subject from private.operator_alerts where resolved_at is null order by kind, subject"
    ).fetchall()


def subscriptions_of(billing: Billing, user: str) -> list[tuple[str, str, str]]:
    return billing.conn.execute(
        "select s.stripe_subscription_id, p.code, s.status::text from public.subscriptions s"
        " join public.plans p on p.id = s.plan_id where s.user_id = %s order by s.stripe_created_at",
        (user,),
    ).fetchall()


def plan_of(billing: Billing, user: str) -> str:
    return billing.conn.execute("select plan_code from public.entitlements(%s)", (user,)).fetchone()[0]


def test_real_traffic_is_all_200_and_ends_in_the_documented_state(billing: Billing) -> None:
    users = {name: billing.sign_up() for name in ("user_a", "user_b", "user_c")}
    fixture = load_fixture("real_traffic.json", users)
    billing.stand_in._objects.update(fixture["stripe_subscriptions"])  # what the webhook reads back from Stripe
    events = fixture["events"]
    assert {e["api_version"] for e in events} == {"2026-10-28.endive", "2024-06-20", "2020-03-02"}

    answers = billing.deliver_all(events)

    subscription = {e["id"]: e["data"]["object"].get("subscription") or e["data"]["object"]["id"] for e in events}
    by_type = [(e["type"], e["api_version"], answer["outcome"]) for e, answer in zip(events, answers, strict=True)]
    assert by_type == [
        # A: two checkouts in two tabs; the second live subscription is recorded, not refused.
        ("checkout.session.completed", "2026-10-28.endive", "applied"),
        ("customer.subscription.created", "2026-10-28.endive", "applied"),
        ("invoice.paid", "2024-06-20", "applied"),  # pre-basil: invoice.subscription
        ("checkout.session.completed", "2026-10-28.endive", "applied"),
        ("customer.subscription.created", "2026-10-28.endive", "applied"),
        ("invoice.paid", "2026-10-28.endive", "applied"),  # invoice.parent.subscription_details
        # B: a dashboard-made subscription of a customer nobody is linked to: recorded, answered 200...
        ("customer.subscription.created", "2024-06-20", "unlinked"),
        ("invoice.paid", "2024-06-20", "unlinked"),
        ("customer.subscription.deleted", "2024-06-20", "unlinked"),
        # ...until the user's checkout on that customer links it.
        ("checkout.session.completed", "2026-10-28.endive", "applied"),
        ("customer.subscription.created", "2026-10-28.endive", "applied"),
        ("invoice.paid", "2026-10-28.endive", "applied"),
        # C: a subscription event from API 2020-03-02 (items carry only their plan), then the customer is deleted.
        ("checkout.session.completed", "2026-10-28.endive", "applied"),
        ("customer.subscription.created", "2020-03-02", "applied"),
        ("invoice.paid", "2026-10-28.endive", "applied"),
        ("customer.subscription.deleted", "2026-10-28.endive", "applied"),
        ("customer.deleted", "2026-10-28.endive", "applied"),
        # A one-off invoice (no subscription): nothing to do.
        ("invoice.paid", "2024-06-20", "ignored"),
    ]

    a1, a2 = (subscription[e["id"]] for e in events[:6] if e["type"] == "customer.subscription.created")
    b1 = subscription[events[6]["id"]]
    b2 = subscription[events[10]["id"]]
    c1 = subscription[events[13]["id"]]
    assert subscriptions_of(billing, users["user_a"]) == [(a1, "weekly", "trialing"), (a2, "monthly", "trialing")]
    assert subscriptions_of(billing, users["user_b"]) == [(b1, "weekly", "canceled"), (b2, "monthly", "active")]
    assert subscriptions_of(billing, users["user_c"]) == [(c1, "monthly", "canceled")]
    assert billing.changes(b1) == [(None, "trialing", None, "weekly"), ("trialing", "canceled", "weekly", "weekly")]

    # The rule: the highest plan among the granting subscriptions, ties by the earliest created.
    assert [plan_of(billing, users[u]) for u in ("user_a", "user_b", "user_c")] == ["monthly", "monthly", "free"]

    # Every event recorded once, with its API version; B's were applied when the customer was linked.
    recorded = dict(
        billing.conn.execute(
            "select id, outcome || ' ' || api_version from private.stripe_events where id = any(%s)",
            ([e["id"] for e in events],),
        ).fetchall()
    )
    assert [recorded[e["id"]] for e in events[6:9]] == ["applied 2024-06-20"] * 3
    assert (
        billing.conn.execute(
            "select count(*) from private.stripe_events where pending_snapshot is not null"
        ).fetchone()[0]
        == 0
    )

    assert open_alerts(billing) == [("duplicate_live_subscriptions", users["user_a"])]
    detail = billing.conn.execute(
        "select detail from private.operator_alerts where kind = 'duplicate_live_subscriptions'"
    ).fetchone()[0]
    assert [s["stripe_subscription_id"] for s in detail["live"]] == [a2, a1]  # the granting one first
    resolved = billing.conn.execute(
        "select kind, subject from private.operator_alerts where resolved_at is not null order by kind"
    ).fetchall()
    # B's recorded events, applied in order once linked, made B1 live beside B2 until B1's cancellation applied.
    assert resolved == [
        ("duplicate_live_subscriptions", users["user_b"]),
        ("unlinked_customer", events[6]["data"]["object"]["customer"]),
    ]
    customer_c = events[13]["data"]["object"]["customer"]
    assert billing.conn.execute(
        "select deleted_at is not null from public.billing_customers where stripe_customer_id = %s", (customer_c,)
    ).fetchone() == (True,)

    # Replayed again (Stripe redelivers): all duplicates, nothing changes.
    assert {a["outcome"] for a in billing.deliver_all(events)} == {"duplicate"}
    assert open_alerts(billing) == [("duplicate_live_subscriptions", users["user_a"])]
