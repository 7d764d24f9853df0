"""POST /responses/{id}/evaluate: counted once, queued once (SQS from moto), refunded when the queue is down."""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path

import pytest

from functions.evaluation.api import build_app
from functions.evaluation.queue import InProcessQueue
from functions.evaluation.settings import EvaluationApiSettings
from shared.config import ConfigurationError
from tests.evaluation.graders import feature_grader
from tests.evaluation.harness import ISSUER, JWT_SECRET, Harness, Queues


def path(response_id: str) -> str:
    return f"/responses/{response_id}/evaluate"


def test_an_evaluation_is_counted_and_queued_once(harness: Harness, queues: Queues) -> None:
    client = harness.api(queue_url=queues.url)
    user = harness.user()
    response_id = harness.answer(user)

    first = client.post(path(response_id), headers=harness.auth(user))
    assert first.status_code == 202, first.text
    assert first.json() == {"response_id": response_id, "evaluation_status": "queued"}
    [message] = queues.receive()
    assert json.loads(message["body"]) == {"response_id": response_id}
    assert (harness.row(response_id)["evaluation_status"], harness.charged(user)) == ("queued", 1)

    # Asked again while it waits: the same answer, no second message, no second charge.
    second = client.post(path(response_id), headers=harness.auth(user))
    assert second.status_code == 202
    assert second.json()["evaluation_status"] == "queued"
    assert queues.messages() == 1
    assert harness.charged(user) == 1


def test_a_queued_request_whose_message_was_lost_is_sent_again_without_a_second_charge(
    harness: Harness, queues: Queues
) -> None:
    client = harness.api(queue_url=queues.url)
    user = harness.user()
    response_id = harness.answer(user)
    client.post(path(response_id), headers=harness.auth(user))
    queues.receive()  # taken, then lost: the sender died before the worker saw it
    harness.conn.execute(
        "update public.responses set evaluation_requested_at = now() - interval '6 minutes' where id = %s",
        (response_id,),
    )
    again = client.post(path(response_id), headers=harness.auth(user))
    assert again.status_code == 202
    assert queues.messages() == 2  # the lost one (still in flight) and its replacement; the worker is idempotent
    assert harness.charged(user) == 1


def test_refusals_are_problem_details(harness: Harness, queues: Queues) -> None:
    client = harness.api(queue_url=queues.url)
    owner, other = harness.user(), harness.user()
    response_id = harness.answer(owner)

    cases = {
        # As missing as a missing one: a 403 would tell an attacker which ids exist.
        "someone else's answer": (client.post(path(response_id), headers=harness.auth(other)), 404),
        "unknown answer": (client.post(path(str(uuid.uuid4())), headers=harness.auth(owner)), 404),
        "not a uuid": (client.post(path("42"), headers=harness.auth(owner)), 422),
        "no token": (client.post(path(response_id)), 401),
    }
    for case, (answer, status) in cases.items():
        assert answer.status_code == status, case
        assert answer.headers["content-type"] == "application/problem+json", case
        assert answer.json()["status"] == status, case
    assert cases["not a uuid"][0].json()["errors"][0]["field"] == "path.response_id"
    assert cases["someone else's answer"][0].json()["detail"].replace(response_id, "<id>") == cases["unknown answer"][
        0
    ].json()["detail"].replace(cases["unknown answer"][0].json()["detail"].split()[2], "<id>")
    assert queues.messages() == 0
    assert harness.charged(owner) == harness.charged(other) == 0


def test_an_evaluated_answer_is_not_evaluated_again(harness: Harness, queues: Queues) -> None:
    client = harness.api(queue_url=queues.url)
    user = harness.user()
    response_id = harness.answer(user)
    harness.fake.chat.always(feature_grader())
    assert client.post(path(response_id), headers=harness.auth(user)).status_code == 202
    queues.poll(harness)
    assert harness.row(response_id)["evaluation_status"] == "completed"

    again = client.post(path(response_id), headers=harness.auth(user))
    assert again.status_code == 409
    assert "already evaluated" in again.json()["detail"]
    assert harness.charged(user) == 1


