"""POST /questions: questions the user has never been served, from the bank first, generated only if short.

service.request_questions counts the request against the plan, opens (or continues) a session and serves
from the bank, widening the request before giving up. Only the remaining deficit (plus a small prefetch for
the next user) is generated, by one request per bucket at a time: the others wait for its lease and are then
served from the bank. The response says which questions came from the bank and which were generated.
"""

from __future__ import annotations

import logging
import math
import time
import uuid
from typing import Annotated, Any, Literal, Self

from fastapi import FastAPI, Request
from pydantic import BaseModel, Field, StringConstraints, model_validator

from functions.questions import generation
from functions.questions.settings import QuestionsSettings
from shared.ai import (
    AiBudgetExceededError,
    AiClient,
    AiError,
    AiUnavailableError,
    database_budget,
    database_usage_sink,
)
from shared.auth import AuthenticatedUser, CurrentUser, TokenVerifier
from shared.config import load_settings
from shared.db import Database, DatabaseError, connect
from shared.http import ProblemError, RequestModel, Uuid, create_app, lambda_entrypoint
from shared.metrics import Metric, emit

log = logging.getLogger("questions.api")

Category = Literal["behavioral", "technical", "situational", "leadership", "problem_solving", "culture_fit"]
Difficulty = Literal["easy", "medium", "hard"]
Level = Literal["entry", "mid", "senior", "lead", "executive"]
Tag = Annotated[str, StringConstraints(strip_whitespace=True, to_lower=True, pattern=r"^[a-z0-9][a-z0-9 -]{0,39}$")]
# No role name has control characters, and PostgreSQL cannot store a NUL: refused with a 422 naming the field
# (a pattern, so the OpenAPI document says so too), not by the database.
RoleName = Annotated[str, StringConstraints(strip_whitespace=True, max_length=80, pattern=r"^[^\x00-\x1f\x7f]*$")]

# API Gateway (HTTP API) answers 503 itself after 30 s; the function's timeout is 29 s (serverless.yml).
API_TIMEOUT_SECONDS = 29.0
# Of that, what an AI call leaves for the database calls after it (the bank fallback, the lease's release).
AFTER_AI_RESERVE_SECONDS = 3.0


# A request either filters (these three required) or asks for recommendations (these refused).
FILTERS = ("category", "difficulty", "experience_level")
CHOSEN_BY_RECOMMENDATION = ("difficulty", "experience_level", "target_role", "tags")


class QuestionRequest(RequestModel):
    """Either the filters (category, difficulty and experience_level; a role and tags if wanted), or `mode:
    "recommended"`: what the user should practise next (public.recommend_next's picks: their weakest and
    most due categories, at a 70% chance of success, one line of why each), optionally within one category."""

    mode: Literal["recommended"] | None = Field(
        default=None,
        description='"recommended": the calibration picks categories and difficulty (level and role come from the '
        "profile), so difficulty, experience_level, target_role and tags are refused with it",
    )
    category: Category | None = Field(default=None, description="Required without mode; with it, narrows the picks")
    difficulty: Difficulty | None = Field(default=None, description="Required without mode")
    experience_level: Level | None = Field(default=None, description="Required without mode")
    target_role: RoleName | None = Field(
        default=None, description="A role of public.vocabulary (or its alias, or a near spelling); others are a 422"
    )
    tags: Annotated[
        list[Tag],
        Field(
            default_factory=list,
            max_length=8,
            description="Tags of public.vocabulary (aliases and near spellings map to them)",
        ),
    ]
    count: Annotated[int, Field(ge=1, le=20)] = 5
    session_id: Uuid | None = Field(default=None, description="Continue this session instead of a new one")

    @model_validator(mode="after")
    def _filters_or_mode(self) -> Self:
        if self.mode is None:
            missing = [name for name in FILTERS if getattr(self, name) is None]
            if missing:
                raise ValueError(f'{", ".join(missing)} required, or mode "recommended"')
        else:
            chosen = [name for name in CHOSEN_BY_RECOMMENDATION if getattr(self, name)]
            if chosen:
                raise ValueError(
                    "a recommended request takes difficulty from your answers and level and role from your "
                    f"profile: leave out {', '.join(chosen)}, or mode to choose them yourself"
                )
        return self


class ServedQuestion(BaseModel):
    id: uuid.UUID
    session_question_id: uuid.UUID
    position: int
    content: str
    category: Category
    difficulty: Difficulty
    experience_level: Level
    target_role: str | None
    tags: list[str]
    served_from: Literal["bank", "generated"]
    widening: str | None = Field(
        description="How far the request was widened to find it: exact, any_tags, ...; recommended for the picks"
    )
    reason: str | None = Field(default=None, description="Why it was picked, in one line (recommended mode only)")


class GenerationReport(BaseModel):
    status: Literal["not_needed", "generated", "off", "not_in_plan", "spend_cap_reached", "busy", "failed"]
    detail: str
    ai_calls: int = 0
    generated_ahead: int = Field(
        default=0, description="Questions added to the bank ahead of demand (none served now), for later requests"
    )


