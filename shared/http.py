"""The shape every HTTP function shares: a FastAPI app, RFC 9457 problem details, request ids, JSON logs,
and the Mangum adapter that turns it into a Lambda handler."""

from __future__ import annotations

import logging
import os
import time
import uuid
from collections.abc import Awaitable, Callable
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from mangum import Mangum
from starlette.exceptions import HTTPException as StarletteHTTPException

from shared.db import DatabaseError
from shared.logs import configure_logging, request_id

log = logging.getLogger("http")

PROBLEM_JSON = "application/problem+json"


# The body every error answers with, for the OpenAPI document (written out: deriving it costs cold-start time).
PROBLEM_SCHEMA: dict[str, Any] = {
    "title": "Problem",
    "description": "RFC 9457 problem details; some carry more, e.g. `errors` (422) or `hint`",
    "type": "object",
    "required": ["type", "title", "status", "detail"],
    "properties": {
        "type": {"type": "string", "examples": ["about:blank"]},
        "title": {"type": "string", "description": "What went wrong, in a few words"},
        "status": {"type": "integer", "minimum": 400, "maximum": 599, "description": "The HTTP status again"},
        "detail": {"type": "string", "minLength": 1, "description": "What happened and what to do about it"},
        "request_id": {"type": ["string", "null"], "description": "Quote it when reporting a problem"},
    },
}
# Every operation documents its errors as problem details; this also replaces FastAPI's default 422 schema,
# which the handlers below never send.
PROBLEM_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"description": description, "content": {PROBLEM_JSON: {"schema": PROBLEM_SCHEMA}}}
    for status, description in (("4XX", "The request was refused"), ("5XX", "The request failed on our side"))
}


class ProblemError(Exception):
    """An error the client can act on: status, a short title, and what to do about it."""

    def __init__(
        self, status: int, title: str, detail: str, *, headers: dict[str, str] | None = None, **extra: Any
    ) -> None:
        super().__init__(detail)
        self.status, self.title, self.detail, self.headers, self.extra = status, title, detail, headers, extra


def problem_response(
    status: int, title: str, detail: str, headers: dict[str, str] | None = None, **extra: Any
) -> JSONResponse:
    body = {
        "type": "about:blank",
        "title": title,
        "status": status,
        "detail": detail,
        "request_id": request_id.get(),
        **extra,
    }
    return JSONResponse(body, status_code=status, media_type=PROBLEM_JSON, headers=headers)


def create_app(title: str, *, version: str = "1.0.0", description: str = "") -> FastAPI:
    configure_logging(os.environ.get("LOG_LEVEL", "INFO"))
    app = FastAPI(title=title, version=version, description=description, responses=PROBLEM_RESPONSES)

    @app.middleware("http")
    async def with_request_id(request: Request, call_next: Callable[[Request], Awaitable[Any]]) -> Any:
        lambda_context = request.scope.get("aws.context")
        rid = request.headers.get("x-request-id") or getattr(lambda_context, "aws_request_id", None) or uuid.uuid4().hex
        token = request_id.set(rid)
        started = time.perf_counter()
        try:
            try:
                response = await call_next(request)
            except Exception:
                log.exception("unhandled error")
                response = problem_response(
                    500, "Internal error", "something went wrong on our side; quote the request id"
                )
            response.headers["x-request-id"] = rid
            log.info(
                "request",
                extra={
                    "method": request.method,
                    "path": request.url.path,
                    "status": response.status_code,
                    "duration_ms": round((time.perf_counter() - started) * 1000, 2),
                },
            )
            return response
        finally:
            request_id.reset(token)

    @app.exception_handler(ProblemError)
    async def on_problem(_: Request, error: ProblemError) -> JSONResponse:
        # The caller is told why; so is the operator (a refused webhook usually means a misconfigured secret).
        log.log(
            logging.ERROR if error.status >= 500 else logging.WARNING,
            "request refused",
            extra={"status": error.status, "title": error.title, "detail": error.detail},
        )
        return problem_response(error.status, error.title, error.detail, error.headers, **error.extra)

    @app.exception_handler(DatabaseError)
    async def on_database_error(_: Request, error: DatabaseError) -> JSONResponse:
        if error.status >= 500:
            log.error("database call failed", extra={"sqlstate": error.sqlstate, "detail": error.detail})
        extra = {"hint": error.hint} if error.hint else {}
        headers = {"retry-after": "5"} if error.retryable else None
        return problem_response(error.status, error.title, error.detail, headers, **extra)

    @app.exception_handler(RequestValidationError)
    async def on_invalid_request(_: Request, error: RequestValidationError) -> JSONResponse:
        fields = [{"field": ".".join(str(p) for p in item["loc"]), "message": item["msg"]} for item in error.errors()]
        named = ", ".join(f["field"] for f in fields)
        return problem_response(422, "Invalid request", f"check these fields: {named}", errors=fields)

    @app.exception_handler(StarletteHTTPException)
    async def on_http_error(_: Request, error: StarletteHTTPException) -> JSONResponse:
        return problem_response(
            error.status_code,
            _reason(error.status_code),
            str(error.detail),
            dict(error.headers) if error.headers else None,
        )

    return app


def _reason(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


LambdaHandler = Callable[[dict[str, Any], Any], dict[str, Any]]


def lambda_entrypoint(build: Callable[[], FastAPI]) -> LambdaHandler:
    """The Lambda handler for the app `build` makes (settings read from the environment).

    In Lambda the app is built while the module is imported, so a missing setting fails the cold start with
    a message naming it. Elsewhere (tests, local serving) importing the module builds nothing.
    """
    handler: Mangum | None = Mangum(build(), lifespan="off") if os.environ.get("AWS_LAMBDA_FUNCTION_NAME") else None

    def handle(event: dict[str, Any], context: Any) -> dict[str, Any]:
        nonlocal handler
        if handler is None:
            handler = Mangum(build(), lifespan="off")
        return handler(event, context)

    return handle
