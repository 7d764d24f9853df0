"""`prep demo`: one new user's journey through the running local platform, over HTTP and SQL exactly as clients do.

The clients played here, and how each reaches the platform:
- Supabase Auth signs the user up (a row in auth.users, over SQL as the auth server writes it) and signs their
  access token with the project's JWT secret;
- the user's app calls the functions over HTTP with that token, and reads and writes tables over SQL as PostgREST
  runs a request: the `authenticated` role and the token's claims in request.jwt.claims, for one transaction;
- Stripe: the customer pays on the hosted Checkout page (its form, as a browser submits it), and Stripe (the local
  stand-in `prep serve` runs) delivers the resulting events to the webhook, signed with the endpoint's secret;
- the analytics cron aggregates the day, as the service.
Nothing the platform does itself (serving, grading, applying events) runs in this process.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any
from urllib.parse import urlparse

import httpx
import psycopg
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb
from rich.console import Console
from rich.table import Table

from functions.analytics.schedule import run_schedule
from prep import local_auth
from prep.local_env import apply_local_defaults
from prep.tables import rows_display
from shared.config import AuthSettings, DatabaseSettings, load_settings
from shared.db import SERVICE_CLAIMS
from shared.db.psycopg_transport import PsycopgDatabase
from shared.db.rls import acting_as

ANSWER = (
    "In my last role our release process broke every other week. I owned it, so I added a canary stage and an "
    "automated rollback, and I walked the team through both. Failed releases dropped from six a month to one, and "
    "I learned to measure a problem before trying to fix it."
)
FINAL = ("completed", "failed")


class DemoError(RuntimeError):
    """A step of the journey did not do what a client expects; the message says which and what the platform said."""


@dataclass
class Journey:
    api: httpx.Client
    conn: psycopg.Connection[dict[str, Any]]
    auth: AuthSettings
    console: Console
    ai_enabled: bool
    steps_without_ai: list[str] = field(default_factory=list)
    claims: dict[str, Any] = field(default_factory=dict)
    token: str = ""

    # -- the clients ------------------------------------------------------------------------------------------------

    def call(self, method: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        """The user's app calling a function with their access token."""
        response = self.api.request(method, path, json=body, headers={"authorization": f"Bearer {self.token}"})
        if response.is_error:
            raise DemoError(f"{method} {path} answered {response.status_code}: {_problem(response)}")
        return response.json()

    @contextmanager
    def as_user(self) -> Iterator[psycopg.Connection[dict[str, Any]]]:
        """SQL as PostgREST runs the user's request: their role and claims, for one transaction."""
        with acting_as(self.conn, self.claims) as conn:
            yield conn

    def done(self, title: str, detail: str = "") -> None:
        self.console.print(f"[green]✓[/green] [bold]{title}[/bold] {detail}", highlight=False)

    def failed(self, title: str, detail: str = "") -> None:
        """A step the platform answered but that did not succeed (e.g. evaluations without AI): said so, not ✓."""
        self.console.print(f"[red]✗[/red] [bold]{title}[/bold] {detail}", highlight=False)

    # -- the journey ------------------------------------------------------------------------------------------------

    def sign_up(self, email: str) -> None:
        user_id = local_auth.sign_up(self.conn, email)  # as the auth server, over its own connection
        self.claims = local_auth.user_claims(self.auth, user_id, email)
        self.token = local_auth.sign(self.auth, self.claims)
        self.done("signed up", f"{email} ({user_id}) through the auth stand-in; access token signed")

    def subscribe(self, plan: str = "monthly") -> None:
        page = self.call("POST", "/billing/checkout", {"plan": plan})
        if urlparse(page["url"]).hostname not in ("127.0.0.1", "localhost"):
            self.done("subscribe skipped", f"checkout is on Stripe itself: pay at {page['url']} in a browser")
            return
        # The customer's browser: the hosted Checkout page, then its button. The local Stripe then delivers the
        # resulting events to the webhook, signed, as Stripe does; the subscription appears once they are applied.
        shown = httpx.get(page["url"], timeout=30)
        if shown.is_error:
            raise DemoError(f"the checkout page {page['url']} answered {shown.status_code}")
        paid = httpx.post(page["url"], data={"card": "4242 4242 4242 4242"}, timeout=30)
        if paid.status_code != 303:
            raise DemoError(f"paying checkout {page['id']} answered {paid.status_code}: {paid.text[:300]}")
        subscription = None
        deadline = time.monotonic() + 30
        while subscription is None and time.monotonic() < deadline:
            with self.as_user() as conn:
                subscription = conn.execute(
                    "select p.code as plan, s.status::text, s.trial_end from public.subscriptions s"
                    " join public.plans p on p.id = s.plan_id order by s.created_at desc limit 1"
                ).fetchone()
            if subscription is None:
                time.sleep(0.2)
        if subscription is None:
            raise DemoError("checkout completed, but no subscription appeared within 30 s (see prep serve's log)")
        until = f" until {subscription['trial_end']:%Y-%m-%d}" if subscription["trial_end"] else ""
        self.done(
            "subscribed",
            f"{subscription['plan']}, {subscription['status']}{until}: paid on the local Checkout page, whose events "
            "the Stripe stand-in delivered, signed, to the webhook",
        )

    def start_session(self) -> dict[str, Any]:
        config = {"category": "behavioral", "difficulty": "easy", "experience_level": "entry", "count": 2}
        with self.as_user() as conn:
            session: dict[str, Any] = conn.execute(
                "select to_jsonb(public.start_session('quick', %s)) as session", (Jsonb(config),)
            ).fetchone()["session"]
        self.done("session started", f"{session['session_id']} with {len(session['questions'])} questions (SQL rpc)")
        return session

    def fetch_questions(self, session_id: str) -> None:
        request = {"category": "technical", "difficulty": "easy", "experience_level": "entry", "count": 1}
        served = self.call("POST", "/questions", {**request, "session_id": session_id})
        if not served["generated"]:
            self.steps_without_ai.append(f"questions: from the curated bank ({served['generation']['detail']})")
        self.done(
            "questions fetched",
            f"POST /questions: {served['from_bank']} from the bank, {served['generated']} generated "
            f"({served['generation']['status']})",
        )

    def answer(self, session_id: str) -> list[str]:
        """Every question the session was served, answered."""
        with self.as_user() as conn:
            rows = conn.execute(
                "insert into public.responses (session_id, session_question_id, answer_text, time_taken_seconds)"
                " select sq.session_id, sq.id, %s, 95 from public.session_questions sq where sq.session_id = %s"
                " order by sq.position returning id",
                (ANSWER, session_id),
            ).fetchall()
        self.done("answered", f"{len(rows)} questions (SQL insert into public.responses)")
        return [str(row["id"]) for row in rows]

    def evaluate(self, response_ids: list[str], timeout: float) -> None:
        for response_id in response_ids:
            self.call("POST", f"/responses/{response_id}/evaluate")
        deadline = time.monotonic() + timeout
        while True:
            with self.as_user() as conn:
                rows = conn.execute(
                    "select id, evaluation_status::text as status, ai_score, evaluation_error from public.responses"
                    " where id = any(%s) order by created_at",
                    ([uuid.UUID(r) for r in response_ids],),
                ).fetchall()
            if all(row["status"] in FINAL for row in rows):
                break
            if time.monotonic() > deadline:
                pending = sorted({row["status"] for row in rows} - set(FINAL))
                raise DemoError(f"evaluations still {', '.join(pending)} after {timeout:g}s: is the worker running?")
            time.sleep(0.2)
        if not self.ai_enabled:
            self.steps_without_ai.append(
                "evaluation: no AI is configured, so the worker marked the answers failed (and refunded them)"
            )
        scores = [str(row["ai_score"]) for row in rows if row["status"] == "completed"]
        failures = [row for row in rows if row["status"] == "failed"]
        how = "POST /responses/{id}/evaluate, in-process worker"
        if scores:
            self.done(f"evaluated {len(scores)} of {len(rows)}", f"{how}: scores {', '.join(scores)}")
        if failures:
            self.failed(f"evaluation failed for {len(failures)} of {len(rows)}", f"{how}:")
            for row in failures:
                self.console.print(f"    {row['id']}: {row['evaluation_error']}", highlight=False)

    def end_session(self, session_id: str) -> None:
        with self.as_user() as conn:
            ended = conn.execute(
                "select to_jsonb(public.end_session(%s, 'completed')) as summary", (session_id,)
            ).fetchone()
        score = ended["summary"]["overall_score"]
        self.done("session completed", f"overall score {score}" if score is not None else "no score: nothing evaluated")

    def show_dashboard(self, day: date) -> None:
        with self.as_user() as conn:
            sessions = conn.execute(
                "select session_type::text as type, status::text, question_count as questions,"
                " answered_count as answered, evaluated_count as evaluated, overall_score as score"
                " from public.session_summaries order by started_at"
            ).fetchall()
            progress = conn.execute(
                "select t.questions_answered as answered, t.sessions_completed as sessions, t.average_score,"
                " s.current_streak as streak, s.longest_streak,"
                " (select string_agg(w.category::text, ', ' order by w.rank)"
                "  from public.weakest_categories w) as weakest_categories"
                " from public.progress_totals t join public.user_streaks s on s.user_id = t.user_id"
            ).fetchall()
            achievements = conn.execute(
                "select achievement_type, awarded_at from public.achievements order by awarded_at"
            ).fetchall()
        with acting_as(self.conn, SERVICE_CLAIMS) as conn:  # platform metrics are the operator's, not the user's
            metrics = conn.execute(
                "select metric_name as metric, metric_value as value from public.analytics_daily"
                " where metric_date = %s order by metric_name",
                (day,),
            ).fetchall()
        self.console.print()
        self.console.print(_table("Your sessions", sessions, self.console.width))
        self.console.print(_table("Your progress", progress, self.console.width))
        self.console.print(_table("Your achievements", achievements, self.console.width))
        self.console.print(_table(f"Platform metrics for {day} (UTC)", metrics, self.console.width))


