"""POST /responses/{response_id}/evaluate: queue the AI evaluation of one of the user's answers.

service.request_evaluation checks ownership and the plan's daily limit, counts the evaluation and marks the
response 'queued'; only then is a message sent, so the worker never sees an evaluation nobody paid for. If
the answer is already queued or being evaluated nothing is counted or sent again. If the queue does not take
the message, service.fail_evaluation marks the response failed and refunds it, and the user is told to
retry. The result arrives later on the response row (clients watch it through Realtime).
"""

from __future__ import annotations

import logging
import os
import uuid
from typing import TYPE_CHECKING, Literal

from fastapi import FastAPI
from pydantic import BaseModel

from functions.evaluation.queue import EvaluationQueue, InProcessQueue, QueueUnavailableError, SqsQueue
from functions.evaluation.settings import EvaluationApiSettings, EvaluationWorkerSettings
from shared.auth import CurrentUser, TokenVerifier
from shared.config import ConfigurationError, load_settings
from shared.db import Database, connect
from shared.http import ProblemError, Uuid, create_app, lambda_entrypoint

if TYPE_CHECKING:  # only the in-process worker uses it; the deployed API never calls the AI service
    from shared.ai import AiClient

log = logging.getLogger("evaluation.api")


class EvaluationAccepted(BaseModel):
    response_id: uuid.UUID
    evaluation_status: Literal["queued", "processing"]


def queue_for(settings: EvaluationApiSettings, database: Database, ai: AiClient | None = None) -> EvaluationQueue:
    """SQS when EVALUATION_QUEUE_URL is set; otherwise the worker runs inside this process (local runs)."""
    if settings.evaluation_queue_url is not None:
        return SqsQueue(str(settings.evaluation_queue_url), timeout_seconds=settings.evaluation_queue_timeout_seconds)
    if os.environ.get("AWS_LAMBDA_FUNCTION_NAME"):
        # A frozen Lambda would never run the background thread: evaluations would be charged and lost.
        raise ConfigurationError("EVALUATION_QUEUE_URL is required in Lambda: set it to the evaluation queue's URL")
    from functions.evaluation.worker import build_worker  # the AI and storage clients only where they are used

    worker_settings = load_settings(EvaluationWorkerSettings)
    worker = build_worker(worker_settings, database=database, ai=ai)
    return InProcessQueue(worker.handle, max_receives=worker_settings.evaluation_max_receives)


def build_app(
    settings: EvaluationApiSettings,
    *,
    database: Database | None = None,
    ai: AiClient | None = None,
    queue: EvaluationQueue | None = None,
) -> FastAPI:
    app = create_app("Evaluation", description="Queues the AI evaluation of the signed-in user's answers.")
    app.state.verifier = TokenVerifier(settings)
    db = database or connect(settings)
    evaluations = queue or queue_for(settings, db, ai)

    @app.post(
        "/responses/{response_id}/evaluate",
        status_code=202,
        response_model=EvaluationAccepted,
        summary="Evaluate an answer",
    )
    def evaluate(response_id: Uuid, user: CurrentUser) -> EvaluationAccepted:
        requested = db.call("service.request_evaluation", {"user_id": str(user.id), "response_id": str(response_id)})
        if not requested["already_requested"]:
            try:
                evaluations.send(str(response_id))
            except QueueUnavailableError as error:
                log.error("evaluation not queued", extra={"response_id": str(response_id), "error": str(error)})
                db.call(
                    "service.fail_evaluation",
                    {"response_id": str(response_id), "reason": f"the evaluation could not be queued: {error}"},
                )
                raise ProblemError(
                    503,
                    "Evaluation unavailable",
                    "the answer could not be queued for evaluation and was not counted against your plan; "
                    "try again in a minute",
                    headers={"retry-after": "30"},
                ) from None
        return EvaluationAccepted(response_id=response_id, evaluation_status=requested["evaluation_status"])

    return app


def app_from_environment() -> FastAPI:
    """The app as deployed, settings from the environment; also `uvicorn --factory` for local serving."""
    return build_app(load_settings(EvaluationApiSettings))


handler = lambda_entrypoint(app_from_environment)
