"""`prep serve`: the whole platform on localhost, in one process (what `make run` starts after `prep db up`).

- Every HTTP function's ASGI app, the same apps the Lambdas wrap with Mangum, behind one uvicorn server that routes
  as the HTTP API does: a request goes, path unchanged, to the function owning its path prefix in serverless.yml.
- The evaluation worker consumes the in-process queue (functions/evaluation/queue.py) that the evaluation API picks
  when EVALUATION_QUEUE_URL is unset, as SQS and its Lambda trigger would.
- A local schedule calls the analytics job and the retry of pending account deletions at start and then every
  `--schedule-every`, as their cron rules would.
- Stripe is the local stand-in (prep/stripe_stand_in.py) unless STRIPE_SECRET_KEY names a test-mode account. Its
  hosted Checkout and billing-portal pages work in a browser, and it delivers its events, signed, to /stripe/webhook.
- Each function's OpenAPI docs (Swagger UI) at <prefix>/docs, with Swagger UI's assets served from here: offline too.

Ctrl-C stops the server, lets in-flight evaluations finish (for a bounded time), stops the schedule and closes the
database pool. The embedded database keeps running: tests or a psql session may be using it too, and its data is
what the next `make run` continues with; `make db-stop` stops it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import socket
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from importlib.resources import files
from typing import Any

import psycopg
import uvicorn
from fastapi import FastAPI
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.routing import APIRoute
from psycopg.conninfo import conninfo_to_dict
from rich.console import Console
from rich.table import Table
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Receive, Scope, Send

from functions.account import api as account_api
from functions.account.deletion import deleter_from
from functions.account.retry import run_retries
from functions.account.settings import AccountApiSettings, AccountRetrySettings
from functions.analytics.schedule import run_schedule
from functions.billing import api as billing_api
from functions.billing import webhook
from functions.billing.settings import BillingApiSettings, WebhookSettings
from functions.evaluation import api as evaluation_api
from functions.evaluation.queue import EvaluationQueue, InProcessQueue
from functions.evaluation.settings import EvaluationApiSettings
from functions.questions import api as questions_api
from functions.questions.settings import QuestionsSettings
from prep import local_auth
from prep.local_env import SECRETS_FILE, apply_local_defaults, unset
from prep.localdb import database_url
from prep.stripe_stand_in import StripeStandIn
from shared.config import AiSettings, AuthSettings, DatabaseSettings, load_settings
from shared.db.psycopg_transport import PsycopgDatabase
from shared.http import http_error_problem

log = logging.getLogger("prep.serve")

DEMO_EMAIL = "demo@example.test"
DEMO_TOKEN_SECONDS = 24 * 3600
STAND_IN_KEY = "sk_test_local_stand_in"
# How long Ctrl-C waits for evaluations already taken by the worker.
DRAIN_SECONDS = 10.0
# serverless.yml's httpApi.cors, so a web client served locally can call the local API as it calls the real one.
CORS: dict[str, Any] = {
    "allow_origins": ["http://localhost:3000", "http://127.0.0.1:3000"],
    "allow_headers": ["authorization", "content-type", "x-request-id"],
    "allow_methods": ["GET", "POST", "DELETE", "OPTIONS"],
    "expose_headers": ["x-request-id", "retry-after"],
    "max_age": 600,
}
# Swagger UI's assets, served by the platform itself so the docs pages work offline. Only the local platform serves
# docs: API Gateway routes only the functions' own paths to them, so the Lambda packages do without the assets.
DOCS_ASSETS = "/docs-assets"
SWAGGER_UI = files("fastapi_offline") / "static"
_INTERVAL = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


class ServeError(RuntimeError):
    """The platform cannot start; the message says why and what to do."""


def parse_interval(text: str) -> float:
    """Seconds in "60s", "5m", "1h", "500ms" or a bare number of seconds."""
    match = _INTERVAL.match(text)
    if not match or float(match.group(1)) <= 0:
        raise ValueError(f"{text!r} is not a positive interval such as 60s, 5m or 1h")
    return float(match.group(1)) * _UNIT_SECONDS[match.group(2) or "s"]


@dataclass(frozen=True)
class HttpFunction:
    """One HTTP Lambda: its name and the path prefix of its routes in serverless.yml, and its ASGI app."""

    name: str
    prefix: str
    app: FastAPI

    def owns(self, path: str) -> bool:
        return path == self.prefix or path.startswith(self.prefix + "/")

    @property
    def routes(self) -> list[str]:
        return [
            f"{method} {route.path}"
            for route in self.app.routes
            if isinstance(route, APIRoute)
            for method in sorted(route.methods)
        ]

    @property
    def docs_path(self) -> str:
        return f"{self.prefix}/docs"

    @property
    def openapi_path(self) -> str:
        return f"{self.prefix}/openapi.json"


class Gateway:
    """The HTTP API in miniature. A function's request reaches its app with the full path, as API Gateway hands it to
    the Lambda, so the apps' own routes are the production URLs. The rest (the index, each function's OpenAPI docs
    under its prefix, lifespan) goes to `local`."""

    def __init__(self, functions: list[HttpFunction], local: ASGIApp) -> None:
        self.functions = functions
        self.local = local
        self._local_paths = {path for f in functions for path in (f.docs_path, f.openapi_path)}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] not in self._local_paths:
            for function in self.functions:
                if function.owns(scope["path"]):
                    await function.app(scope, receive, send)
                    return
        await self.local(scope, receive, send)


# How the tick's line names a figure whose own name says little.
WORK_WORDS = {"changed": "analytics rows updated"}


class AnalyticsSchedule:
    """The analytics cron in miniature: run_schedule() at start, then every interval, on the process's database
    pool (a pool per run would leak its connections)."""

    def __init__(self, interval_seconds: float, database: PsycopgDatabase) -> None:
        self.interval_seconds = interval_seconds
        self.database = database

    async def run(self, stopping: asyncio.Event) -> None:
        """Run until `stopping` is set; a run under way when it is set finishes first."""
        while not stopping.is_set():
            await asyncio.to_thread(self.run_once)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stopping.wait(), self.interval_seconds)

    def run_once(self) -> None:
        """One tick: at most one short line, and none when there was nothing to do. Failed steps log their own
        errors (the steps' other lines, one per step in Lambda, are left out here: the logger is at WARNING)."""
        logging.getLogger("analytics.schedule").setLevel(logging.WARNING)
        started = time.perf_counter()
        try:
            report = run_schedule(database=self.database)
        except Exception:
            log.exception("analytics schedule failed")
            return
        done = report.work_done()
        try:
            settings = load_settings(AccountRetrySettings)
            outcomes = run_retries(deleter_from(settings, self.database), batch=settings.account_retry_batch)
        except Exception:
            log.exception("account deletion retry failed")
            outcomes = {}
        done |= {f"accounts_{outcome}": count for outcome, count in outcomes.items() if count}
        if done or report.failed:
            summary = ", ".join(f"{WORK_WORDS.get(figure, figure.replace('_', ' '))} {n}" for figure, n in done.items())
            failed = f"{len(report.failed)} step(s) failed; " if report.failed else ""
            log.info(
                f"schedule: {failed}{summary or 'nothing changed'} ({time.perf_counter() - started:.1f} s)",
            )


@dataclass
class LocalPlatform:
    """What one `prep serve` process runs, and how it starts and stops."""

    functions: list[HttpFunction]
    database: PsycopgDatabase
    evaluations: EvaluationQueue
    schedule: AnalyticsSchedule
    stand_in: StripeStandIn | None
    announce: Callable[[LocalPlatform], None]

    def asgi(self) -> ASGIApp:
        # A path no function owns is answered as the functions answer theirs: a problem, not Starlette's text/plain.
        local = Starlette(
            routes=self._local_routes(),
            lifespan=self._lifespan,
            exception_handlers={HTTPException: http_error_problem},  # type: ignore[dict-item]
        )
        return CORSMiddleware(Gateway(self.functions, local), **CORS)

    def describe(self) -> dict[str, Any]:
        """What the index (GET /) says about the running platform; `prep demo` reads it."""
        ai = load_settings(AiSettings)
        return {
            "functions": [
                {"name": f.name, "routes": f.routes, "docs": f.docs_path, "openapi": f.openapi_path}
                for f in self.functions
            ],
            "evaluation_queue": "in-process" if isinstance(self.evaluations, InProcessQueue) else "sqs",
            "stripe": "stand-in" if self.stand_in else "stripe test mode",
            "ai": {
                "enabled": ai.enabled,
                "model": ai.ai_model if ai.enabled else None,
                "base_url": str(ai.openai_base_url) if ai.enabled and ai.openai_base_url else None,
            },
            "analytics_schedule_seconds": self.schedule.interval_seconds,
        }

    def _local_routes(self) -> list[BaseRoute]:
        async def index(_: Request) -> JSONResponse:
            return JSONResponse(self.describe())

        routes: list[BaseRoute] = [
            Route("/", index),
            Mount(DOCS_ASSETS, StaticFiles(directory=str(SWAGGER_UI)), name="docs-assets"),
        ]
        for function in self.functions:
            routes += [
                Route(function.openapi_path, _openapi_endpoint(function)),
                Route(function.docs_path, _docs_endpoint(function)),
            ]
        return routes

    @contextlib.asynccontextmanager
    async def _lifespan(self, _: Starlette) -> AsyncIterator[None]:
        stopping = asyncio.Event()
        schedule = asyncio.create_task(self.schedule.run(stopping), name="analytics-schedule")
        self.announce(self)
        try:
            yield
        finally:
            log.info("stopping: the analytics schedule, the evaluation worker, then the database pool")
            stopping.set()
            await schedule
            await asyncio.to_thread(self.stop)

    def stop(self) -> None:
        if isinstance(self.evaluations, InProcessQueue):
            if self.evaluations.drain(timeout=DRAIN_SECONDS):
                self.evaluations.close()
            else:  # the worker thread dies with the process; asking again re-queues an answer stuck 'queued'
                log.warning("evaluations still in progress at shutdown were left unfinished")
        self.database.close()
        if self.stand_in:
            self.stand_in.stop()


def _openapi_endpoint(function: HttpFunction) -> Callable[[Request], Any]:
    async def openapi(_: Request) -> JSONResponse:
        return JSONResponse(function.app.openapi())

    return openapi


def _docs_endpoint(function: HttpFunction) -> Callable[[Request], Any]:
    async def docs(_: Request) -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=function.openapi_path,
            title=f"{function.app.title} (local)",
            swagger_js_url=f"{DOCS_ASSETS}/swagger-ui-bundle.js",
            swagger_css_url=f"{DOCS_ASSETS}/swagger-ui.css",
            swagger_favicon_url=f"{DOCS_ASSETS}/favicon.png",
        )

    return docs


