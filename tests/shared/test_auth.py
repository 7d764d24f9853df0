"""Access-token verification: JWKS (ES256/RS256, kid, cache) and the legacy HS256 secret; 401s that say why."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from fastapi.testclient import TestClient

from shared.auth import CurrentUser, TokenVerifier
from shared.config import AuthSettings
from shared.http import ProblemError, create_app

ISSUER = "http://127.0.0.1:54321/auth/v1"
SECRET = "super-secret-jwt-token-with-at-least-32-characters-long"


class Keys:
    def __init__(self) -> None:
        self.ec = ec.generate_private_key(ec.SECP256R1())
        self.rsa = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.published: list[dict[str, Any]] = []
        self.fetches = 0
        self.publish("ec-1", self.ec, "ES256")
        self.publish("rsa-1", self.rsa, "RS256")

    def publish(self, kid: str, key: Any, alg: str) -> None:
        algorithm = jwt.algorithms.ECAlgorithm if alg == "ES256" else jwt.algorithms.RSAAlgorithm
        jwk = json.loads(algorithm.to_jwk(key.public_key()))
        self.published.append({**jwk, "kid": kid, "alg": alg, "use": "sig"})


@pytest.fixture
def keys() -> Keys:
    return Keys()


@pytest.fixture
def jwks_url(keys: Keys) -> Iterator[str]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            keys.fetches += 1
            body = json.dumps({"keys": keys.published}).encode()
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}/auth/v1/.well-known/jwks.json"
    server.shutdown()


def claims(**overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    return {
        "sub": str(uuid.uuid4()),
        "role": "authenticated",
        "aud": "authenticated",
        "iss": ISSUER,
        "iat": now,
        "exp": now + 600,
        "email": "a@example.test",
        **overrides,
    }


def settings(**overrides: Any) -> AuthSettings:
    return AuthSettings(supabase_jwt_issuer=ISSUER, supabase_jwt_secret=SECRET, **overrides)


def test_hs256_token_is_accepted() -> None:
    payload = claims()
    user = TokenVerifier(settings()).verify(jwt.encode(payload, SECRET, algorithm="HS256"))
    assert str(user.id) == payload["sub"]
    assert user.claims["email"] == "a@example.test"


# Claims made when the test runs, not when it is collected: a long suite would otherwise outlive their expiry.
@pytest.mark.parametrize(
    ("payload", "key", "reason"),
    [
        (lambda: claims(exp=int(time.time()) - 10), SECRET, "expired"),
        (lambda: claims(aud="somebody-else"), SECRET, "wrong aud"),
        (lambda: claims(iss="https://other.supabase.co/auth/v1"), SECRET, "wrong iss"),
        (claims, "not-the-secret-but-long-enough-to-be-a-key!!", "invalid"),
        (lambda: claims(role="anon"), SECRET, "signed-in user"),
        (lambda: {k: v for k, v in claims().items() if k != "sub"}, SECRET, "sub"),
    ],
)
def test_bad_hs256_tokens_are_refused_with_the_reason(
    payload: Callable[[], dict[str, Any]], key: str, reason: str
) -> None:
    with pytest.raises(ProblemError) as refused:
        TokenVerifier(settings()).verify(jwt.encode(payload(), key, algorithm="HS256"))
    assert refused.value.status == 401
    assert reason in refused.value.detail


@pytest.mark.parametrize(("kid", "alg"), [("ec-1", "ES256"), ("rsa-1", "RS256")])
def test_asymmetric_tokens_verify_against_the_jwks(keys: Keys, jwks_url: str, kid: str, alg: str) -> None:
    private = keys.ec if alg == "ES256" else keys.rsa
    token = jwt.encode(claims(), private, algorithm=alg, headers={"kid": kid})
    assert TokenVerifier(settings(supabase_jwks_url=jwks_url)).verify(token).claims["role"] == "authenticated"


def test_a_token_from_an_unknown_key_is_refused_and_a_rotated_key_is_picked_up(keys: Keys, jwks_url: str) -> None:
    verifier = TokenVerifier(settings(supabase_jwks_url=jwks_url, jwks_refresh_cooldown_seconds=0))
    verifier.verify(jwt.encode(claims(), keys.ec, algorithm="ES256", headers={"kid": "ec-1"}))
    rotated = ec.generate_private_key(ec.SECP256R1())
    token = jwt.encode(claims(), rotated, algorithm="ES256", headers={"kid": "ec-2"})
    with pytest.raises(ProblemError, match="signing key is unknown"):
        verifier.verify(token)
    keys.publish("ec-2", rotated, "ES256")
    assert verifier.verify(token).claims["role"] == "authenticated"


def test_a_token_signed_by_another_key_with_a_known_kid_is_refused(keys: Keys, jwks_url: str) -> None:
    impostor = ec.generate_private_key(ec.SECP256R1())
    token = jwt.encode(claims(), impostor, algorithm="ES256", headers={"kid": "ec-1"})
    with pytest.raises(ProblemError, match="invalid"):
        TokenVerifier(settings(supabase_jwks_url=jwks_url)).verify(token)


def test_keys_are_cached_between_tokens(keys: Keys, jwks_url: str) -> None:
    verifier = TokenVerifier(settings(supabase_jwks_url=jwks_url))
    for _ in range(5):
        verifier.verify(jwt.encode(claims(), keys.ec, algorithm="ES256", headers={"kid": "ec-1"}))
    assert keys.fetches == 1


def test_hs256_is_refused_when_only_jwks_is_configured(jwks_url: str) -> None:
    verifier = TokenVerifier(AuthSettings(supabase_jwt_issuer=ISSUER, supabase_jwks_url=jwks_url))
    with pytest.raises(ProblemError, match="HS256 are not accepted"):
        verifier.verify(jwt.encode(claims(), SECRET, algorithm="HS256"))


def test_http_answers_401_problem_details_and_passes_the_user_through() -> None:
    app = create_app("test")
    app.state.verifier = TokenVerifier(settings())

    @app.get("/me")
    def me(user: CurrentUser) -> dict[str, str]:
        return {"id": str(user.id)}

    client = TestClient(app)
    missing = client.get("/me")
    assert missing.status_code == 401
    assert missing.headers["content-type"] == "application/problem+json"
    assert "Authorization: Bearer" in missing.json()["detail"]
    assert missing.headers["www-authenticate"].startswith("Bearer")

    expired = client.get(
        "/me",
        headers={"authorization": "Bearer " + jwt.encode(claims(exp=int(time.time()) - 1), SECRET, algorithm="HS256")},
    )
    assert expired.status_code == 401
    assert "expired" in expired.json()["detail"]

    payload = claims()
    ok = client.get("/me", headers={"authorization": "Bearer " + jwt.encode(payload, SECRET, algorithm="HS256")})
    assert ok.json() == {"id": payload["sub"]}


def test_the_openapi_document_declares_the_bearer_token() -> None:
    app = create_app("test")

    @app.get("/me")
    def me(user: CurrentUser) -> dict[str, str]:
        return {"id": str(user.id)}

    document = TestClient(app).get("/openapi.json").json()
    assert document["paths"]["/me"]["get"]["security"] == [{"HTTPBearer": []}]
    assert document["components"]["securitySchemes"]["HTTPBearer"] == {
        "type": "http",
        "scheme": "bearer",
        "bearerFormat": "JWT",
        "description": "The signed-in user's access token",
    }