class QuestionsServed(BaseModel):
    session_id: uuid.UUID
    questions: list[ServedQuestion]
    from_bank: int
    generated: int
    generation: GenerationReport


class QuestionEngine:
    def __init__(self, settings: QuestionsSettings, database: Database, ai: AiClient) -> None:
        self.settings, self.db, self.ai = settings, database, ai

    def serve(self, user: AuthenticatedUser, request: QuestionRequest) -> QuestionsServed:
        args = request.model_dump(mode="json", exclude_none=True)
        result = self.db.call("service.request_questions", {"user_id": str(user.id), "request": args})
        # The database maps roles and tags onto its vocabulary: generate for the request it checked.
        checked: dict[str, Any] = result["request"]
        served: list[dict[str, Any]] = result["questions"]
        deficit: int = result["deficit"]
        if deficit == 0:
            report = GenerationReport(status="not_needed", detail="every question came from the bank")
        elif not self.settings.enabled:
            report = GenerationReport(
                status="off",
                detail=f"AI generation is off (no model configured); {deficit} fewer questions than "
                "asked: the bank has no more for this request",
            )
        elif not result["ai_generation_included"]:
            report = GenerationReport(status="not_in_plan", detail="AI-generated questions come with a paid plan")
        else:
            report, more = self._generate(user, checked, result["session_id"], deficit, served)
            served += more
        ahead = result.get("generate_ahead")
        if ahead and self.settings.enabled and result["ai_generation_included"] and report.status != "failed":
            report = self._generate_ahead(user, ahead, report)
        # The database marks what was generated for this request; everything else came from the bank.
        questions = [
            ServedQuestion(**q, served_from="generated" if q["widening"] == "generated" else "bank") for q in served
        ]
        answer = QuestionsServed(
            session_id=result["session_id"],
            questions=questions,
            from_bank=sum(q.served_from == "bank" for q in questions),
            generated=sum(q.served_from == "generated" for q in questions),
            generation=report,
        )
        count_served(answer)
        return answer

    def _generate(
        self,
        user: AuthenticatedUser,
        request: dict[str, Any],
        session_id: str,
        deficit: int,
        served: list[dict[str, Any]],
    ) -> tuple[GenerationReport, list[dict[str, Any]]]:
        bucket = "/".join(str(request.get(k) or "*") for k in ("category", "difficulty", "experience_level"))
        bucket += "/" + (request.get("target_role") or "*").lower()
        lease_seconds = int(self.settings.ai_timeout_seconds * (self.settings.ai_max_retries + 1)) + 10
        holder = self.db.call("service.acquire_generation_lease", {"bucket_key": bucket, "ttl_seconds": lease_seconds})
        if holder is None:
            self._wait_for_lease(bucket)
            more = self._serve_more(user, session_id, request, deficit)
            report = GenerationReport(
                status="not_needed" if len(more) == deficit else "busy",
                detail="another request was generating for this bucket; served what it added to the bank",
            )
            return report, more
        try:
            output = self.ai.structured(
                "question_generation",
                generation.messages(request, deficit + self.settings.question_prefetch, [q["content"] for q in served]),
                generation.GeneratedQuestions,
                user_id=str(user.id),
            )
            added = self.db.call(
                "service.add_generated_questions",
                {
                    "questions": [{**q.model_dump(), **_bucket_fields(request)} for q in output.questions],
                    "generation": {
                        "model": self.settings.ai_model,
                        "prompt_version": generation.PROMPT_VERSION,
                        "request": request,
                    },
                    "generated_for": str(user.id),
                },
            )
        except AiBudgetExceededError as error:
            report = GenerationReport(status="spend_cap_reached", detail=f"{error}; serving the bank only")
            return report, self._serve_more(user, session_id, request, deficit)
        except AiUnavailableError as error:
            more = self._serve_more(user, session_id, request, deficit)
            if error.retry_after is not None and not served and not more:
                # The AI asked for a wait this request has no time for, and nothing else could be served: the
                # client waits instead (nothing was served, so nothing is lost; session_id continues the session).
                raise ProblemError(
                    503,
                    "Questions unavailable",
                    f"the AI service is busy and the bank has no more questions for this request; "
                    f"ask again in {math.ceil(error.retry_after)} s",
                    headers={"retry-after": str(math.ceil(error.retry_after))},
                    session_id=session_id,
                ) from None
            return GenerationReport(status="failed", detail=str(error), ai_calls=1), more
        except AiError as error:
            return GenerationReport(status="failed", detail=str(error), ai_calls=1), self._serve_more(
                user, session_id, request, deficit
            )
        finally:
            self.db.call("service.release_generation_lease", {"bucket_key": bucket, "holder": holder})
        detail = f"generated {len(added['inserted'])} new questions"
        if added["duplicates"] or added["paraphrases"]:
            detail += f"; dropped {added['duplicates']} duplicates and {added['paraphrases']} paraphrases of the bank"
        report = GenerationReport(status="generated", detail=detail, ai_calls=1)
        return report, self._serve_more(user, session_id, request, deficit, added["inserted"])

    def _generate_ahead(
        self, user: AuthenticatedUser, request: dict[str, Any], report: GenerationReport
    ) -> GenerationReport:
        """Questions for a bucket and tag the bank keeps widening for (service.request_questions counts them and
        says when), added to the shared bank for the requests to come; none is served now. Skipped while another
        request generates for the bucket; charged to this user's AI budget like any generation."""
        bucket = "/".join(str(request[k]) for k in ("category", "difficulty", "experience_level")) + "/*"
        lease_seconds = int(self.settings.ai_timeout_seconds * (self.settings.ai_max_retries + 1)) + 10
        holder = self.db.call("service.acquire_generation_lease", {"bucket_key": bucket, "ttl_seconds": lease_seconds})
        if holder is None:
            return report
        try:
            output = self.ai.structured(
                "question_generation",
                generation.messages(request, request["count"], []),
                generation.GeneratedQuestions,
                user_id=str(user.id),
            )
            added = self.db.call(
                "service.add_generated_questions",
                {
                    # Tagged with the key's tag whatever the model answered: that demand is what they are for.
                    "questions": [
                        {**q.model_dump(), **_bucket_fields(request), "tags": sorted({*q.tags, *request["tags"]})}
                        for q in output.questions
                    ],
                    "generation": {
                        "model": self.settings.ai_model,
                        "prompt_version": generation.PROMPT_VERSION,
                        "request": request,
                        "ahead": True,
                    },
                    "generated_for": None,
                },
            )
        except AiBudgetExceededError:
            return report
        except (AiError, DatabaseError) as error:
            # The user has been served already: a failure here is logged and costs them nothing.
            log.warning("generating ahead for %s failed: %s", bucket, error)
            return report.model_copy(update={"ai_calls": report.ai_calls + 1})
        finally:
            self.db.call("service.release_generation_lease", {"bucket_key": bucket, "holder": holder})
        return report.model_copy(
            update={
                "ai_calls": report.ai_calls + 1,
                "generated_ahead": len(added["inserted"]),
                "detail": f"{report.detail}; {len(added['inserted'])} more generated ahead for this bucket",
            }
        )

    def _serve_more(
        self,
        user: AuthenticatedUser,
        session_id: str,
        request: dict[str, Any],
        wanted: int,
        generated: list[str] | None = None,
    ) -> list[dict[str, Any]]:
        return self.db.call(
            "service.serve_more_questions",
            {
                "user_id": str(user.id),
                "session_id": session_id,
                "request": request,
                "wanted": wanted,
                "generated": generated or [],
            },
        )

    def _wait_for_lease(self, bucket: str) -> None:
        deadline = time.monotonic() + self.settings.generation_wait_seconds
        while time.monotonic() < deadline and self.db.call("service.generation_lease_held", {"bucket_key": bucket}):
            time.sleep(0.2)