def aggregate(database_url: str) -> str:
    """The analytics cron's run, as the service: platform metrics, each user's progress and achievements, the
    question stats rollup, housekeeping. Says what ran."""
    database = PsycopgDatabase(DatabaseSettings(database_url=database_url))
    try:
        report = run_schedule(database=database)
        failed = [f"{step.step}: {step.error}" for step in report.steps if step.error]
        if failed:
            raise DemoError(f"analytics steps failed: {'; '.join(failed)}")
        return f"run_schedule(): {', '.join(dict.fromkeys(step.step for step in report.steps))}"
    finally:
        database.close()


def describe_platform(api_url: str) -> dict[str, Any]:
    """The running platform's own description (GET /): which functions it serves, whether AI is on."""
    try:
        response = httpx.get(f"{api_url}/", timeout=10)
    except httpx.HTTPError as error:
        raise DemoError(f"no platform answers at {api_url} ({error}): start it with `make run`") from error
    if response.is_error:
        raise DemoError(f"{api_url}/ answered {response.status_code}: is this the local platform (`make run`)?")
    return response.json()


def run_demo(*, api_url: str, database_url: str, email: str, timeout: float, console: Console) -> None:
    platform = describe_platform(api_url)
    apply_local_defaults(database_url)  # the same secrets and issuer the platform runs with
    auth = load_settings(AuthSettings)
    day = datetime.now(UTC).date()
    console.print(f"[bold]Demo journey[/bold] against {api_url}\n")
    with (
        psycopg.connect(database_url, autocommit=True, row_factory=dict_row) as conn,
        httpx.Client(base_url=api_url, timeout=30) as api,
    ):
        journey = Journey(api, conn, auth, console, ai_enabled=platform["ai"]["enabled"])
        journey.sign_up(email)
        journey.subscribe()
        session = journey.start_session()
        journey.fetch_questions(session["session_id"])
        answers = journey.answer(session["session_id"])
        journey.evaluate(answers, timeout)
        journey.end_session(session["session_id"])
        journey.done("aggregated", f"as the analytics cron: {aggregate(database_url)}")
        journey.show_dashboard(day)
    if journey.steps_without_ai:
        console.print("\n[yellow]Steps that used no AI[/yellow] (set OPENAI_API_KEY on the platform to change that):")
        for step in journey.steps_without_ai:
            console.print(f"  - {step}", highlight=False)
    console.print("\n[bold green]Demo complete.[/bold green]")


def _problem(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text[:300]
    return str(body.get("detail") or body) if isinstance(body, dict) else str(body)


def _table(title: str, rows: list[dict[str, Any]], width: int) -> Table | str:
    if not rows:
        return f"[bold]{title}[/bold]: none yet\n"
    return rows_display(list(rows[0]), [list(row.values()) for row in rows], width, title=title)
