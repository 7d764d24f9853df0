"""The HTTP contract items fuzzing finds only by chance (issue 22, section 4), asserted case by case on the real apps.

- What the document forbids is refused (422 naming the field): no coercion (`"5"`, `true` for an integer), ids only
  in the canonical UUID form the document gives (format and pattern).
- A request is checked in the order a client can act on: token (401, whatever the body), media type (415), JSON
  (400 saying what is wrong), fields (422).

The apps' database is unreachable: a refusal here happens before any work, and the control cases (a valid request
reaching the database, answered 503 "Database unavailable") show the tests can tell the difference.
"""

from __future__ import annotations

import base64
import json
import time
import uuid
from collections.abc import Iterator
from typing import Any

import jwt
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from functions.account.api import build_app as build_account_app
from functions.account.settings import AccountApiSettings
from functions.billing.api import build_app as build_billing_app
from functions.billing.settings import BillingApiSettings
from functions.evaluation.api import build_app as build_evaluation_app
from functions.evaluation.settings import EvaluationApiSettings
from functions.questions.api import build_app as build_questions_app
from functions.questions.settings import QuestionsSettings
from shared.config import DatabaseSettings
from shared.db.psycopg_transport import PsycopgDatabase
from shared.http import PROBLEM_JSON, UUID_PATTERN
from tests.support.identities import user_claims

SECRET = "contract-tests-secret-of-at-least-32-characters"
ISSUER = "http://auth.contracts"
UNREACHED = {"database_url": "postgresql://contracts.invalid/none", "db_timeout_seconds": 1}
AUTH = {"supabase_jwt_secret": SECRET, "supabase_jwt_issuer": ISSUER}
PAGES = {f"{page}_url": "http://app.test" for page in ("checkout_success", "checkout_cancel", "portal_return")}
STORAGE = {"supabase_url": "http://storage.invalid", "supabase_service_role_key": "unused"}
ID = "0b9d4c3e-5f6a-4b7c-8d9e-0f1a2b3c4d5e"
QUESTIONS_BODY = {"category": "technical", "difficulty": "easy", "experience_level": "mid"}


class DiscardingQueue:
    def send(self, response_id: str) -> None:
        raise AssertionError(f"nothing may be queued here, got {response_id}")


@pytest.fixture(scope="module")
def apps() -> Iterator[dict[str, TestClient]]:
    # One pool for all, closed at the end: an open pool keeps retrying the unreachable server in the background.
    database = PsycopgDatabase(DatabaseSettings(**UNREACHED))
    stripe = {"stripe_secret_key": "sk_test_unused"}
    built: dict[str, FastAPI] = {
        "questions": build_questions_app(QuestionsSettings(**UNREACHED, **AUTH), database=database),
        "billing": build_billing_app(BillingApiSettings(**stripe, **UNREACHED, **AUTH, **PAGES), database=database),
        "evaluation": build_evaluation_app(
            EvaluationApiSettings(**UNREACHED, **AUTH), database=database, queue=DiscardingQueue()
        ),
        "account": build_account_app(AccountApiSettings(**stripe, **STORAGE, **UNREACHED, **AUTH), database=database),
    }
    yield {name: TestClient(app, raise_server_exceptions=False) for name, app in built.items()}
    database.close()


def token() -> dict[str, str]:
    claims = {**user_claims(uuid.uuid4()), "iss": ISSUER, "exp": int(time.time()) + 600}
    return {"authorization": "Bearer " + jwt.encode(claims, SECRET, algorithm="HS256")}


def call(apps: dict[str, TestClient], app: str, method: str, path: str, **kwargs: Any) -> Any:
    response = apps[app].request(method, path, **kwargs)
    assert response.headers["content-type"] == PROBLEM_JSON, response.text
    problem = response.json()
    assert problem["status"] == response.status_code
    return response, problem


# Each was accepted (coerced, or parsed by Python's lenient UUID()) before the request models were strict.
FORBIDDEN = [
    ("questions", "POST", "/questions", {**QUESTIONS_BODY, "count": "5"}, "body.count"),
    ("questions", "POST", "/questions", {**QUESTIONS_BODY, "count": True}, "body.count"),
    ("questions", "POST", "/questions", {**QUESTIONS_BODY, "session_id": ID.replace("-", "")}, "body.session_id"),
    ("questions", "POST", "/questions", {**QUESTIONS_BODY, "session_id": "{" + ID + "}"}, "body.session_id"),
    ("questions", "POST", "/questions", {**QUESTIONS_BODY, "session_id": f"urn:uuid:{ID}"}, "body.session_id"),
    ("questions", "POST", "/questions", {**QUESTIONS_BODY, "tags": [1]}, "body.tags.0"),
    ("billing", "POST", "/billing/checkout", {"plan": 5}, "body.plan"),
    ("account", "DELETE", "/account", {"confirm": 5}, "body.confirm"),
    ("evaluation", "POST", f"/responses/{ID.replace('-', '')}/evaluate", None, "path.response_id"),
    ("evaluation", "POST", f"/responses/urn:uuid:{ID}/evaluate", None, "path.response_id"),
    ("evaluation", "POST", "/responses/%7B" + ID + "%7D/evaluate", None, "path.response_id"),
]


