"""The SQS-triggered evaluation worker: each record names a response to transcribe (if spoken), grade and store.

A batch's records are processed concurrently (each mostly waits on the AI service), and the handler answers
with a partial batch response: only records that failed transiently are listed in `batchItemFailures`, so
only they come back, after the visibility timeout. Per record:

    service.begin_evaluation   -> nothing to do (already completed, failed, ...): ack
                               -> else the context, the response now 'processing'
    transcribe                 -> only when there is a recording and no saved transcript (service.save_transcript)
    grade                      -> rubric, prompt, verdict, score computed in code (grading.py)
    service.complete_evaluation

Failures:
- transient (AI service unavailable, database or storage unreachable, the platform's AI budget spent): retried;
  when the AI service said how long to wait (Retry-After), the message comes back after that wait (its visibility
  timeout is changed) rather than the queue's. A wait longer than the invocation has left is not waited out: the
  AI client fails the call at once (AiClient.set_deadline, from the Lambda context's remaining time), so the
  function is never killed mid-sleep with the whole batch to redo. On the last receive (EVALUATION_MAX_RECEIVES,
  the redrive policy's maxReceiveCount) the response is also marked failed and refunded, so it is not left
  'processing' while the message moves to the dead-letter queue;
- permanent (the model refused, its output was invalid, no answer to grade, the recording missing, the user's
  daily AI allowance used up): the response is marked failed with the reason and the record is acked;
  service.fail_evaluation gives the quota unit back only if no AI call was billed for it;
- a malformed message (not JSON, no response id) is logged and acked: retrying a poison message cannot help.
"""

from __future__ import annotations

import json
import logging
import os
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any, Literal

from pydantic import BaseModel, ValidationError

from functions.evaluation import grading
from functions.evaluation.queue import SqsVisibility
from functions.evaluation.rubrics import RubricError, rubric_for
from functions.evaluation.settings import EvaluationWorkerSettings
from functions.evaluation.storage import (
    AudioMissingError,
    AudioStorage,
    AudioTooLargeError,
    StorageUnavailableError,
    storage_from,
)
from shared.ai import (
    AiBudgetExceededError,
    AiClient,
    AiError,
    AiUnavailableError,
    database_budget,
    database_usage_sink,
)
from shared.config import load_settings
from shared.db import Database, DatabaseError, connect
from shared.logs import configure_logging, request_id
from shared.metrics import Metric, emit

log = logging.getLogger("evaluation.worker")

# What an invocation keeps for after its AI calls: failing or saving the evaluation and requeueing the message.
DEADLINE_RESERVE_SECONDS = 10.0
# Gives a record back to its queue after some seconds (SqsVisibility).
Requeue = Callable[[dict[str, Any], float], None]


class EvaluationFailedError(Exception):
    """Retrying cannot help: the evaluation fails with this reason (shown to the user)."""


class Question(BaseModel):
    content: str
    category: str
    difficulty: str
    experience_level: str
    evaluation_criteria: Any = None
    key_points: list[str] | None = None


class EvaluationContext(BaseModel):
    """What service.begin_evaluation returns for a response to evaluate."""

    response_id: uuid.UUID
    user_id: uuid.UUID
    session_id: uuid.UUID
    answer_text: str | None = None
    audio_path: str | None = None
    transcript: str | None = None
    question: Question


Outcome = Literal["completed", "skipped", "failed", "retry", "malformed"]


@dataclass(frozen=True)
class RecordResult:
    message_id: str
    response_id: str | None
    outcome: Outcome
    detail: str = ""
    # For a retry: when the AI service asked to be called again (its Retry-After), in seconds.
    retry_after: float | None = None


class MalformedMessageError(ValueError):
    pass


