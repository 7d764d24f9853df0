"""The shape every HTTP function shares: a FastAPI app, RFC 9457 problem details, request ids, JSON logs,
and the Mangum adapter that turns it into a Lambda handler."""

from __future__ import annotations

import logging
import os
import re
import time
import uuid
from collections.abc import Awaitable, Callable, Coroutine
from http import HTTPStatus
from typing import Annotated, Any, TypeVar

from fastapi import FastAPI, Request, Response
from fastapi.dependencies.models import Dependant
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from mangum import Mangum
from pydantic import BaseModel, BeforeValidator, ConfigDict, WithJsonSchema
from starlette.concurrency import run_in_threadpool
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


# --- What a request may be: strict models, canonical ids -----------------------------------------------------------


class RequestModel(BaseModel):
    """A request body: exactly the documented fields, each of the documented JSON type. Nothing is coerced: `"5"`
    and `true` are not the integer 5 and 1, and a field the document does not name is refused."""

    model_config = ConfigDict(extra="forbid", strict=True)


UUID_PATTERN = r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"
_CANONICAL_UUID = re.compile(UUID_PATTERN)


def _canonical_uuid(value: object) -> object:
    # Python's UUID() also takes 32 bare hex digits, braces and `urn:uuid:`, which the document does not offer.
    if isinstance(value, str):
        if not _CANONICAL_UUID.match(value):
            raise ValueError("must be a UUID written as 8-4-4-4-12 hex digits")
        return uuid.UUID(value)
    return value


# A UUID in a body, path or query: only its canonical text form, and the document says so (format and pattern).
Uuid = Annotated[
    uuid.UUID,
    BeforeValidator(_canonical_uuid),
    WithJsonSchema({"type": "string", "format": "uuid", "pattern": UUID_PATTERN}),
]


# --- The order a request is checked in ---------------------------------------------------------------------------

Dependency = TypeVar("Dependency", bound=Callable[..., Any])


def checked_before_body(check: Callable[[Request], object]) -> Callable[[Dependency], Dependency]:
    """Marks a dependency whose `check` runs before the body is read (see CheckedRoute); `check` raises to refuse."""

    def mark(dependency: Dependency) -> Dependency:
        dependency.__checked_before_body__ = check  # type: ignore[attr-defined]
        return dependency

    return mark


def _checks_before_body(dependant: Dependant) -> list[Callable[[Request], object]]:
    checks = []
    for dependency in dependant.dependencies:
        check = getattr(dependency.call, "__checked_before_body__", None)
        if check is not None and check not in checks:
            checks.append(check)
        checks += [c for c in _checks_before_body(dependency) if c not in checks]
    return checks


class CheckedRoute(APIRoute):
    """Checks a request in the order a client can act on: who is calling (401, from the dependencies marked
    `checked_before_body`), then the body's media type (415), and only then its JSON (400) and fields (422).
    FastAPI alone reads the body before any dependency: a malformed body without a token was a 422, not a 401."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handle = super().get_route_handler()
        checks = _checks_before_body(self.dependant)
        takes_json = self.body_field is not None

        async def checked(request: Request) -> Response:
            for check in checks:
                await run_in_threadpool(check, request)  # may fetch signing keys: off the event loop
            if takes_json and await request.body():
                _require_json(request.headers.get("content-type"))
            return await handle(request)

        return checked


def _require_json(content_type: str | None) -> None:
    media_type = (content_type or "").split(";")[0].strip().lower()
    if media_type != "application/json":
        sent = f"Content-Type {media_type!r}" if media_type else "no Content-Type"
        raise ProblemError(
            415,
            "Unsupported media type",
            f"the body must be JSON sent as Content-Type: application/json; this request has {sent}",
        )


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
    app.router.route_class = CheckedRoute

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
        if not error.ours:
            # The database's own words (constraint, type and enum names, hosts) are for the operator's log only;
            # our SQL functions' refusals are written for the caller, who gets them whole.
            log.log(
                logging.ERROR if error.status >= 500 else logging.WARNING,
                "database call failed",
                extra={"sqlstate": error.sqlstate, "detail": error.detail, "hint": error.hint},
            )
        extra = {"hint": error.client_hint} if error.client_hint else {}
        headers = {"retry-after": "5"} if error.retryable else None
        return problem_response(error.status, error.client_title, error.client_detail, headers, **extra)

    @app.exception_handler(RequestValidationError)
    async def on_invalid_request(_: Request, error: RequestValidationError) -> JSONResponse:
        errors = error.errors()
        broken = next((item for item in errors if item["type"] == "json_invalid"), None)
        if broken is not None:
            reason = (broken.get("ctx") or {}).get("error", "it does not parse")
            return problem_response(
                400,
                "Malformed JSON",
                f"the body is not valid JSON ({reason} at character {broken['loc'][-1]}); send one JSON object",
            )
        fields = [{"field": ".".join(str(p) for p in item["loc"]), "message": item["msg"]} for item in errors]
        named = ", ".join(f["field"] for f in fields)
        return problem_response(422, "Invalid request", f"check these fields: {named}", errors=fields)

    app.add_exception_handler(StarletteHTTPException, http_error_problem)  # type: ignore[arg-type]

    return app


async def http_error_problem(request: Request, error: StarletteHTTPException) -> JSONResponse:
    """Starlette's and FastAPI's own errors (no route, wrong method, ...) as problems saying what to do instead."""
    detail = str(error.detail)
    allowed = {name.lower(): value for name, value in (error.headers or {}).items()}.get("allow")
    if error.status_code == 404 and detail == _reason(404):
        detail = f"there is nothing at {request.url.path}; this API's operations are in its OpenAPI document"
    elif error.status_code == 405 and allowed:
        detail = f"{request.method} is not accepted at {request.url.path}; it accepts {allowed}"
    return problem_response(
        error.status_code, _reason(error.status_code), detail, dict(error.headers) if error.headers else None
    )


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