def build_functions(database: PsycopgDatabase, evaluations: EvaluationQueue) -> list[HttpFunction]:
    """Each HTTP function's app, with its settings read from the environment as its Lambda handler reads them."""
    return [
        HttpFunction("stripeWebhook", "/stripe", webhook.build_app(load_settings(WebhookSettings), database=database)),
        HttpFunction(
            "billingApi", "/billing", billing_api.build_app(load_settings(BillingApiSettings), database=database)
        ),
        HttpFunction(
            "questionsApi", "/questions", questions_api.build_app(load_settings(QuestionsSettings), database=database)
        ),
        HttpFunction(
            "evaluationApi",
            "/responses",
            evaluation_api.build_app(load_settings(EvaluationApiSettings), database=database, queue=evaluations),
        ),
        HttpFunction(
            "accountApi", "/account", account_api.build_app(load_settings(AccountApiSettings), database=database)
        ),
    ]


def listen(host: str, port: int) -> socket.socket:
    """The listening socket, bound before anything starts so a taken port fails fast (port 0: any free port)."""
    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
        return socket.create_server((host, port), family=family)
    except OSError as error:
        raise ServeError(f"cannot listen on {host}:{port} ({error.strerror}); choose another with --port") from error


class WallClockStandIn(StripeStandIn):
    """The stand-in on a clock never behind the wall clock: a platform left running for days still stamps its
    checkouts, subscriptions and events with the time they happen, as Stripe would."""

    @property
    def now(self) -> int:
        return max(self._clock, int(time.time()))

    @now.setter
    def now(self, value: int) -> None:
        self._clock = value


