"""Every HTTP endpoint fuzzed from its own OpenAPI document (schemathesis): no 5xx, every error a problem.

Schemathesis makes one test per operation from each app's document, and sends what it generates to the app the
harnesses build on this module's database (`app=`), with the Stripe stand-in and the scripted OpenAI behind it.
The documents are read at collection time from apps whose database and Stripe are never reached (schemathesis'
fixture-based loader does not work with pytest 9.2: it sets `Node._nodeid`, which is gone). An API is called as a
signed-in user and as nobody; the webhook as Stripe (signed) and as anyone else.

Besides schemathesis' own checks (no server error, responses as documented, schema-violating input refused, auth
enforced, ...), `problem_details` requires every error to be an RFC 9457 body a client can show, and
`no_database_text` that no response carries the database's own error text. Generation is seeded, derandomized and
bounded (MAX_EXAMPLES per operation and caller): a run is reproducible and takes seconds. tests/fuzz/test_contracts.py
asserts the contract items fuzzing finds only by chance (coercion, id forms, the order of checks).
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator

import pytest
import requests
import schemathesis
from fastapi import FastAPI
from hypothesis import strategies as st
from schemathesis import Case, CheckContext, Response
from schemathesis.checks import positive_data_acceptance
from schemathesis.schemas import BaseSchema

from functions.billing import api, webhook
from functions.billing.settings import BillingApiSettings, WebhookSettings
from functions.evaluation.api import build_app as build_evaluation_app
from functions.evaluation.settings import EvaluationApiSettings
from functions.questions.api import build_app as build_questions_app
from functions.questions.settings import QuestionsSettings
from prep.stripe_stand_in import StripeStandIn, sign_payload
from shared.http import PROBLEM_JSON
from tests.billing.conftest import START, WEBHOOK_SECRET, Billing
from tests.evaluation.harness import Harness as EvaluationHarness
from tests.questions.test_api import Harness as QuestionsHarness
from tests.questions.test_api import generated
from tests.support.contracts import database_text_in
from tests.support.fake_openai import RecordedRequest, dynamic, reply

MAX_EXAMPLES = 40
SEED = 20261125

# Schemathesis draws from the `random` module inside its strategies. Hypothesis seeds that module for every example,
# so runs stay reproducible, but now and then it warns.
pytestmark = pytest.mark.filterwarnings("ignore:Do not use the `random` module inside strategies")


@schemathesis.check
def problem_details(ctx: CheckContext, response: Response, case: Case) -> bool | None:
    """An error is `application/problem+json` with a type, a title, its own status and a detail."""
    if response.status_code < 400:
        return None
    content_type = response.headers.get("content-type", [""])[0]
    assert content_type == PROBLEM_JSON, f"the error's content type is {content_type!r}, not {PROBLEM_JSON}"
    try:
        body = response.json()
    except ValueError:
        raise AssertionError("the error's body is not JSON") from None
    assert isinstance(body, dict), f"the error's body is a {type(body).__name__}, not a problem object"
    for member in ("type", "title", "detail"):
        assert isinstance(body.get(member), str), f"the problem has no {member}"
        assert body[member].strip(), f"the problem's {member} is empty"
    assert body.get("status") == response.status_code, f"the problem says {body.get('status')}, the response not"
    return True


@schemathesis.check
def no_database_text(ctx: CheckContext, response: Response, case: Case) -> bool | None:
    """No response carries the database's own words (constraint, type and enum names, its error messages)."""
    leaked = database_text_in(response.text)
    assert leaked is None, f"the response carries database text ({leaked!r}): {response.text[:300]}"
    return True


CONTRACT_CHECKS = [problem_details, no_database_text]


def openapi(app: FastAPI) -> BaseSchema:
    config = schemathesis.Config(seed=SEED)
    # No example database: a run depends on the seed alone, not on what earlier runs found.
    config.projects.default.generation.update(max_examples=MAX_EXAMPLES, deterministic=True, database="none")
    return schemathesis.openapi.from_asgi("/openapi.json", app, config=config)


