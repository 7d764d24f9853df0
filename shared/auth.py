"""Verifying Supabase access tokens, and the FastAPI dependency that turns one into a caller.

Asymmetric keys (ES256/RS256) come from the project's JWKS, matched by `kid` and cached at most ten
minutes; the legacy shared secret (HS256) serves local stacks. Signature, `exp`, `aud` and `iss` are all
checked. A missing or bad token is a 401 saying why.
"""

from __future__ import annotations

import uuid
from typing import Annotated, Any

import jwt
from fastapi import Depends, Request, Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, ConfigDict, ValidationError

from shared.config import AuthSettings
from shared.db import Caller
from shared.http import ProblemError, checked_before_body

ASYMMETRIC = ("ES256", "RS256")


class AccessTokenClaims(BaseModel):
    """The claims Supabase Auth puts in an access token that this platform relies on."""

    model_config = ConfigDict(extra="allow", frozen=True)

    sub: uuid.UUID
    role: str
    exp: int
    email: str | None = None
    app_metadata: dict[str, Any] = {}
    user_metadata: dict[str, Any] = {}
    is_anonymous: bool = False


class AuthenticatedUser(Caller):
    @property
    def id(self) -> uuid.UUID:
        return uuid.UUID(str(self.claims["sub"]))


def unauthorized(detail: str) -> ProblemError:
    return ProblemError(
        401,
        "Unauthorized",
        detail,
        headers={"www-authenticate": f'Bearer error="invalid_token", error_description="{detail}"'},
    )


class TokenVerifier:
    def __init__(self, settings: AuthSettings) -> None:
        self._settings = settings
        self._secret = settings.supabase_jwt_secret.get_secret_value() if settings.supabase_jwt_secret else None
        self._jwks = (
            jwt.PyJWKClient(
                settings.jwks_url,
                cache_jwk_set=True,
                lifespan=max(settings.jwks_cache_seconds, 1),
                timeout=5,
                cooldown_duration=settings.jwks_refresh_cooldown_seconds,
            )
            if settings.jwks_url
            else None
        )

    def verify(self, token: str) -> AuthenticatedUser:
        try:
            algorithm = jwt.get_unverified_header(token).get("alg")
        except jwt.DecodeError:
            raise unauthorized("the access token is not a JWT") from None
        key: Any
        if algorithm in ASYMMETRIC and self._jwks is not None:
            try:
                key = self._jwks.get_signing_key_from_jwt(token).key
            except jwt.PyJWKClientConnectionError:
                raise ProblemError(
                    503, "Auth keys unavailable", "could not fetch the signing keys; try again"
                ) from None
            except jwt.PyJWKClientError as error:
                raise unauthorized(f"the token's signing key is unknown ({error})") from None
        elif algorithm == "HS256" and self._secret is not None:
            key = self._secret
        else:
            raise unauthorized(f"tokens signed with {algorithm} are not accepted here")
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=[algorithm],
                audience=self._settings.supabase_jwt_audience,
                issuer=self._settings.issuer,
                options={"require": ["exp", "sub", "aud", "iss"]},
            )
        except jwt.ExpiredSignatureError:
            raise unauthorized("the access token has expired; refresh the session and retry") from None
        except jwt.InvalidAudienceError:
            raise unauthorized("the access token is not meant for this API (wrong aud)") from None
        except jwt.InvalidIssuerError:
            raise unauthorized("the access token was issued by another project (wrong iss)") from None
        except jwt.InvalidTokenError as error:
            raise unauthorized(f"the access token is invalid: {error}") from None
        try:
            parsed = AccessTokenClaims.model_validate(claims)
        except ValidationError:
            raise unauthorized("the access token lacks a user id (sub) or role") from None
        if parsed.role != "authenticated":
            raise unauthorized(f"a signed-in user's token is required, not the {parsed.role!r} role")
        return AuthenticatedUser(claims=claims, token=token)


# Declares the bearer token in the OpenAPI document; a missing one is refused below with a problem, not by it.
bearer_token = HTTPBearer(auto_error=False, bearerFormat="JWT", description="The signed-in user's access token")


def authenticate(request: Request) -> AuthenticatedUser:
    """The request's verified caller, verified once per request; the app keeps its TokenVerifier in
    `app.state.verifier`. A route runs this before reading the body (shared/http.py, CheckedRoute)."""
    user: AuthenticatedUser | None = getattr(request.state, "user", None)
    if user is None:
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise unauthorized("send the user's access token as 'Authorization: Bearer <token>'")
        verifier: TokenVerifier = request.app.state.verifier
        user = request.state.user = verifier.verify(token.strip())
    return user


@checked_before_body(authenticate)
def current_user(
    request: Request, credentials: Annotated[HTTPAuthorizationCredentials | None, Security(bearer_token)]
) -> AuthenticatedUser:
    """FastAPI dependency: the verified caller (`credentials` only declares the scheme in the document)."""
    return authenticate(request)


CurrentUser = Annotated[AuthenticatedUser, Depends(current_user)]
