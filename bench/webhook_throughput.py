"""Stripe webhook throughput: signed events through the ASGI app, in one process, against the real database.

Setup (not timed): a fresh scratch database, USERS users who each subscribe through the Stripe stand-in and
go through a trial ending and a renewal. Their subscription events are signed, and every event is queued
twice (Stripe redelivers), shuffled so deliveries of one subscription overlap. Then SENDERS concurrent
senders post them all. Afterwards: every event recorded once, no event applied twice, and every subscription
in the state Stripe holds. Target: >= 200 events/s with 16 senders, zero double-applied events.

Run: .venv/bin/python -m bench.webhook_throughput [--users 400] [--senders 16]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import psycopg
import stripe
from rich.console import Console
from rich.table import Table

from bench.database import fresh_scratch_database
from functions.billing.settings import WebhookSettings
from functions.billing.webhook import build_app
from prep.stripe_stand_in import MONTHLY_PRICE_ID, StripeStandIn, event_payload, sign_payload

SECRET = "whsec_bench"
OUT = Path(__file__).parent / "out" / "webhook_throughput.json"
console = Console()


def subscription_events(stand_in: StripeStandIn, url: str, users: int) -> tuple[list[dict[str, Any]], list[str]]:
    """Each user subscribes, ends the trial and renews; their customer.subscription.* events, undelivered."""
    client = stripe.StripeClient("sk_test_bench", base_addresses={"api": stand_in.start()})
    events: list[dict[str, Any]] = []
    subscriptions = []
    with psycopg.connect(url, autocommit=True) as conn:
        for _ in range(users):
            user_id = str(uuid.uuid4())
            conn.execute(
                "insert into auth.users (id, aud, role, email, raw_app_meta_data, raw_user_meta_data, created_at)"
                " values (%s, 'authenticated', 'authenticated', %s, '{\"provider\": \"email\"}', '{}', now())",
                (user_id, f"{user_id}@bench.test"),
            )
            customer = client.v1.customers.create({"metadata": {"user_id": user_id}})
            session = client.v1.checkout.sessions.create(
                {
                    "mode": "subscription",
                    "customer": customer.id,
                    "client_reference_id": user_id,
                    "line_items": [{"price": MONTHLY_PRICE_ID, "quantity": 1}],
                    "subscription_data": {"trial_period_days": 7, "metadata": {"user_id": user_id}},
                    "success_url": "http://bench.test/ok",
                    "cancel_url": "http://bench.test/cancel",
                }
            )
            produced = stand_in.complete_checkout(session.id)
            subscription = next(e["data"]["object"]["id"] for e in produced if e["type"].startswith("customer.sub"))
            stand_in.advance_clock(7 * 86_400)
            produced += stand_in.end_trial(subscription)
            stand_in.advance_clock(30 * 86_400)
            produced += stand_in.renew(subscription)
            stand_in.advance_clock(-37 * 86_400)
            events += [e for e in produced if e["type"].startswith("customer.subscription.")]
            subscriptions.append(subscription)
    return events, subscriptions


async def send_all(app: Any, deliveries: list[bytes], senders: int) -> tuple[list[float], list[dict[str, Any]]]:
    queue: asyncio.Queue[bytes] = asyncio.Queue()
    for body in deliveries:
        queue.put_nowait(body)
    latencies: list[float] = []
    results: list[dict[str, Any]] = []

    async def sender(client: httpx.AsyncClient) -> None:
        while not queue.empty():
            body = queue.get_nowait()
            started = time.perf_counter()
            response = await client.post(
                "/stripe/webhook", content=body, headers={"stripe-signature": sign_payload(body, SECRET)}
            )
            latencies.append(time.perf_counter() - started)
            if response.status_code != 200:
                raise RuntimeError(f"webhook answered {response.status_code}: {response.text}")
            results.append(response.json())

    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://bench") as client:
        await asyncio.gather(*(sender(client) for _ in range(senders)))
    return latencies, results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, default=400)
    parser.add_argument("--senders", type=int, default=16)
    args = parser.parse_args()

    os.environ["LOG_LEVEL"] = "WARNING"  # one log line per event would measure the terminal
    url = fresh_scratch_database("prep_bench_webhook", "webhook_throughput")
    with StripeStandIn() as stand_in:
        events, subscriptions = subscription_events(stand_in, url, args.users)
        final_status = {s: stand_in.get(s)["status"] for s in subscriptions}
    deliveries = [event_payload(e) for e in events] * 2
    random.Random(7).shuffle(deliveries)

    settings = WebhookSettings(
        database_url=url, db_pool_size=args.senders, stripe_secret_key="sk_test_bench", stripe_webhook_secret=SECRET
    )
    app = build_app(settings)
    started = time.perf_counter()
    latencies, results = asyncio.run(send_all(app, deliveries, args.senders))
    elapsed = time.perf_counter() - started

    with psycopg.connect(url) as conn:
        recorded = conn.execute("select count(*) from private.stripe_events").fetchone()[0]
        double_applied = conn.execute(
            "select count(*) from (select stripe_event_id from public.subscription_changes"
            " group by stripe_event_id having count(*) > 1) twice"
        ).fetchone()[0]
        wrong_state = sum(
            1
            for s, status in final_status.items()
            if conn.execute(
                "select status::text from public.subscriptions where stripe_subscription_id = %s", (s,)
            ).fetchone()
            != (status,)
        )
    outcomes: dict[str, int] = {}
    for result in results:
        outcomes[result["outcome"]] = outcomes.get(result["outcome"], 0) + 1

    figures = {
        "deliveries": len(deliveries),
        "distinct_events": len(events),
        "senders": args.senders,
        "seconds": round(elapsed, 2),
        "events_per_second": round(len(deliveries) / elapsed, 1),
        "p50_ms": round(statistics.median(latencies) * 1000, 2),
        "p95_ms": round(statistics.quantiles(latencies, n=20)[18] * 1000, 2),
        "outcomes": outcomes,
        "recorded_events": recorded,
        "double_applied_events": double_applied,
        "subscriptions_not_in_stripes_state": wrong_state,
    }
    table = Table(
        title=f"Webhook: {len(deliveries)} deliveries ({len(events)} events, each twice), "
        f"{args.senders} concurrent senders, one process"
    )
    table.add_column("figure")
    table.add_column("value")
    table.add_column("target")
    targets = {"events_per_second": ">= 200", "double_applied_events": "0", "subscriptions_not_in_stripes_state": "0"}
    for key, value in figures.items():
        table.add_row(key, str(value), targets.get(key, ""))
    console.print(table)
    OUT.parent.mkdir(exist_ok=True)
    OUT.write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