class EvaluationWorker:
    def __init__(
        self,
        settings: EvaluationWorkerSettings,
        database: Database,
        ai: AiClient,
        storage: AudioStorage,
        requeue: Requeue | None = None,
    ) -> None:
        self.settings, self.db, self.ai, self.storage, self.requeue = settings, database, ai, storage, requeue

    def handle(self, event: dict[str, Any], context: Any = None) -> dict[str, Any]:
        """Lambda's SQS handler: process the batch, report the records to retry (ReportBatchItemFailures)."""
        records: list[dict[str, Any]] = event.get("Records") or []
        if not records:
            return {"batchItemFailures": []}
        remaining_ms = getattr(context, "get_remaining_time_in_millis", None)
        if remaining_ms is not None:
            self.ai.set_deadline(time.monotonic() + remaining_ms() / 1000 - DEADLINE_RESERVE_SECONDS)
        threads = min(len(records), self.settings.evaluation_concurrency)
        with ThreadPoolExecutor(max_workers=threads, thread_name_prefix="evaluate") as pool:
            results = list(pool.map(self.process_record, records))
        for record, result in zip(records, results, strict=True):
            if result.outcome == "retry" and result.retry_after is not None:
                self._requeue(record, result)
        counts: dict[str, int] = {}
        for result in results:
            counts[result.outcome] = counts.get(result.outcome, 0) + 1
        log.info("evaluation batch", extra={"records": len(records), **counts})
        return {"batchItemFailures": [{"itemIdentifier": r.message_id} for r in results if r.outcome == "retry"]}

    def _requeue(self, record: dict[str, Any], result: RecordResult) -> None:
        """Back in the queue after the wait the AI service asked for; if that fails, after the queue's own
        visibility timeout (the record is reported for retry either way)."""
        if self.requeue is None:
            return
        try:
            self.requeue(record, result.retry_after or 0)
        except Exception:
            log.warning("could not shorten the retried message's wait", extra={"response_id": result.response_id})
        else:
            log.info("evaluation requeued", extra={"response_id": result.response_id, "seconds": result.retry_after})

    def process_record(self, record: dict[str, Any]) -> RecordResult:
        started = time.perf_counter()
        result = self._process_record(record)
        # Metrics Evaluations and EvaluationDuration by outcome, and Evaluations in total.
        emit(
            [
                Metric("Evaluations", 1),
                Metric("EvaluationDuration", round((time.perf_counter() - started) * 1000, 1), "Milliseconds"),
            ],
            {"Outcome": result.outcome},
        )
        return result

    def _process_record(self, record: dict[str, Any]) -> RecordResult:
        message_id = str(record.get("messageId", ""))
        token = request_id.set(message_id or None)
        try:
            try:
                response_id = _response_id(record.get("body"))
            except MalformedMessageError as error:
                log.error("malformed evaluation message dropped", extra={"message_id": message_id, "error": str(error)})
                return RecordResult(message_id, None, "malformed", str(error))
            receives = _receive_count(record)
            try:
                outcome = self.evaluate(response_id)
                return RecordResult(message_id, response_id, outcome)
            except Exception as error:
                return self._failed(message_id, response_id, error, receives)
        finally:
            request_id.reset(token)

    def evaluate(self, response_id: str) -> Outcome:
        begun = self.db.call("service.begin_evaluation", {"response_id": response_id})
        if "skip" in begun:
            log.info("nothing to evaluate", extra={"response_id": response_id, "status": begun["skip"]})
            return "skipped"
        try:
            context = EvaluationContext.model_validate(begun)
        except ValidationError as error:
            raise EvaluationFailedError("the evaluation could not start (unexpected response data)") from error
        question = context.question
        rubric = rubric_for(question.category, question.experience_level, question.evaluation_criteria)
        answer, spoken = self._answer(context)
        evaluation = grading.grade(
            self.ai,
            rubric,
            question.model_dump(),
            answer,
            spoken=spoken,
            max_answer_chars=self.settings.evaluation_max_answer_chars,
            user_id=str(context.user_id),
            response_id=response_id,
        )
        done = self.db.call(
            "service.complete_evaluation",
            {"response_id": response_id, "result": evaluation.result(self.settings.ai_model)},
        )
        log.info(
            "evaluated",
            extra={
                "response_id": response_id,
                "ai_score": evaluation.ai_score,
                "rubric_version": rubric.version,
                "injection_suspected": evaluation.injection_suspected,
                "injection_signals": list(evaluation.injection_signals),
                "already": done.get("already"),
                "session_overall_score": done.get("session_overall_score"),
            },
        )
        return "completed"

    def _answer(self, context: EvaluationContext) -> tuple[str, bool]:
        """The text to grade: the written answer and/or the recording's transcript, and whether it was spoken."""
        transcript = context.transcript
        if context.audio_path and transcript is None:
            transcript = self._transcribe(context)
            # Kept raw, before grading: a retry after a grading failure does not pay for transcription again.
            self.db.call("service.save_transcript", {"response_id": str(context.response_id), "transcript": transcript})
        parts = [text.strip() for text in (context.answer_text, transcript) if text and text.strip()]
        if not parts:
            if context.audio_path:
                raise EvaluationFailedError("no speech was recognised in the recording")
            raise EvaluationFailedError("there is nothing to evaluate: no written answer and no recording")
        return "\n\n".join(parts), bool(transcript and transcript.strip())

    def _transcribe(self, context: EvaluationContext) -> str:
        path = context.audio_path or ""
        # audio_path is written by the user: never read outside their own folder with the service key.
        parts = PurePosixPath(path).parts
        if len(parts) < 2 or parts[0] != str(context.user_id) or ".." in parts:
            raise EvaluationFailedError("the recording is not in the answer owner's storage folder")
        try:
            audio = self.storage.read(path)
        except (AudioMissingError, AudioTooLargeError) as error:
            raise EvaluationFailedError(str(error)) from error
        if not audio:
            raise EvaluationFailedError("the recording is empty")
        return self.ai.transcribe(audio, parts[-1], user_id=str(context.user_id), response_id=str(context.response_id))

    def _failed(self, message_id: str, response_id: str, error: Exception, receives: int) -> RecordResult:
        permanent, reason = _classify(error)
        if not permanent and receives < self.settings.evaluation_max_receives:
            log.warning(
                "evaluation will be retried",
                extra={"response_id": response_id, "receives": receives, "reason": reason},
                exc_info=_unexpected(error),
            )
            wait = error.retry_after if isinstance(error, AiUnavailableError) else None
            return RecordResult(message_id, response_id, "retry", reason, wait)
        if not permanent:
            reason = f"gave up after {receives} attempts: {reason}"
        try:
            self.db.call("service.fail_evaluation", {"response_id": response_id, "reason": reason})
        except Exception:
            # Not recorded: the message must come back (or reach the dead-letter queue) rather than vanish.
            log.exception("could not mark the evaluation failed", extra={"response_id": response_id})
            return RecordResult(message_id, response_id, "retry", reason)
        log.warning(
            "evaluation failed",
            extra={"response_id": response_id, "receives": receives, "reason": reason, "permanent": permanent},
            exc_info=_unexpected(error),
        )
        # A transient failure on the last receive is still reported, so the message lands in the dead-letter queue.
        return RecordResult(message_id, response_id, "failed" if permanent else "retry", reason)