class AcceptingQueue:
    """The evaluation queue: takes every message and keeps the response ids."""

    def __init__(self) -> None:
        self.response_ids: list[str] = []

    def send(self, response_id: str) -> None:
        self.response_ids.append(response_id)


# Settings only for reading the documents: building an app contacts nothing, and no request is sent to these.
UNREACHED_DATABASE = {"database_url": "postgresql://openapi-only.invalid/none"}
AUTH = {"supabase_jwt_secret": "openapi-only-secret-of-at-least-32-characters", "supabase_jwt_issuer": "http://auth"}
STRIPE = {"stripe_secret_key": "sk_test_unused", **UNREACHED_DATABASE}
PAGES = {f"{page}_url": "http://app.test" for page in ("checkout_success", "checkout_cancel", "portal_return")}

WEBHOOK = openapi(webhook.build_app(WebhookSettings(stripe_webhook_secret="whsec_unused", **STRIPE)))
BILLING = openapi(api.build_app(BillingApiSettings(**STRIPE, **AUTH, **PAGES)))
QUESTIONS = openapi(build_questions_app(QuestionsSettings(**UNREACHED_DATABASE, **AUTH)))
EVALUATION = openapi(build_evaluation_app(EvaluationApiSettings(**UNREACHED_DATABASE, **AUTH), queue=AcceptingQueue()))


def bearer(headers: dict[str, str]) -> dict[str, str]:
    """The harnesses' auth header under the scheme's own name, the one schemathesis' auth probes remove."""
    return {"Authorization": headers["authorization"]}


# --- Billing: the Stripe webhook, checkout and the portal -----------------------------------------------------------


@pytest.fixture(scope="module")
def billing(database_url: str) -> Iterator[Billing]:
    with StripeStandIn(now=START) as stand_in:
        harness = Billing(stand_in, database_url)
        yield harness
        harness.conn.close()
        harness.database.close()


class StripeSigned(requests.auth.AuthBase):
    """Signs the exact bytes sent, as Stripe does; a request generated without a signature is left without one."""

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        if "stripe-signature" in request.headers:
            body = request.body or b""
            request.headers["Stripe-Signature"] = sign_payload(
                body.encode() if isinstance(body, str) else body, WEBHOOK_SECRET
            )
        return request


# A schema-valid event is not a valid delivery: unsigned it must be refused, and signed it names customers and
# subscriptions Stripe does not know (a checkout or invoice event is then a 422 "Unknown to Stripe").
NOT_FOR_THE_WEBHOOK = [positive_data_acceptance]


@WEBHOOK.parametrize()
def test_webhook_as_stripe(case: Case, billing: Billing) -> None:
    response = case.call_and_validate(
        app=billing.webhook_app,
        auth=StripeSigned(),
        additional_checks=CONTRACT_CHECKS,
        excluded_checks=NOT_FOR_THE_WEBHOOK,
    )
    if "stripe-signature" in response.request.headers and response.status_code == 400:
        assert response.json()["title"] != "Invalid signature", "the signature was refused: nothing got past it"


@WEBHOOK.parametrize()
def test_webhook_as_anyone_else(case: Case, billing: Billing) -> None:
    response = case.call_and_validate(
        app=billing.webhook_app, additional_checks=CONTRACT_CHECKS, excluded_checks=NOT_FOR_THE_WEBHOOK
    )
    assert response.status_code >= 400, "an unsigned delivery was accepted"


@pytest.fixture(scope="module")
def billing_user(billing: Billing) -> str:
    return billing.sign_up()


@BILLING.parametrize()
def test_billing_as_a_user(case: Case, billing: Billing, billing_user: str) -> None:
    case.call_and_validate(
        app=billing.api.app, headers=bearer(billing.auth(billing_user)), additional_checks=CONTRACT_CHECKS
    )


