"""`make run` and `prep demo` for real: `prep serve` as a subprocess on a free port against this module's scratch
database, `prep demo` as a subprocess against it, and the database checked afterwards. Without AI, and with the fake
OpenAI served as an OpenAI-compatible server."""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import stat
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
import uvicorn
from psycopg.rows import dict_row
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from prep import local_auth
from prep.local_env import LOCAL_AUTH_ISSUER, dev_secrets, local_defaults
from prep.serve import parse_interval
from shared.config import AuthSettings
from tests.evaluation.graders import feature_grader
from tests.support.fake_openai import FakeOpenAI

pytestmark = pytest.mark.timeout(120)

PREP = Path(sys.executable).with_name("prep")
CHROMIUM = shutil.which("chromium") or shutil.which(
    "chromium-browser"
)  # the venv's console script, which `make run` calls
# serverless.yml's HTTP routes and the function serving each.
ROUTES = {
    "POST /stripe/webhook": "stripeWebhook",
    "POST /billing/checkout": "billingApi",
    "POST /billing/portal": "billingApi",
    "POST /questions": "questionsApi",
    "POST /responses/{response_id}/evaluate": "evaluationApi",
    "DELETE /account": "accountApi",
    "GET /account/export": "accountApi",
}
# Settings a developer's shell may hold that would point the stack elsewhere than this test's stand-ins.
FOREIGN_SETTINGS = (
    "OPENAI_API_KEY",
    "OPENAI_BASE_URL",
    "STRIPE_SECRET_KEY",
    "STRIPE_API_BASE",
    "EVALUATION_QUEUE_URL",
    "SUPABASE_URL",
    "SUPABASE_SERVICE_ROLE_KEY",
    "SUPABASE_JWT_ISSUER",
    "PREP_API_PORT",
)


@dataclass
class Platform:
    url: str
    env: dict[str, str]
    process: subprocess.Popen[bytes]
    log: Path

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def demo(self, email: str) -> str:
        """`prep demo` against this platform, as a user would run it; its output."""
        finished = subprocess.run(
            [str(PREP), "demo", "--api-url", self.url, "--email", email, "--timeout", "30"],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert finished.returncode == 0, f"{finished.stdout}\n{finished.stderr}\n--- prep serve ---\n{self.output()}"
        assert "Demo complete." in finished.stdout
        return finished.stdout


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_until_ready(platform: Platform, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if platform.process.poll() is not None:
            pytest.fail(f"prep serve exited with {platform.process.returncode}:\n{platform.output()}")
        try:
            if httpx.get(f"{platform.url}/", timeout=5).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    pytest.fail(f"prep serve was not ready after {seconds:g}s:\n{platform.output()}")


@contextmanager
def running_platform(database_url: str, workdir: Path, **settings: str) -> Iterator[Platform]:
    """`prep serve` on a free port against `database_url`, with `settings` on top of a clean environment."""
    env = {name: value for name, value in os.environ.items() if name not in FOREIGN_SETTINGS}
    env |= {
        "DATABASE_URL": database_url,
        # Secrets of this test's own, so the repository's .local/ is neither read nor written.
        "SUPABASE_JWT_SECRET": f"e2e-{uuid.uuid4().hex}{uuid.uuid4().hex}",
        "STRIPE_WEBHOOK_SECRET": f"whsec_e2e{uuid.uuid4().hex}",
        "LOCAL_STORAGE_DIR": str(workdir / "storage"),
        **settings,
    }
    port = free_port()
    log = workdir / "serve.log"
    with log.open("wb") as output:
        process = subprocess.Popen(
            [str(PREP), "serve", "--port", str(port), "--schedule-every", "2s"],
            env=env,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group, killed whole if the test fails
        )
    running = Platform(f"http://127.0.0.1:{port}", env, process, log)
    try:
        wait_until_ready(running)
        yield running
    finally:
        if process.poll() is None:  # Ctrl-C, and if that does not stop it, kill its whole process group
            process.send_signal(signal.SIGINT)
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=10)


@contextmanager
def openai_compatible_server(fake: FakeOpenAI) -> Iterator[str]:
    """The fake OpenAI served over HTTP on a free port, for another process to use as OPENAI_BASE_URL."""

    async def forward(request: Request) -> Response:
        answer = fake.handle_request(
            httpx.Request(request.method, str(request.url), headers=request.headers.raw, content=await request.body())
        )
        return Response(answer.read(), status_code=answer.status_code, headers=dict(answer.headers))

    listener = socket.create_server(("127.0.0.1", 0))
    app = Starlette(routes=[Route("/{path:path}", forward, methods=["POST"])])
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [listener]}, daemon=True)
    thread.start()
    try:
        while not server.started:
            assert thread.is_alive(), "the fake OpenAI server did not start"
            time.sleep(0.01)
        yield f"http://127.0.0.1:{listener.getsockname()[1]}/v1"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        listener.close()


