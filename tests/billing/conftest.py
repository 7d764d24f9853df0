"""Fixtures for the billing tests: a Stripe stand-in served over HTTP and the real stripe client pointed at it."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import jwt
import psycopg
import pytest
import stripe
from fastapi.testclient import TestClient
from psycopg.rows import dict_row

from functions.billing import api, webhook
from functions.billing.settings import BillingApiSettings, WebhookSettings
from prep.stripe_stand_in import StripeStandIn, event_payload, sign_payload
from shared.config import DatabaseSettings
from shared.db.psycopg_transport import PsycopgDatabase
from tests.support.identities import sign_up, user_claims

START = 1_790_000_000  # 2026-09-21 14:13:20 UTC; a fixed clock keeps timestamps in assertions exact


@pytest.fixture(scope="session")
def running_stand_in() -> Iterator[StripeStandIn]:
    with StripeStandIn() as running:
        yield running


@pytest.fixture
def stand_in(running_stand_in: StripeStandIn) -> StripeStandIn:
    """The one running stand-in, emptied for this test: its clock at START, no objects but the two prices."""
    running_stand_in.reset(now=START)
    return running_stand_in


@pytest.fixture
def client(stand_in: StripeStandIn) -> stripe.StripeClient:
    assert stand_in.base_url
    return stripe.StripeClient("sk_test_stand_in", base_addresses={"api": stand_in.base_url})


WEBHOOK_SECRET = "whsec_test_billing"
JWT_SECRET = "local-jwt-secret-with-at-least-32-characters!"
ISSUER = "http://127.0.0.1:54321/auth/v1"


class Billing:
    """The billing functions as deployed, over HTTP (ASGI), against the real database and the Stripe stand-in."""

    def __init__(self, stand_in: StripeStandIn, database_url: str) -> None:
        self.stand_in = stand_in
        self.conn = psycopg.connect(database_url, autocommit=True)
        common = {
            "database_url": database_url,
            "db_pool_size": 4,
            "stripe_secret_key": "sk_test_stand_in",
            "stripe_api_base": stand_in.base_url,
        }
        self.database = PsycopgDatabase(DatabaseSettings(database_url=database_url, db_pool_size=4))
        self.webhook_app = webhook.build_app(
            WebhookSettings(stripe_webhook_secret=WEBHOOK_SECRET, **common), database=self.database
        )
        self.webhook = TestClient(self.webhook_app)
        self.api = TestClient(
            api.build_app(
                BillingApiSettings(
                    supabase_jwt_secret=JWT_SECRET,
                    supabase_jwt_issuer=ISSUER,
                    checkout_success_url="http://app.test/ok",
                    checkout_cancel_url="http://app.test/cancel",
                    portal_return_url="http://app.test/account",
                    **common,
                ),
                database=self.database,
            )
        )

    def sign_up(self) -> str:
        return str(sign_up(self.conn))

    def auth(self, user_id: str) -> dict[str, str]:
        claims = {**user_claims(user_id), "iss": ISSUER, "exp": int(time.time()) + 600}  # type: ignore[arg-type]
        return {"authorization": "Bearer " + jwt.encode(claims, JWT_SECRET, algorithm="HS256")}

    def deliver(self, event: dict, *, secret: str = WEBHOOK_SECRET, timestamp: int | None = None) -> Any:
        body = event_payload(event)
        return self.webhook.post(
            "/stripe/webhook",
            content=body,
            headers={"stripe-signature": sign_payload(body, secret, timestamp), "content-type": "application/json"},
        )

    def deliver_all(self, events: list[dict]) -> list[dict]:
        results = []
        for event in events:
            response = self.deliver(event)
            assert response.status_code == 200, response.text
            results.append(response.json())
        return results

    def subscribe(self, plan: str = "monthly") -> tuple[str, str, list[dict]]:
        """A user through checkout; returns (user id, subscription id, the events Stripe sent, undelivered)."""
        user = self.sign_up()
        response = self.api.post("/billing/checkout", json={"plan": plan}, headers=self.auth(user))
        assert response.status_code == 201, response.text
        events = self.stand_in.complete_checkout(response.json()["id"])
        subscription = next(e["data"]["object"]["id"] for e in events if e["type"].startswith("customer.subscription"))
        return user, subscription, events

    def row(self, subscription: str) -> dict | None:
        with self.conn.cursor(row_factory=dict_row) as cur:
            return cur.execute(
                "select s.*, p.code as plan from public.subscriptions s join public.plans p on p.id = s.plan_id"
                " where stripe_subscription_id = %s",
                (subscription,),
            ).fetchone()

    def changes(self, subscription: str) -> list[tuple]:
        return self.conn.execute(
            "select c.old_status::text, c.new_status::text, op.code, np.code from public.subscription_changes c"
            " join public.subscriptions s on s.id = c.subscription_id"
            " left join public.plans op on op.id = c.old_plan_id join public.plans np on np.id = c.new_plan_id"
            " where s.stripe_subscription_id = %s order by c.occurred_at, c.created_at",
            (subscription,),
        ).fetchall()

    def recorded(self, event_id: str) -> str | None:
        row = self.conn.execute("select outcome from private.stripe_events where id = %s", (event_id,)).fetchone()
        return row[0] if row else None


@pytest.fixture
def billing(stand_in: StripeStandIn, database_url: str) -> Iterator[Billing]:
    harness = Billing(stand_in, database_url)
    yield harness
    harness.conn.close()
    harness.database.close()