def count_served(answer: QuestionsServed) -> None:
    """Metrics QuestionsFromBank and QuestionsGenerated (their sums give the platform's cache hit ratio) and
    CacheHitRatio, this request's share from the bank, by generation status."""
    served = answer.from_bank + answer.generated
    metrics = [Metric("QuestionsFromBank", answer.from_bank), Metric("QuestionsGenerated", answer.generated)]
    if served:
        metrics.append(Metric("CacheHitRatio", 100 * answer.from_bank / served, "Percent"))
    emit(metrics, {"Generation": answer.generation.status}, aggregate=[()])


def ai_deadline(lambda_context: Any) -> float:
    """When this request's AI calls must end (a time.monotonic() value): a Retry-After that outlasts it is not
    waited out (AiClient.set_deadline). The invocation's remaining time when Lambda says it, else the API's."""
    remaining_ms = getattr(lambda_context, "get_remaining_time_in_millis", None)
    left = min(API_TIMEOUT_SECONDS, remaining_ms() / 1000) if remaining_ms is not None else API_TIMEOUT_SECONDS
    return time.monotonic() + left - AFTER_AI_RESERVE_SECONDS


def _bucket_fields(request: dict[str, Any]) -> dict[str, Any]:
    """The bucket comes from the request, never from the model's answer."""
    return {k: request.get(k) for k in ("category", "difficulty", "experience_level", "target_role")}


def build_app(settings: QuestionsSettings, *, database: Database | None = None, ai: AiClient | None = None) -> FastAPI:
    app = create_app("Questions", description="Interview questions for the signed-in user, from the bank first.")
    app.state.verifier = TokenVerifier(settings)
    db = database or connect(settings)
    ai = ai or AiClient(settings, usage_sink=database_usage_sink(db), budget=database_budget(db, settings))
    engine = QuestionEngine(settings, db, ai)

    @app.post("/questions", response_model=QuestionsServed, summary="Get questions to practise")
    def questions(request: QuestionRequest, user: CurrentUser, http: Request) -> QuestionsServed:
        ai.set_deadline(ai_deadline(http.scope.get("aws.context")))
        return engine.serve(user, request)

    return app


handler = lambda_entrypoint(lambda: build_app(load_settings(QuestionsSettings)))