@pytest.mark.parametrize(("app", "method", "path", "body", "field"), FORBIDDEN)
def test_what_the_document_forbids_is_refused_before_any_work(
    apps: dict[str, TestClient], app: str, method: str, path: str, body: Any, field: str
) -> None:
    response, problem = call(apps, app, method, path, json=body, headers=token())
    assert response.status_code == 422, problem
    assert [error["field"] for error in problem["errors"]] == [field]


@pytest.mark.parametrize(
    ("app", "method", "path", "body"),
    [
        ("questions", "POST", "/questions", {**QUESTIONS_BODY, "count": 5, "session_id": ID.upper()}),
        ("evaluation", "POST", f"/responses/{ID}/evaluate", None),
    ],
)
def test_the_canonical_forms_reach_the_database(
    apps: dict[str, TestClient], app: str, method: str, path: str, body: Any
) -> None:
    response, problem = call(apps, app, method, path, json=body, headers=token())
    assert (response.status_code, problem["title"]) == (503, "Database unavailable")


def test_a_cursor_with_a_non_canonical_id_is_refused(apps: dict[str, TestClient]) -> None:
    cursor = {"created_at": "2026-12-01T00:00:00+00:00", "id": ID.replace("-", "")}
    encoded = base64.urlsafe_b64encode(json.dumps(cursor).encode()).decode()
    response, problem = call(apps, "account", "GET", "/account/export", params={"cursor": encoded}, headers=token())
    assert (response.status_code, problem["title"]) == (400, "Invalid cursor")


def test_the_documents_give_ids_in_their_canonical_form(apps: dict[str, TestClient]) -> None:
    questions = apps["questions"].get("/openapi.json").json()
    session_id = questions["components"]["schemas"]["QuestionRequest"]["properties"]["session_id"]["anyOf"][0]
    evaluation = apps["evaluation"].get("/openapi.json").json()
    (response_id,) = evaluation["paths"]["/responses/{response_id}/evaluate"]["post"]["parameters"]
    for documented in (session_id, response_id["schema"]):
        assert (documented["type"], documented["format"], documented["pattern"]) == ("string", "uuid", UUID_PATTERN)


# The operations that take a body, each with a body it accepts.
WITH_BODY = [
    ("questions", "POST", "/questions", QUESTIONS_BODY),
    ("billing", "POST", "/billing/checkout", {"plan": "monthly"}),
    ("account", "DELETE", "/account", {"confirm": "someone@example.test"}),
]
BAD_BODIES = {
    "broken-json": (b'{"plan": ', "application/json"),
    "wrong-content-type": (b'{"plan": "monthly"}', "text/plain"),
    "no-content-type": (b'{"plan": "monthly"}', None),
    "wrong-shape": (b"[1, 2, 3]", "application/json"),
}


@pytest.mark.parametrize("bad", list(BAD_BODIES))
@pytest.mark.parametrize(("app", "method", "path", "_"), WITH_BODY)
def test_without_a_token_any_body_is_a_401(
    apps: dict[str, TestClient], app: str, method: str, path: str, _: Any, bad: str
) -> None:
    body, content_type = BAD_BODIES[bad]
    headers = {"content-type": content_type} if content_type else {}
    response, problem = call(apps, app, method, path, content=body, headers=headers)
    assert response.status_code == 401, problem
    assert response.headers["www-authenticate"].startswith("Bearer")


@pytest.mark.parametrize(("app", "method", "path", "body"), WITH_BODY)
def test_a_body_not_sent_as_json_is_a_415(
    apps: dict[str, TestClient], app: str, method: str, path: str, body: Any
) -> None:
    for content_type in ("text/plain", "application/x-www-form-urlencoded", None):
        headers = {**token(), **({"content-type": content_type} if content_type else {})}
        response, problem = call(apps, app, method, path, content=json.dumps(body).encode(), headers=headers)
        assert response.status_code == 415, problem
        assert "application/json" in problem["detail"]
    # The same body as JSON gets past the media type (to the database, unreachable here).
    headers = {**token(), "content-type": "application/json; charset=utf-8"}
    response, problem = call(apps, app, method, path, content=json.dumps(body).encode(), headers=headers)
    assert response.status_code == 503, problem


@pytest.mark.parametrize(("app", "method", "path", "_"), WITH_BODY)
def test_broken_json_is_a_400_saying_what_is_wrong(
    apps: dict[str, TestClient], app: str, method: str, path: str, _: Any
) -> None:
    headers = {**token(), "content-type": "application/json"}
    response, problem = call(apps, app, method, path, content=b'{"plan": "monthly",', headers=headers)
    assert (response.status_code, problem["title"]) == (400, "Malformed JSON")
    assert problem["detail"].startswith("the body is not valid JSON (Expecting property name")
    assert "errors" not in problem


def test_unknown_paths_and_methods_are_problems_saying_what_to_do(apps: dict[str, TestClient]) -> None:
    response, problem = call(apps, "questions", "GET", "/nowhere")
    assert response.status_code == 404
    assert "/nowhere" in problem["detail"]
    response, problem = call(apps, "questions", "GET", "/questions")
    assert response.status_code == 405
    assert problem["detail"] == "GET is not accepted at /questions; it accepts POST"
    assert response.headers["allow"] == "POST"
