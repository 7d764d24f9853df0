"""The account functions against the real database, the Stripe stand-in over HTTP and Storage faked at its HTTP
boundary. Each module's database lifts the one-live-subscription index, as the billing work (migrations 14-15)
does, so a user can hold two live subscriptions."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import Any

import jwt
import psycopg
import pytest
from fastapi.testclient import TestClient
from psycopg.types.json import Jsonb

from functions.account import api
from functions.account.deletion import Deleter
from functions.account.settings import AccountApiSettings
from functions.account.storage import SupabaseRecordings
from prep.stripe_stand_in import MONTHLY_PRICE_ID, StripeStandIn
from shared.config import DatabaseSettings
from shared.db.psycopg_transport import PsycopgDatabase
from shared.db.rls import acting_as
from shared.stripe_client import StripeSettings, stripe_client
from tests.support.dataset import UserData, populate_user
from tests.support.fake_storage import SERVICE_KEY, FakeStorage
from tests.support.identities import user_claims
from tests.support.peers import check_in, matched_room, paid_user, rubric_scores, under_way

JWT_SECRET = "local-jwt-secret-with-at-least-32-characters!"
ISSUER = "http://127.0.0.1:54321/auth/v1"


@pytest.fixture(scope="module")
def running_stand_in() -> Iterator[StripeStandIn]:
    with StripeStandIn() as running:
        yield running


class Accounts:
    def __init__(self, database_url: str, stand_in: StripeStandIn) -> None:
        self.conn = psycopg.connect(database_url, autocommit=True)
        self.stand_in = stand_in
        self.stripe = stripe_client(
            StripeSettings(stripe_secret_key="sk_test_stand_in", stripe_api_base=stand_in.base_url)
        )
        self.storage = FakeStorage(database_url)
        self.database = PsycopgDatabase(DatabaseSettings(database_url=database_url, db_pool_size=2))
        recordings = SupabaseRecordings(
            "http://storage.test", SERVICE_KEY, timeout=5, http_client=self.storage.client()
        )
        self.deleter = Deleter(self.database, self.stripe, recordings)
        settings = AccountApiSettings(
            database_url=database_url,
            stripe_secret_key="sk_test_stand_in",
            stripe_api_base=stand_in.base_url,
            supabase_url="http://storage.test",
            supabase_service_role_key=SERVICE_KEY,
            supabase_jwt_secret=JWT_SECRET,
            supabase_jwt_issuer=ISSUER,
        )
        self.api = TestClient(api.build_app(settings, database=self.database, deleter=self.deleter))

    def auth(self, user_id: uuid.UUID, **overrides: Any) -> dict[str, str]:
        claims = {**user_claims(user_id), "iss": ISSUER, "exp": int(time.time()) + 600, **overrides}
        return {"authorization": "Bearer " + jwt.encode(claims, JWT_SECRET, algorithm="HS256")}

    def email(self, user_id: uuid.UUID) -> str:
        return self.conn.execute("select email from public.users where id = %s", (user_id,)).fetchone()[0]

    def stripe_subscription(self, customer: str) -> str:
        session = self.stripe.v1.checkout.sessions.create(
            {
                "mode": "subscription",
                "customer": customer,
                "line_items": [{"price": MONTHLY_PRICE_ID, "quantity": 1}],
                "success_url": "http://app.test/ok",
                "cancel_url": "http://app.test/cancel",
            }
        )
        self.stand_in.complete_checkout(session.id)
        return self.stand_in.get(session.id)["subscription"]

    def full_user(self) -> tuple[UserData, str, list[str]]:
        """A user with a row in every table, archived answers, two live Stripe subscriptions of one customer,
        recordings in three folder levels, Stripe events naming them, a provisional question, a report, and a
        decision as a moderator."""
        data = populate_user(self.conn)
        uid = data.user_id
        customer = self.stripe.v1.customers.create({"email": self.email(uid), "metadata": {"user_id": str(uid)}}).id
        subscriptions = [self.stripe_subscription(customer), self.stripe_subscription(customer)]
        self.conn.execute(
            "update public.billing_customers set stripe_customer_id = %s where user_id = %s", (customer, uid)
        )
        self.conn.execute(
            "update public.subscriptions set stripe_customer_id = %s, stripe_subscription_id = %s where user_id = %s",
            (customer, subscriptions[0], uid),
        )
        self.conn.execute(
            """insert into public.subscriptions (user_id, plan_id, status, stripe_customer_id, stripe_subscription_id)
               select %s, id, 'active', %s, %s from public.plans where code = 'weekly'""",
            (uid, customer, subscriptions[1]),
        )
        self.conn.execute(
            """insert into archive.responses select * from public.responses where id = %s""", (data.response_id,)
        )
        self.conn.execute("update archive.responses set id = gen_random_uuid() where user_id = %s", (uid,))
        self.conn.execute(
            """insert into auth.identities (provider_id, user_id, identity_data, provider)
               values (%s, %s, %s, 'email')""",
            (str(uid), uid, Jsonb({"sub": str(uid), "email": self.email(uid)})),
        )
        for name in ("a.webm", "2026/b.webm", "2026/12/c.webm"):
            self.storage.put(f"{uid}/{name}", uid)
        self.conn.execute(
            """insert into private.stripe_events (id, type, stripe_created_at, livemode, outcome, payload)
               values (%s, 'customer.subscription.created', now(), false, 'applied', %s)""",
            (f"evt_{uid.hex}", Jsonb({"data": {"object": {"customer": customer, "metadata": {"user_id": str(uid)}}}})),
        )
        self.conn.execute(
            """insert into public.questions (content, category, difficulty, experience_level, source, provisional_for)
               values (%s, 'behavioral', 'easy', 'entry', 'ai', %s)""",
            (f"A question generated for one user ({uid.hex[:8]})?", uid),
        )
        self.conn.execute(
            "insert into public.question_reports (user_id, question_id, reason, details)"
            " values (%s, %s, 'unclear', 'Which system?')",
            (uid, data.question_id),
        )
        # As a moderator, the user approved the question they were served (question_transitions.moderator_id).
        with acting_as(self.conn, user_claims(uid, app_metadata={"role": "moderator"})):
            self.conn.execute(
                "insert into public.question_transitions (question_id, to_status, reason) values (%s, 'active', 'ok')",
                (data.question_id,),
            )
        self.peer_session(uid)
        return data, customer, subscriptions

    def peer_session(self, uid: uuid.UUID) -> None:
        """A held peer session with a new paid user: chat, feedback both ways, a block and a report."""
        peer = paid_user(self.conn)
        room = matched_room(self.conn, uid, peer)
        under_way(self.conn, room)
        check_in(self.conn, room.id, peer)
        for user in (uid, peer):
            self.conn.execute(
                "insert into public.peer_messages (room_id, user_id, body) values (%s, %s, 'Hello')", (room.id, user)
            )
        for author, turn in ((uid, room.turn_ids[0]), (peer, room.turn_ids[1])):
            self.conn.execute(
                "insert into public.peer_feedback (turn_id, author_id, scores) values (%s, %s, %s)",
                (turn, author, Jsonb(rubric_scores(self.conn, turn))),
            )
        self.conn.execute("insert into public.peer_blocks (blocker_id, blocked_id) values (%s, %s)", (uid, peer))
        self.conn.execute(
            "insert into public.peer_reports (room_id, reporter_id, reported_id, reason) values (%s, %s, %s, 'other')",
            (room.id, uid, peer),
        )

    def close(self) -> None:
        self.conn.close()
        self.storage.close()
        self.database.close()


@pytest.fixture
def accounts(database_url: str, running_stand_in: StripeStandIn) -> Iterator[Accounts]:
    running_stand_in.reset()
    harness = Accounts(database_url, running_stand_in)
    yield harness
    harness.close()