def journey_of(database_url: str, email: str) -> dict[str, Any]:
    """What the database holds of the demo user's journey, and today's platform metrics."""
    with psycopg.connect(database_url, row_factory=dict_row) as conn:
        user = conn.execute("select id from public.users where email = %s", (email,)).fetchone()
        assert user is not None, f"no user {email}"
        return {
            "subscriptions": conn.execute(
                "select s.status::text, p.code as plan from public.subscriptions s"
                " join public.plans p on p.id = s.plan_id where s.user_id = %s",
                (user["id"],),
            ).fetchall(),
            "sessions": conn.execute(
                "select status::text, answered_count from public.session_summaries where user_id = %s",
                (user["id"],),
            ).fetchall(),
            "responses": conn.execute(
                "select evaluation_status::text as status, ai_score, evaluation_error from public.responses"
                " where user_id = %s",
                (user["id"],),
            ).fetchall(),
            "metrics": {
                row["metric_name"]: row["metric_value"]
                for row in conn.execute(
                    "select metric_name, metric_value from public.analytics_daily"
                    " where metric_date = (now() at time zone 'utc')::date"
                )
            },
        }


def test_make_run_serves_the_platform_and_the_demo_journey_completes_without_ai(
    database_url: str, tmp_path: Path
) -> None:
    with running_platform(database_url, tmp_path) as platform:
        index = httpx.get(f"{platform.url}/").json()
        assert {route: f["name"] for f in index["functions"] for route in f["routes"]} == ROUTES
        assert (index["evaluation_queue"], index["stripe"], index["ai"]["enabled"]) == ("in-process", "stand-in", False)
        for function in index["functions"]:
            assert httpx.get(f"{platform.url}{function['docs']}").status_code == 200
            paths = httpx.get(f"{platform.url}{function['openapi']}").json()["paths"]
            documented = {f"{method.upper()} {path}" for path, operations in paths.items() for method in operations}
            assert documented == {r for r, name in ROUTES.items() if name == function["name"]}
        # Paths no function owns are answered as the functions answer: problems saying what to do.
        for method, path, status in (("GET", "/nowhere", 404), ("POST", "/", 405)):
            refused = httpx.request(method, f"{platform.url}{path}")
            assert (refused.status_code, refused.headers["content-type"]) == (status, "application/problem+json")
            assert path in refused.json()["detail"]

        email = f"e2e-{uuid.uuid4().hex[:8]}@example.test"
        output = platform.demo(email)
        assert "Steps that used no AI" in output
        assert "evaluation: no AI is configured" in output
        # Failed evaluations are shown failed, each with its reason; no table cuts a value short.
        assert "✗ evaluation failed for 3 of 3" in output
        assert "✓ evaluated" not in output
        assert "…" not in output

        platform.process.send_signal(signal.SIGINT)  # Ctrl-C
        assert platform.process.wait(timeout=20) == 0, platform.output()
        log = platform.output()
        assert "Stopped." in log
        # Readable text, and the schedule's first tick (today's figures are new) in one short line.
        assert not [line for line in log.splitlines() if line.startswith("{")]
        assert "INFO    prep.serve: schedule: analytics rows updated " in log
        assert "analytics step" not in log

    journey = journey_of(database_url, email)
    assert journey["subscriptions"] == [{"status": "trialing", "plan": "monthly"}]
    assert journey["sessions"] == [{"status": "completed", "answered_count": 3}]
    # The worker took every answer and, with no AI to grade it, failed it saying why (and refunded it).
    assert [r["status"] for r in journey["responses"]] == ["failed"] * 3
    assert all(r["evaluation_error"] for r in journey["responses"])
    metrics = journey["metrics"]
    assert metrics["signups"] >= 1
    assert metrics["responses"] >= 3
    assert metrics["trials.started"] >= 1
    with psycopg.connect(database_url) as conn:
        left = conn.execute(
            "select count(*) from pg_stat_activity where datname = current_database()"
            " and backend_type = 'client backend' and pid <> pg_backend_pid()"
        ).fetchone()
    assert left == (0,), "the platform left database connections open"


