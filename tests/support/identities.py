"""Users and JWT claims shaped like Supabase's, for acting as a caller through shared.db.rls.acting_as."""

from __future__ import annotations

import time
import uuid
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

ANON: dict[str, Any] = {"role": "anon", "iss": "supabase-local"}
SERVICE: dict[str, Any] = {"role": "service_role", "iss": "supabase-local"}


def user_claims(
    user_id: uuid.UUID,
    *,
    app_metadata: dict[str, Any] | None = None,
    user_metadata: dict[str, Any] | None = None,
    email: str | None = None,
) -> dict[str, Any]:
    now = int(time.time())
    return {
        "sub": str(user_id),
        "role": "authenticated",
        "aud": "authenticated",
        "iss": "supabase-local",
        "iat": now,
        "exp": now + 3600,
        "email": email or f"{user_id}@example.test",
        "app_metadata": {"provider": "email", "providers": ["email"], **(app_metadata or {})},
        "user_metadata": user_metadata or {},
        "is_anonymous": False,
    }


def sign_up(
    conn: psycopg.Connection,
    *,
    email: str | None = None,
    provider: str = "email",
    user_metadata: dict[str, Any] | None = None,
    app_metadata: dict[str, Any] | None = None,
) -> uuid.UUID:
    """Insert an auth user the way the auth server does at sign-up (the signup trigger does the rest)."""
    user_id = uuid.uuid4()
    conn.execute(
        """
        insert into auth.users (instance_id, id, aud, role, email, raw_app_meta_data, raw_user_meta_data,
                                email_confirmed_at, created_at, updated_at)
        values ('00000000-0000-0000-0000-000000000000', %s, 'authenticated', 'authenticated', %s, %s, %s,
                now(), now(), now())
        """,
        (
            user_id,
            email or f"user-{user_id.hex[:8]}@example.test",
            Jsonb({"provider": provider, "providers": [provider], **(app_metadata or {})}),
            Jsonb(user_metadata or {}),
        ),
    )
    return user_id


def give_paid_plan(conn: psycopg.Connection, user_id: uuid.UUID | str, plan: str = "monthly") -> None:
    """An active subscription to `plan`, as the webhook would have stored it."""
    key = uuid.UUID(str(user_id)).hex
    conn.execute(
        "insert into public.subscriptions (user_id, plan_id, status, stripe_customer_id, stripe_subscription_id)"
        " select %s, id, 'active', 'cus_' || %s, 'sub_' || %s from public.plans where code = %s",
        (user_id, key, key, plan),
    )