def _classify(error: Exception) -> tuple[bool, str]:
    """(permanent?, reason for the user): whether another delivery could succeed where this one failed."""
    if isinstance(error, EvaluationFailedError | RubricError):
        return True, str(error)
    if isinstance(error, AiUnavailableError):
        return False, "the AI service is unavailable"
    if isinstance(error, AiBudgetExceededError):
        # The platform's budget returns tomorrow for everyone; the user's own allowance is theirs to wait for.
        return error.scope == "user", str(error)
    if isinstance(error, AiError):
        if error.kind == "error":  # an SDK failure we cannot name: give it another delivery
            return False, "the AI call failed unexpectedly"
        return True, {
            "refused": "the AI model declined to evaluate this answer",
            "invalid_output": "the AI model's evaluation was not valid",
            "disabled": "AI evaluation is off: no model is configured",
        }.get(error.kind, "the AI service is not configured correctly")
    if isinstance(error, DatabaseError):
        if error.retryable or error.status >= 500:
            return False, "the database is unavailable"
        return True, f"the evaluation could not be saved ({error.title})"
    if isinstance(error, StorageUnavailableError):
        return False, str(error)
    return False, f"an unexpected error occurred ({type(error).__name__})"


def _unexpected(error: Exception) -> bool:
    """Worth a traceback in the logs: a failure none of the expected kinds explains."""
    return not isinstance(
        error,
        EvaluationFailedError | RubricError | AiError | DatabaseError | StorageUnavailableError,
    )


def _response_id(body: Any) -> str:
    try:
        message = json.loads(body)
    except (TypeError, ValueError) as error:
        raise MalformedMessageError("the message body is not JSON") from error
    if not isinstance(message, dict) or not isinstance(message.get("response_id"), str):
        raise MalformedMessageError("the message has no response_id")
    try:
        return str(uuid.UUID(message["response_id"]))
    except ValueError:
        raise MalformedMessageError("the message's response_id is not a UUID") from None


def _receive_count(record: dict[str, Any]) -> int:
    try:
        return max(1, int(record.get("attributes", {}).get("ApproximateReceiveCount", 1)))
    except (TypeError, ValueError):
        return 1


def build_worker(
    settings: EvaluationWorkerSettings,
    *,
    database: Database | None = None,
    ai: AiClient | None = None,
    storage: AudioStorage | None = None,
    requeue: Requeue | None = None,
) -> EvaluationWorker:
    """The worker; records are requeued with SQS (SqsVisibility) in Lambda, `requeue` elsewhere (if given)."""
    configure_logging(os.environ.get("LOG_LEVEL", "INFO"))
    db = database or connect(settings)
    ai = ai or AiClient(settings, usage_sink=database_usage_sink(db), budget=database_budget(db, settings))
    if requeue is None and os.environ.get("AWS_LAMBDA_FUNCTION_NAME"):
        requeue = SqsVisibility()
    return EvaluationWorker(settings, db, ai, storage or storage_from(settings), requeue)


# In Lambda the worker is built at import, so a missing setting fails the cold start with a message naming it.
_worker = build_worker(load_settings(EvaluationWorkerSettings)) if os.environ.get("AWS_LAMBDA_FUNCTION_NAME") else None


def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    global _worker
    if _worker is None:
        _worker = build_worker(load_settings(EvaluationWorkerSettings))
    return _worker.handle(event, context)
