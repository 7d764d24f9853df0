"""The SQS worker: concurrent batches, partial batch failures, redelivery into the dead-letter queue, duplicates."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from functions.evaluation import worker as worker_module
from functions.evaluation.queue import SqsVisibility
from shared.config import ConfigurationError
from shared.db import Caller, Database, unavailable
from tests.evaluation.graders import feature_grader, grade_request
from tests.evaluation.harness import GOOD_ANSWER, Harness, Queues, event, record
from tests.support.fake_openai import RecordedRequest, dynamic, rate_limited, refusal, reply, server_error
from tests.support.metrics import documents, values


def evaluated(harness: Harness, response_id: str) -> bool:
    return harness.row(response_id)["evaluation_status"] == "completed"


def requested(harness: Harness, user: str, count: int, **answer: Any) -> list[str]:
    session = harness.session(user)
    ids = [harness.answer(user, session=session, **answer) for _ in range(count)]
    for response_id in ids:
        harness.request(user, response_id)
    return ids


def send(queues: Queues, *response_ids: str) -> None:
    for response_id in response_ids:
        queues.sqs.send_message(QueueUrl=queues.url, MessageBody=json.dumps({"response_id": response_id}))


def test_a_batch_is_graded_concurrently(harness: Harness) -> None:
    in_flight, peak, lock = 0, 0, threading.Lock()

    def slow(request: RecordedRequest) -> Any:
        nonlocal in_flight, peak
        with lock:
            in_flight += 1
            peak = max(peak, in_flight)
        time.sleep(0.3)
        with lock:
            in_flight -= 1
        return reply(grade_request(request))

    harness.fake.chat.always(dynamic(slow))
    user = harness.user()
    ids = requested(harness, user, 6)
    started = time.perf_counter()
    result = harness.evaluate_now(*ids)
    elapsed = time.perf_counter() - started

    assert result == {"batchItemFailures": []}
    assert all(evaluated(harness, r) for r in ids)
    assert peak == 6
    assert elapsed < 6 * 0.3
    usage = harness.conn.execute(
        "select count(*) as n from public.ai_usage where purpose = 'evaluation' and user_id = %s and succeeded", (user,)
    ).fetchone()
    assert usage["n"] == 6


def test_only_the_failing_record_is_retried_and_it_ends_in_the_dead_letter_queue(
    harness: Harness, queues: Queues
) -> None:
    user = harness.user()
    good = requested(harness, user, 2)
    [flaky] = requested(harness, user, 1, text=GOOD_ANSWER + " FLAKY")
    harness.fake.chat.always(
        dynamic(lambda request: server_error(503) if "FLAKY" in request.text_of("user") else feature_grader())
    )
    send(queues, *good, flaky)

    records, result = queues.poll(harness)
    assert len(records) == 3
    flaky_message = next(r["messageId"] for r in records if flaky in r["body"])
    assert result == {"batchItemFailures": [{"itemIdentifier": flaky_message}]}
    assert all(evaluated(harness, r) for r in good)
    assert harness.row(flaky)["evaluation_status"] == "processing"
    assert harness.charged(user) == 3

    # Received again (twice), still failing; on the third receive the response is failed and refunded.
    for receive in (2, 3):
        records, result = queues.poll(harness)
        assert [r["attributes"]["ApproximateReceiveCount"] for r in records] == [str(receive)]
        assert result == {"batchItemFailures": [{"itemIdentifier": flaky_message}]}
        expected = "processing" if receive < 3 else "failed"
        assert harness.row(flaky)["evaluation_status"] == expected
    row = harness.row(flaky)
    assert row["evaluation_error"] == "gave up after 3 attempts: the AI service is unavailable"
    assert harness.charged(user) == 2

    # The next receive finds it past maxReceiveCount: SQS moves it to the dead-letter queue.
    records, _ = queues.poll(harness)
    assert records == []
    assert queues.messages() == 0
    dead = queues.sqs.receive_message(QueueUrl=queues.dlq_url, AttributeNames=["All"])["Messages"]
    assert [json.loads(m["Body"]) for m in dead] == [{"response_id": flaky}]


def test_a_message_received_twice_is_evaluated_and_charged_once(harness: Harness, queues: Queues) -> None:
    harness.fake.chat.always(feature_grader())
    user = harness.user()
    [response_id] = requested(harness, user, 1)
    send(queues, response_id)

    # The first delivery is processed but its acknowledgement is lost (say the function timed out after it).
    [first] = queues.receive()
    assert harness.worker.handle({"Records": [first]}) == {"batchItemFailures": []}
    queues.sqs.change_message_visibility(QueueUrl=queues.url, ReceiptHandle=first["receiptHandle"], VisibilityTimeout=0)
    evaluated_at = harness.row(response_id)["evaluated_at"]

    records, result = queues.poll(harness)
    assert records[0]["attributes"]["ApproximateReceiveCount"] == "2"
    assert result == {"batchItemFailures": []}
    assert queues.messages() == 0
    assert harness.fake.chat.calls == 1
    assert harness.row(response_id)["evaluated_at"] == evaluated_at
    assert harness.charged(user) == 1


def test_duplicates_in_flight_at_once_store_one_evaluation(harness: Harness) -> None:
    harness.fake.chat.always(feature_grader())
    user = harness.user()
    [response_id] = requested(harness, user, 1)
    body = json.dumps({"response_id": response_id})
    result = harness.worker.handle({"Records": [record(body), record(body)]})
    assert result == {"batchItemFailures": []}
    assert evaluated(harness, response_id)
    assert harness.charged(user) == 1


def test_permanent_failures_fail_the_answer_and_ack_and_billed_ones_stay_charged(harness: Harness) -> None:
    user = harness.user()
    session = harness.session(user)
    refused = harness.answer(user, GOOD_ANSWER + " REFUSE", session=session)
    invalid, waiting = harness.answer(user, session=session), harness.answer(user, session=session)
    for response_id in (refused, invalid, waiting):
        harness.request(user, response_id)
    harness.fake.chat.always(
        dynamic(lambda request: refusal() if "REFUSE" in request.text_of("user") else reply("not json at all"))
    )

    assert harness.evaluate_now(refused, invalid) == {"batchItemFailures": []}
    assert harness.row(refused)["evaluation_error"] == "the AI model declined to evaluate this answer"
    assert harness.row(invalid)["evaluation_error"] == "the AI model's evaluation was not valid"
    assert {harness.row(r)["evaluation_status"] for r in (refused, invalid)} == {"failed"}
    assert harness.fake.chat.calls == 2  # neither is worth a second attempt
    # A refusal and an invalid output were billed by the AI service: a quota unit is spent per AI call made.
    assert harness.charged(user) == 3


def test_malformed_messages_are_dropped(harness: Harness) -> None:
    bodies = ["not json", json.dumps(["a list"]), json.dumps({"id": "x"}), json.dumps({"response_id": "nope"})]
    result = harness.worker.handle({"Records": [record(b) for b in bodies]})
    assert result == {"batchItemFailures": []}
    assert harness.fake.calls == 0


def test_nothing_to_do_is_acked(harness: Harness) -> None:
    user = harness.user()
    not_requested = harness.answer(user)
    result = harness.worker.handle(event(not_requested, str(uuid.uuid4())))
    assert result == {"batchItemFailures": []}
    assert harness.row(not_requested)["evaluation_status"] == "not_requested"
    assert harness.fake.calls == 0


class FlakyDatabase:
    """The real database, except that the named function is unreachable the first `times` calls."""

    def __init__(self, inner: Database, function: str, times: int) -> None:
        self.inner, self.function, self.remaining = inner, function, times

    def call(self, function: str, args: Mapping[str, Any] | None = None, *, caller: Caller | None = None) -> Any:
        if function == self.function and self.remaining > 0:
            self.remaining -= 1
            raise unavailable("connection refused")
        return self.inner.call(function, args, caller=caller)


def test_a_database_outage_is_retried_not_failed(harness: Harness) -> None:
    harness.fake.chat.always(feature_grader())
    harness.worker.db = FlakyDatabase(harness.database, "service.complete_evaluation", times=1)
    user = harness.user()
    [response_id] = requested(harness, user, 1)

    first = harness.worker.handle(event(response_id))
    assert len(first["batchItemFailures"]) == 1
    assert harness.row(response_id)["evaluation_status"] == "processing"
    assert harness.worker.handle(event(response_id, receives=2)) == {"batchItemFailures": []}
    assert evaluated(harness, response_id)
    assert harness.charged(user) == 1


def test_when_failing_the_answer_is_impossible_too_the_message_is_kept(harness: Harness) -> None:
    harness.fake.chat.always(refusal())
    harness.worker.db = FlakyDatabase(harness.database, "service.fail_evaluation", times=1)
    user = harness.user()
    [response_id] = requested(harness, user, 1)
    assert len(harness.worker.handle(event(response_id))["batchItemFailures"]) == 1
    assert harness.worker.handle(event(response_id, receives=2)) == {"batchItemFailures": []}
    assert harness.row(response_id)["evaluation_status"] == "failed"


def test_past_the_daily_ai_budget_evaluations_wait(harness: Harness) -> None:
    user = harness.user()
    [response_id] = requested(harness, user, 1)
    harness.conn.execute(
        "insert into public.ai_usage (purpose, model, cost_usd, latency_ms, succeeded)"
        " values ('evaluation', 'm', 25, 1, true)"
    )
    try:
        assert len(harness.evaluate_now(response_id)["batchItemFailures"]) == 1
        final = harness.worker.handle(event(response_id, receives=3))
    finally:
        harness.conn.execute("delete from public.ai_usage where cost_usd = 25")
    assert len(final["batchItemFailures"]) == 1
    assert harness.fake.calls == 0
    row = harness.row(response_id)
    assert row["evaluation_status"] == "failed"
    assert "AI budget" in row["evaluation_error"]
    assert harness.charged(user) == 0


def test_an_ai_outage_is_recorded_as_failed_usage(harness: Harness) -> None:
    harness.fake.chat.always(server_error(500))
    user = harness.user()
    [response_id] = requested(harness, user, 1)
    assert len(harness.evaluate_now(response_id)["batchItemFailures"]) == 1
    usage = harness.conn.execute(
        "select succeeded, error from public.ai_usage where user_id = %s and purpose = 'evaluation'", (user,)
    ).fetchall()
    assert [u["succeeded"] for u in usage] == [False]
    assert usage[0]["error"].startswith("unavailable")


class LambdaContext:
    """What the worker reads of Lambda's context: the invocation's remaining time."""

    def __init__(self, seconds_left: float) -> None:
        self.deadline = time.monotonic() + seconds_left

    def get_remaining_time_in_millis(self) -> int:
        return int((self.deadline - time.monotonic()) * 1000)


def test_a_retry_after_longer_than_the_time_left_fails_fast_and_requeues_after_that_wait(
    harness: Harness, queues: Queues
) -> None:
    """Retry-After 1.5 s with 0.5 s left (after the worker's reserve): no sleep, no second call; the message is back
    after 2 s (ceil(1.5)), not after the queue's 300 s visibility timeout."""
    harness.fake.chat.always(rate_limited(retry_after_ms=1500))
    user = harness.user()
    [response_id] = requested(harness, user, 1)
    send(queues, response_id)
    worker = worker_module.EvaluationWorker(
        harness.worker_settings, harness.database, harness.ai, harness.worker.storage, SqsVisibility(client=queues.sqs)
    )
    records = queues.receive()
    started = time.monotonic()
    result = worker.handle({"Records": records}, LambdaContext(worker_module.DEADLINE_RESERVE_SECONDS + 0.5))
    assert time.monotonic() - started < 1.5  # the 1.5 s wait was not slept
    assert result == {"batchItemFailures": [{"itemIdentifier": records[0]["messageId"]}]}
    assert harness.fake.chat.calls == 1
    assert harness.row(response_id)["evaluation_status"] == "processing"

    assert queues.receive() == []  # invisible for the wait the service asked for...
    time.sleep(2.1)
    [again] = queues.receive()  # ...and no longer
    assert again["attributes"]["ApproximateReceiveCount"] == "2"

    harness.fake.chat.always(feature_grader())  # the service is back: the next receive completes it
    assert worker.handle({"Records": [again]}, LambdaContext(60)) == {"batchItemFailures": []}
    assert evaluated(harness, response_id)


def test_a_retry_after_within_the_time_left_is_waited_out(harness: Harness) -> None:
    harness.fake.chat.script(rate_limited(retry_after_ms=200), feature_grader())
    requeued: list[float] = []
    worker = worker_module.EvaluationWorker(
        harness.worker_settings,
        harness.database,
        harness.ai,
        harness.worker.storage,
        lambda _, seconds: requeued.append(seconds),
    )
    [response_id] = requested(harness, harness.user(), 1)
    assert worker.handle(event(response_id), LambdaContext(60)) == {"batchItemFailures": []}
    assert harness.fake.chat.calls == 2
    assert requeued == []
    assert evaluated(harness, response_id)


def test_the_lambda_handler_reads_its_settings_from_the_environment(
    harness: Harness, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(worker_module, "_worker", None)
    monkeypatch.setenv("DATABASE_URL", harness.database_url)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    for name in ("LOCAL_STORAGE_DIR", "SUPABASE_URL", "SUPABASE_SERVICE_ROLE_KEY"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(ConfigurationError, match="LOCAL_STORAGE_DIR"):
        worker_module.handler({"Records": []}, None)

    monkeypatch.setenv("LOCAL_STORAGE_DIR", str(tmp_path))
    assert worker_module.handler({"Records": [record("not json")]}, None) == {"batchItemFailures": []}
    assert worker_module.handler({"Records": []}, None) == {"batchItemFailures": []}


@pytest.mark.usefixtures("in_lambda")
def test_each_record_counts_in_evaluations_with_its_duration(
    harness: Harness, capsys: pytest.CaptureFixture[str]
) -> None:
    user = harness.user()
    good, refused = requested(harness, user, 2)
    capsys.readouterr()
    harness.fake.chat.always(dynamic(lambda request: reply(grade_request(request))))
    harness.evaluate_now(good)
    harness.fake.chat.always(refusal())
    harness.evaluate_now(refused)
    found = documents(capsys.readouterr().out)

    assert values(found, "Evaluations", Outcome="completed") == [1]
    assert values(found, "Evaluations", Outcome="failed") == [1]
    assert all(0 < ms < 60_000 for ms in values(found, "EvaluationDuration"))
    # The grading call's cost and latency, by purpose.
    assert values(found, "AiCalls", Purpose="evaluation", Outcome="succeeded") == [1]
    assert values(found, "AiCalls", Purpose="evaluation", Outcome="failed") == [1]
    assert values(found, "AiCostUsd", Purpose="evaluation")[0] > 0