def start_stripe() -> StripeStandIn | None:
    """The local Stripe stand-in, unless STRIPE_SECRET_KEY is set, in which case it must be a test-mode key."""
    if not unset("STRIPE_SECRET_KEY"):
        if not os.environ["STRIPE_SECRET_KEY"].startswith(("sk_test_", "rk_test_")):
            raise ServeError("a local run talks to Stripe in test mode only: STRIPE_SECRET_KEY must be a test key")
        return None
    stand_in = WallClockStandIn()
    os.environ.update({"STRIPE_SECRET_KEY": STAND_IN_KEY, "STRIPE_API_BASE": stand_in.start()})
    return stand_in


def demo_user_token(url: str) -> tuple[str, str]:
    """The demo user's id (signed up on first use) and an access token for them."""
    try:
        with psycopg.connect(url, autocommit=True, connect_timeout=10) as conn:
            user_id = local_auth.find_or_sign_up(conn, DEMO_EMAIL)
    except psycopg.errors.UndefinedTable as error:
        raise ServeError("the database has no schema yet: run `prep db up` first (make run does)") from error
    except psycopg.OperationalError as error:
        raise ServeError(f"cannot reach the database: {str(error).strip()}") from error
    auth = load_settings(AuthSettings)
    claims = local_auth.user_claims(auth, user_id, DEMO_EMAIL, valid_seconds=DEMO_TOKEN_SECONDS)
    return str(user_id), local_auth.sign(auth, claims)