def test_with_an_openai_compatible_server_the_demo_answers_are_scored(database_url: str, tmp_path: Path) -> None:
    fake = FakeOpenAI()
    fake.chat.always(feature_grader())
    email = f"e2e-{uuid.uuid4().hex[:8]}@example.test"
    with (
        openai_compatible_server(fake) as base_url,
        running_platform(database_url, tmp_path, OPENAI_API_KEY="sk-e2e", OPENAI_BASE_URL=base_url) as platform,
    ):
        assert httpx.get(f"{platform.url}/").json()["ai"] == {
            "enabled": True,
            "model": "gpt-4o-mini",
            "base_url": base_url,
        }
        output = platform.demo(email)
        assert "evaluation: no AI" not in output

    journey = journey_of(database_url, email)
    assert [r["status"] for r in journey["responses"]] == ["completed"] * 3
    assert all(0 <= r["ai_score"] <= 100 for r in journey["responses"])
    assert fake.chat.calls == 3
    assert journey["metrics"]["evaluations"] >= 3


def test_intervals_read_as_a_person_writes_them() -> None:
    assert [parse_interval(text) for text in ("60s", "5m", "1h", "500ms", "90", "1.5m")] == [60, 300, 3600, 0.5, 90, 90]
    for wrong in ("0s", "-5s", "soon", "5d", ""):
        with pytest.raises(ValueError, match="positive interval"):
            parse_interval(wrong)


def test_local_secrets_are_generated_once_kept_private_and_overridden_by_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("SUPABASE_JWT_SECRET", "STRIPE_WEBHOOK_SECRET", "SUPABASE_JWT_ISSUER", "SUPABASE_URL"):
        monkeypatch.delenv(name, raising=False)
    path = tmp_path / ".local" / "dev-secrets.json"
    first = local_defaults("postgresql://db.test/app", secrets_file=path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert len(first["SUPABASE_JWT_SECRET"]) >= 32
    assert first["STRIPE_WEBHOOK_SECRET"].startswith("whsec_")
    assert first["SUPABASE_JWT_ISSUER"] == "http://127.0.0.1:54321/auth/v1"
    assert local_defaults("postgresql://db.test/app", secrets_file=path) == first  # a restart keeps tokens valid
    assert dev_secrets(path).supabase_jwt_secret.get_secret_value() == first["SUPABASE_JWT_SECRET"]

    monkeypatch.setenv("STRIPE_WEBHOOK_SECRET", "whsec_from_stripe_listen")
    monkeypatch.setenv("DATABASE_URL", "postgresql://elsewhere.test/app")
    overridden = local_defaults("postgresql://db.test/app", secrets_file=path)
    assert "STRIPE_WEBHOOK_SECRET" not in overridden
    assert "DATABASE_URL" not in overridden
    assert overridden["SUPABASE_JWT_SECRET"] == first["SUPABASE_JWT_SECRET"]


def _rendered_operations(url: str, origin: str) -> set[str]:
    """The paths Swagger UI lists once Chromium has rendered the docs page at `url`; every request it made must have
    gone to `origin`."""
    from playwright.sync_api import sync_playwright

    requested: list[str] = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update"],
        )
        try:
            page = browser.new_page()
            page.on("request", lambda request: requested.append(request.url))
            page.goto(url)
            page.wait_for_selector(".opblock-summary-path", timeout=20_000)
            paths = set(page.locator(".opblock-summary-path").all_inner_texts())
        finally:
            browser.close()
    assert [r for r in requested if not r.startswith(origin) and not r.startswith("data:")] == []
    return {path.strip().replace("\u200b", "") for path in paths}


def _wait_for(read: Callable[[], Any], seconds: float = 20) -> Any:
    """`read()` once it returns something truthy (the webhook applies Stripe's deliveries in the background)."""
    deadline = time.monotonic() + seconds
    while not (value := read()) and time.monotonic() < deadline:
        time.sleep(0.2)
    return value