@BILLING.parametrize()
def test_billing_as_nobody(case: Case, billing: Billing) -> None:
    response = case.call_and_validate(app=billing.api.app, additional_checks=CONTRACT_CHECKS)
    assert response.status_code >= 400, "served without a token"


# --- Questions -----------------------------------------------------------------------------------------------------


def _questions_asked_for(request: RecordedRequest) -> int:
    asked = re.search(r"Write (\d+) new interview questions", request.text_of("user"))
    assert asked, "the generation prompt no longer says how many questions to write"
    return int(asked[1])


@pytest.fixture(scope="module")
def questions(database_url: str) -> Iterator[QuestionsHarness]:
    harness = QuestionsHarness(database_url)
    harness.fake.chat.always(dynamic(lambda request: reply(generated(_questions_asked_for(request)))))
    yield harness
    harness.close()


# A schema-valid role or tag is not a known one: the vocabulary (and its aliases and nearest matches) lives in
# the database, which refuses an unknown term with a 422 naming it (tests/abuse).
NOT_FOR_FREE_TEXT_TERMS = [positive_data_acceptance]


@QUESTIONS.parametrize()
def test_questions_as_a_user(case: Case, questions: QuestionsHarness) -> None:
    # A new user each time: one would reach the plan's daily limit and be answered 429 from then on. Their
    # problem_solving/hard bucket is used up, so requests for it are generated (by the scripted model).
    user = questions.user()
    case.call_and_validate(
        app=questions.app,
        headers=bearer(questions.auth(user)),
        additional_checks=CONTRACT_CHECKS,
        excluded_checks=NOT_FOR_FREE_TEXT_TERMS,
    )


@QUESTIONS.parametrize()
def test_questions_as_nobody(case: Case, questions: QuestionsHarness) -> None:
    response = case.call_and_validate(app=questions.app, additional_checks=CONTRACT_CHECKS)
    assert response.status_code >= 400, "served without a token"


# --- Evaluation ----------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def evaluation(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[EvaluationHarness]:
    harness = EvaluationHarness(database_url, tmp_path_factory.mktemp("recordings"))
    yield harness
    harness.close()


@pytest.fixture(scope="module")
def evaluation_queue() -> AcceptingQueue:
    return AcceptingQueue()


@pytest.fixture(scope="module")
def evaluation_app(evaluation: EvaluationHarness, evaluation_queue: AcceptingQueue) -> FastAPI:
    return evaluation.api(queue=evaluation_queue).app


@pytest.fixture(scope="module")
def answers(evaluation: EvaluationHarness) -> dict[str, str]:
    """The fuzzing user (`owner`), their answer (`own`) and another user's."""
    owner, other = evaluation.user(), evaluation.user()
    return {"owner": owner, "own": evaluation.answer(owner), "someone else's": evaluation.answer(other)}


@EVALUATION.parametrize()
@EVALUATION.given(target=st.sampled_from(["generated", "own", "someone else's"]))
def test_evaluation_as_a_user(
    case: Case,
    target: str,
    evaluation: EvaluationHarness,
    evaluation_app: FastAPI,
    evaluation_queue: AcceptingQueue,
    answers: dict[str, str],
) -> None:
    # A generated id is never an answer: some requests name real ones, so acceptance and refusal are fuzzed too.
    if target != "generated" and _is_uuid(case.path_parameters.get("response_id")):
        case.path_parameters["response_id"] = answers[target]
    case.call_and_validate(
        app=evaluation_app, headers=bearer(evaluation.auth(answers["owner"])), additional_checks=CONTRACT_CHECKS
    )
    assert set(evaluation_queue.response_ids) <= {answers["own"]}, "queued an answer that is not the user's"


@EVALUATION.parametrize()
def test_evaluation_as_nobody(case: Case, evaluation_app: FastAPI) -> None:
    response = case.call_and_validate(app=evaluation_app, additional_checks=CONTRACT_CHECKS)
    assert response.status_code >= 400, "served without a token"


def _is_uuid(value: object) -> bool:
    try:
        uuid.UUID(str(value))
    except ValueError:
        return False
    return True