def serve(*, host: str, port: int, schedule_every: float, console: Console) -> None:
    """Run the platform until Ctrl-C (or SIGTERM)."""
    listener = listen(host, port)
    base_url = f"http://{host}:{listener.getsockname()[1]}"
    url = database_url()
    defaulted = apply_local_defaults(url)
    stand_in = start_stripe()
    if stand_in:  # the endpoint registered with "Stripe": what the hosted pages cause reaches the webhook, signed
        stand_in.deliver_events_to(f"{base_url}/stripe/webhook", os.environ["STRIPE_WEBHOOK_SECRET"])
    demo_id, demo_token = demo_user_token(url)
    database = PsycopgDatabase(load_settings(DatabaseSettings))
    evaluations = evaluation_api.queue_for(load_settings(EvaluationApiSettings), database)
    functions = build_functions(database, evaluations)

    def announce(platform: LocalPlatform) -> None:
        print_banner(
            console,
            platform,
            base_url=base_url,
            database=url,
            demo_user=demo_id,
            demo_token=demo_token,
            secrets_defaulted=[name for name in ("SUPABASE_JWT_SECRET", "STRIPE_WEBHOOK_SECRET") if name in defaulted],
        )

    platform = LocalPlatform(
        functions, database, evaluations, AnalyticsSchedule(schedule_every, database), stand_in, announce
    )
    # uvicorn's logging left as the Stripe stand-in's server (which shares its loggers) set it: warnings and errors
    # only. The functions log each request, and the banner and the lines below say when it starts and stops.
    config = uvicorn.Config(
        platform.asgi(),
        log_config=None,
        log_level="warning",
        access_log=False,
        lifespan="on",
        timeout_graceful_shutdown=int(DRAIN_SECONDS),
    )
    server = uvicorn.Server(config)
    with contextlib.suppress(KeyboardInterrupt):  # uvicorn re-raises the Ctrl-C it has already handled
        server.run(sockets=[listener])
    if not server.started:
        raise ServeError("the platform did not start; see the log above")
    console.print("Stopped. The database keeps running with its data; `make db-stop` stops it.")