def test_a_developer_reads_the_docs_offline_and_clicks_through_checkout_and_the_portal(
    database_url: str, tmp_path: Path
) -> None:
    with running_platform(database_url, tmp_path) as platform:
        # Swagger UI: every script, stylesheet and icon the page names is served by the platform itself.
        docs = httpx.get(f"{platform.url}/billing/docs")
        assets = re.findall(r"""(?:src|href)=["']([^"']+)["']""", docs.text)
        assert {asset.rsplit("/", 1)[-1] for asset in assets} >= {"swagger-ui-bundle.js", "swagger-ui.css"}
        for asset in assets:
            assert asset.startswith("/"), f"{asset} is not served by the platform"
            assert httpx.get(f"{platform.url}{asset}").status_code == 200, asset
        assert "https://" not in docs.text
        if CHROMIUM:  # and a browser renders it, asking nothing of anywhere else
            assert _rendered_operations(f"{platform.url}/billing/docs", platform.url) >= {
                "/billing/checkout",
                "/billing/portal",
            }

        auth = AuthSettings(
            supabase_jwt_secret=platform.env["SUPABASE_JWT_SECRET"], supabase_jwt_issuer=LOCAL_AUTH_ISSUER
        )
        email = f"e2e-{uuid.uuid4().hex[:8]}@example.test"
        with psycopg.connect(database_url, autocommit=True, row_factory=dict_row) as conn:
            user_id = local_auth.sign_up(conn, email)
            token = local_auth.sign(auth, local_auth.user_claims(auth, user_id, email))
            api = httpx.Client(base_url=platform.url, headers={"authorization": f"Bearer {token}"})

            # Checkout: the hosted page, then its button, as a browser submits it; Stripe's events reach the webhook.
            checkout = api.post("/billing/checkout", json={"plan": "weekly"}).json()
            page = httpx.get(checkout["url"])
            assert page.status_code == 200
            assert "Start trial" in page.text
            assert "Interview Prep Weekly" in page.text
            paid = httpx.post(checkout["url"], data={"card": "4242 4242 4242 4242"})
            assert paid.status_code == 303
            assert paid.headers["location"].startswith(
                platform.env.get("CHECKOUT_SUCCESS_URL", "http://127.0.0.1:3000")
            )
            subscription = _wait_for(
                lambda: conn.execute(
                    "select s.status::text, s.cancel_at_period_end, p.code from public.subscriptions s"
                    " join public.plans p on p.id = s.plan_id where s.user_id = %s",
                    (user_id,),
                ).fetchone()
            )
            assert subscription == {"status": "trialing", "cancel_at_period_end": False, "code": "weekly"}
            stripe_sent = {"checkout.session.completed", "customer.subscription.created", "invoice.paid"}

            def delivered() -> bool:
                events = conn.execute(
                    "select type from private.stripe_events"
                    " where coalesce(stripe_customer_id, payload #>> '{data,object,customer}') ="
                    " (select stripe_customer_id from public.billing_customers where user_id = %s)",
                    (user_id,),
                ).fetchall()
                return {row["type"] for row in events} >= stripe_sent

            assert _wait_for(delivered), f"the webhook did not apply {stripe_sent}:\n{platform.output()}"
            assert httpx.get(checkout["url"]).text.count("nothing to pay") == 1  # a completed session is closed

            # The billing portal: cancel at the end of the period.
            portal = api.post("/billing/portal", json={}).json()
            shown = httpx.get(portal["url"])
            assert shown.status_code == 200
            assert "Cancel plan" in shown.text
            action = re.search(r'action="([^"]+/cancel)"', shown.text)
            sub_id = re.search(r'name="subscription" value="([^"]+)"', shown.text)
            assert action
            assert sub_id
            origin = portal["url"].split("/billing_portal/")[0]
            cancelled = httpx.post(f"{origin}{action[1]}", data={"subscription": sub_id[1]})
            assert cancelled.status_code == 303
            assert _wait_for(
                lambda: conn.execute(
                    "select cancel_at_period_end from public.subscriptions where user_id = %s and cancel_at_period_end",
                    (user_id,),
                ).fetchone()
            )
            assert "Don&#x27;t cancel" in httpx.get(portal["url"]).text
            api.close()
