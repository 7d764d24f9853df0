"""The two things Supabase Auth does that the local platform needs: create a user, and sign their access token.

A user is created as the auth server does at sign-up (a row in auth.users; the signup trigger does the rest), and a
token is signed with the project's JWT secret (HS256, the local stack's legacy secret) carrying the claims an access
token from Supabase Auth carries, which shared.auth verifies.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

import jwt
import psycopg
from psycopg.types.json import Jsonb

from shared.config import AuthSettings


def find_or_sign_up(conn: psycopg.Connection, email: str) -> uuid.UUID:
    """The auth user with `email`, signed up (email provider, confirmed) if there is none."""
    found = conn.execute("select id from auth.users where email = %s", (email,)).fetchone()
    return found[0] if found else sign_up(conn, email)


def sign_up(conn: psycopg.Connection, email: str) -> uuid.UUID:
    user_id = uuid.uuid4()
    conn.execute(
        """
        insert into auth.users (instance_id, id, aud, role, email, raw_app_meta_data, raw_user_meta_data,
                                email_confirmed_at, created_at, updated_at)
        values ('00000000-0000-0000-0000-000000000000', %s, 'authenticated', 'authenticated', %s, %s, '{}',
                now(), now(), now())
        """,
        (user_id, email, Jsonb({"provider": "email", "providers": ["email"]})),
    )
    return user_id


def user_claims(settings: AuthSettings, user_id: uuid.UUID, email: str, *, valid_seconds: int = 3600) -> dict[str, Any]:
    """The claims of the user's access token, for the configured issuer and audience."""
    if settings.issuer is None:
        raise ValueError("a local access token needs an issuer: SUPABASE_JWT_ISSUER or SUPABASE_URL")
    now = int(time.time())
    return {
        "sub": str(user_id),
        "role": "authenticated",
        "aud": settings.supabase_jwt_audience,
        "iss": settings.issuer,
        "iat": now,
        "exp": now + valid_seconds,
        "email": email,
        "app_metadata": {"provider": "email", "providers": ["email"]},
        "user_metadata": {},
        "is_anonymous": False,
    }


def sign(settings: AuthSettings, claims: dict[str, Any]) -> str:
    """The access token carrying `claims`, signed with SUPABASE_JWT_SECRET."""
    if settings.supabase_jwt_secret is None:
        raise ValueError("signing a local access token needs SUPABASE_JWT_SECRET")
    return jwt.encode(claims, settings.supabase_jwt_secret.get_secret_value(), algorithm="HS256")