def print_banner(
    console: Console,
    platform: LocalPlatform,
    *,
    base_url: str,
    database: str,
    demo_user: str,
    demo_token: str,
    secrets_defaulted: list[str],
) -> None:
    about = platform.describe()
    table = Table(box=None, show_header=False, pad_edge=False)
    table.add_column(style="bold")
    table.add_column()
    for function in platform.functions:
        routes = ", ".join(f"{r.split()[0]} {base_url}{r.split()[1]}" for r in function.routes)
        table.add_row(function.name, f"{routes}\n[dim]docs {base_url}{function.docs_path}[/dim]")
    db = conninfo_to_dict(database)
    table.add_row("database", f"postgresql://{db.get('user')}@{db.get('host')}:{db.get('port')}/{db.get('dbname')}")
    evaluation = "in-process worker" if about["evaluation_queue"] == "in-process" else "SQS (EVALUATION_QUEUE_URL)"
    table.add_row("evaluation", evaluation)
    table.add_row(
        "analytics",
        f"functions.analytics.schedule.run_schedule() every {platform.schedule.interval_seconds:g}s",
    )
    ai = about["ai"]
    table.add_row(
        "AI",
        f"{ai['model']} at {ai['base_url'] or 'api.openai.com'}"
        if ai["enabled"]
        else "[yellow]off[/yellow]: questions come from the bank only; evaluations fail without a score",
    )
    table.add_row(
        "Stripe",
        f"local stand-in at {os.environ['STRIPE_API_BASE']}"
        if platform.stand_in
        else "test mode (STRIPE_SECRET_KEY); the webhook reads subscriptions back from that account",
    )
    console.print(f"\n[bold green]Local platform ready[/bold green] at {base_url} (index: {base_url}/)\n")
    console.print(table)
    console.print(f"\nAccess token for the demo user {DEMO_EMAIL} ({demo_user}), valid 24 h:", highlight=False)
    console.print(demo_token, soft_wrap=True, highlight=False)
    console.print(
        f"  curl -X POST {base_url}/questions -H 'authorization: Bearer <token>' -H 'content-type: application/json'"
        ' -d \'{"category":"behavioral","difficulty":"easy","experience_level":"entry","count":3}\'\n',
        soft_wrap=True,
        highlight=False,
    )
    secrets = [
        f"{name} from {SECRETS_FILE if name in secrets_defaulted else 'the environment'}"
        for name in ("SUPABASE_JWT_SECRET", "STRIPE_WEBHOOK_SECRET")
    ]
    console.print(
        f"Secrets: {'; '.join(secrets)}.\n"
        "Real Stripe (test mode): run `stripe listen --forward-to "
        f"{base_url}/stripe/webhook`, then restart with STRIPE_WEBHOOK_SECRET=<the whsec_ it prints> and "
        "STRIPE_SECRET_KEY=<that account's sk_test_ key>; public.plans.stripe_price_id must name that account's "
        "prices.\n"
        "AI: set OPENAI_API_KEY (any OpenAI-compatible server: also OPENAI_BASE_URL, e.g. http://127.0.0.1:11434/v1, "
        "and AI_MODEL) and restart.\n"
        "Try `.venv/bin/prep demo` for a scripted journey. Ctrl-C stops the platform.\n",
        soft_wrap=True,
        highlight=False,
    )