def test_a_queue_that_refuses_the_message_fails_the_request_without_charge(harness: Harness, queues: Queues) -> None:
    user = harness.user()
    response_id = harness.answer(user)
    gone = queues.url.rsplit("/", 1)[0] + "/no-such-queue"
    answer = harness.api(queue_url=gone).post(path(response_id), headers=harness.auth(user))

    assert answer.status_code == 503
    assert answer.headers["retry-after"] == "30"
    assert "not counted against your plan" in answer.json()["detail"]
    row = harness.row(response_id)
    assert row["evaluation_status"] == "failed"
    assert "could not be queued" in row["evaluation_error"]
    assert harness.charged(user) == 0

    # Once the queue is back, the same answer can be sent again.
    retried = harness.api(queue_url=queues.url).post(path(response_id), headers=harness.auth(user))
    assert retried.status_code == 202
    assert (harness.row(response_id)["evaluation_status"], harness.charged(user), queues.messages()) == ("queued", 1, 1)


def test_the_free_plan_limit_is_a_429_and_nothing_is_queued(harness: Harness, queues: Queues) -> None:
    client = harness.api(queue_url=queues.url)
    user = harness.user(paying=False)
    session = harness.session(user)
    answers = [harness.answer(user, session=session) for _ in range(6)]
    statuses = [client.post(path(r), headers=harness.auth(user)).status_code for r in answers]
    assert statuses == [202] * 5 + [429]
    assert queues.messages() == 5
    assert harness.row(answers[-1])["evaluation_status"] == "not_requested"


def test_without_a_queue_url_the_worker_runs_in_process(
    harness: Harness, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """What a local run does: no AWS, the request is evaluated by a thread of the API's own process."""
    for name, value in {
        "DATABASE_URL": harness.database_url,
        "OPENAI_API_KEY": "sk-test",
        "LOCAL_STORAGE_DIR": str(tmp_path),
        "EVALUATION_MAX_RECEIVES": "3",
    }.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("EVALUATION_QUEUE_URL", raising=False)
    harness.fake.chat.always(feature_grader())
    client = harness.api()  # the fake-backed AI client is handed to the in-process worker
    user = harness.user()
    response_id = harness.answer(user)

    assert client.post(path(response_id), headers=harness.auth(user)).status_code == 202
    deadline = time.monotonic() + 20
    while harness.row(response_id)["evaluation_status"] != "completed" and time.monotonic() < deadline:
        time.sleep(0.05)
    row = harness.row(response_id)
    assert row["evaluation_status"] == "completed"
    assert 0 <= row["ai_score"] <= 100


def test_the_in_process_queue_redelivers_failures_then_dead_letters(harness: Harness) -> None:
    from tests.support.fake_openai import server_error

    harness.fake.chat.always(server_error(503))
    queue = InProcessQueue(harness.worker.handle, max_receives=3, redelivery_delay_seconds=0.01)
    user = harness.user()
    response_id = harness.answer(user)
    harness.request(user, response_id)
    try:
        queue.send(response_id)
        assert queue.drain(timeout=30)
    finally:
        queue.close()
    assert queue.dead_letters == [response_id]
    assert harness.fake.chat.calls == 3 * 2  # three deliveries, each one call and one SDK retry
    assert harness.row(response_id)["evaluation_status"] == "failed"
    assert harness.charged(user) == 0


def test_lambda_refuses_to_start_without_a_queue_url(harness: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_LAMBDA_FUNCTION_NAME", "evaluationApi")
    settings = EvaluationApiSettings(
        database_url=harness.database_url, supabase_jwt_secret=JWT_SECRET, supabase_jwt_issuer=ISSUER
    )
    with pytest.raises(ConfigurationError, match="EVALUATION_QUEUE_URL is required"):
        build_app(settings, database=harness.database)
