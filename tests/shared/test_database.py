"""The database gateway: psycopg against the real schema, the exact requests the PostgREST transport sends, and
what an HTTP caller is told when a call fails."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import psycopg
import pytest
import respx
from fastapi.testclient import TestClient
from psycopg_pool import ConnectionPool

from shared.config import DatabaseSettings
from shared.db import Caller, DatabaseError, connect
from shared.db.postgrest_transport import PostgrestDatabase
from shared.db.psycopg_transport import PsycopgDatabase
from shared.http import create_app
from tests.support.contracts import database_text_in
from tests.support.identities import sign_up, user_claims


@pytest.fixture
def gateway(database_url: str) -> PsycopgDatabase:
    database = PsycopgDatabase(DatabaseSettings(database_url=database_url, db_pool_size=2))
    yield database
    database.close()


@pytest.fixture
def user(database_url: str) -> Caller:
    with psycopg.connect(database_url, autocommit=True) as conn:
        user_id = sign_up(conn)
    return Caller(claims=user_claims(user_id), token="unused-over-psycopg")


def test_service_calls_run_as_service_role(gateway: PsycopgDatabase, user: Caller) -> None:
    context = gateway.call("service.checkout_context", {"user_id": user.claims["sub"], "plan_code": "monthly"})
    assert context["price_id"] == "price_local_monthly"
    assert context["trial_days"] == 7


def test_user_calls_run_under_the_users_rls(gateway: PsycopgDatabase, user: Caller) -> None:
    assert gateway.call("public.entitlements", {}, caller=user) is not None
    with pytest.raises(DatabaseError) as refused:
        gateway.call("service.checkout_context", {"user_id": user.claims["sub"], "plan_code": "monthly"}, caller=user)
    assert refused.value.status == 403


@pytest.mark.parametrize(
    ("args", "status", "text"),
    [
        ({"user_id": "00000000-0000-0000-0000-000000000000", "plan_code": "monthly"}, 404, "no such user"),
        ({"user_id": "not-a-uuid", "plan_code": "monthly"}, 400, "invalid input syntax for type uuid"),
    ],
)
def test_sql_errors_map_to_http_statuses(gateway: PsycopgDatabase, args: dict, status: int, text: str) -> None:
    with pytest.raises(DatabaseError) as refused:
        gateway.call("service.checkout_context", args)
    assert refused.value.status == status
    assert text in refused.value.detail


def test_an_unknown_plan_is_a_404_that_lists_the_choices(gateway: PsycopgDatabase, user: Caller) -> None:
    with pytest.raises(DatabaseError) as refused:
        gateway.call("service.checkout_context", {"user_id": user.claims["sub"], "plan_code": "gold"})
    assert refused.value.status == 404
    assert refused.value.hint == "Choose one of: weekly, monthly"


def test_no_identity_leaks_between_calls_on_one_connection(gateway: PsycopgDatabase, user: Caller) -> None:
    gateway.call("public.entitlements", {}, caller=user)
    with gateway._connections().connection() as conn:
        role, claims = conn.execute("select current_user, current_setting('request.jwt.claims', true)").fetchone()
    assert role == "postgres"
    assert not claims


def test_a_database_that_is_down_is_a_fast_retryable_503() -> None:
    database = connect(
        DatabaseSettings(database_url="postgresql://postgres@127.0.0.1:1/postgres", db_timeout_seconds=1)
    )
    assert isinstance(database, PsycopgDatabase)
    started = time.monotonic()
    with pytest.raises(DatabaseError) as down:
        database.call("service.billing_customer", {"user_id": "00000000-0000-0000-0000-000000000000"})
    database.close()
    assert down.value.status == 503
    assert down.value.retryable
    assert time.monotonic() - started < 5


def test_threads_that_call_at_once_on_a_cold_gateway_all_get_a_connection(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The scheduled run's first calls come from several threads at once (functions/analytics/schedule.py): none
    may see the pool before it is open ("the pool is not open yet")."""
    slow_open = ConnectionPool.open

    def open_slowly(pool: ConnectionPool, *args: Any, **kwargs: Any) -> None:
        time.sleep(0.2)  # a cold start's first open, stretched so every thread arrives during it
        slow_open(pool, *args, **kwargs)

    monkeypatch.setattr(ConnectionPool, "open", open_slowly)
    database = PsycopgDatabase(DatabaseSettings(database_url=database_url, db_pool_size=4))
    try:
        with ThreadPoolExecutor(max_workers=4) as pool:
            results = list(pool.map(lambda _: database.call("pg_catalog.version"), range(4)))
    finally:
        database.close()
    assert [result.split()[0] for result in results] == ["PostgreSQL"] * 4


SUPABASE = "http://supabase.test"


@pytest.fixture
def postgrest() -> PostgrestDatabase:
    return PostgrestDatabase(
        DatabaseSettings(db_transport="postgrest", supabase_url=SUPABASE, supabase_service_role_key="service-key")
    )


@respx.mock
def test_postgrest_service_call_contract(postgrest: PostgrestDatabase) -> None:
    route = respx.post(f"{SUPABASE}/rest/v1/rpc/apply_stripe_event").mock(
        return_value=httpx.Response(200, json={"outcome": "applied", "change": "created"})
    )
    result = postgrest.call("service.apply_stripe_event", {"event": {"id": "evt_1"}, "snapshot": None})
    assert result == {"outcome": "applied", "change": "created"}
    request = route.calls.last.request
    assert request.method == "POST"
    assert request.headers["apikey"] == "service-key"
    assert request.headers["authorization"] == "Bearer service-key"
    assert request.headers["content-profile"] == "service"
    assert json.loads(request.content) == {"event": {"id": "evt_1"}, "snapshot": None}


@respx.mock
def test_postgrest_user_call_contract(postgrest: PostgrestDatabase) -> None:
    route = respx.post(f"{SUPABASE}/rest/v1/rpc/entitlements").mock(return_value=httpx.Response(200, json=[]))
    postgrest.call("public.entitlements", {}, caller=Caller(claims={"sub": "u"}, token="user-jwt"))
    request = route.calls.last.request
    assert request.headers["authorization"] == "Bearer user-jwt"
    assert request.headers["apikey"] == "service-key"
    assert request.headers["content-profile"] == "public"


@respx.mock
def test_postgrest_errors_map_like_psycopg_errors(postgrest: PostgrestDatabase) -> None:
    respx.post(f"{SUPABASE}/rest/v1/rpc/checkout_context").mock(
        return_value=httpx.Response(
            409,
            json={
                "code": "PT409",
                "message": "you already have a subscription",
                "details": None,
                "hint": "Change or cancel it from the billing portal (POST /billing/portal).",
            },
        )
    )
    with pytest.raises(DatabaseError) as refused:
        postgrest.call("service.checkout_context", {"user_id": "u", "plan_code": "monthly"})
    assert (refused.value.status, refused.value.detail) == (409, "you already have a subscription")


@respx.mock
def test_postgrest_unreachable_is_a_503(postgrest: PostgrestDatabase) -> None:
    respx.post(f"{SUPABASE}/rest/v1/rpc/billing_customer").mock(side_effect=httpx.ConnectError("refused"))
    with pytest.raises(DatabaseError) as down:
        postgrest.call("service.billing_customer", {"user_id": "u"})
    assert down.value.status == 503


# --- Database errors: the project's words to the caller, the database's to the log ------------------------------

FAILURES = """
create schema contract_probe;
grant usage on schema contract_probe to service_role;
create table contract_probe.things (id integer primary key, size integer check (size >= 0));
grant all on contract_probe.things to service_role;
create function contract_probe.fail(kind text) returns jsonb language plpgsql set search_path = '' as $$
begin
  case kind
    when 'unique' then insert into contract_probe.things values (1, 1), (1, 1);
    when 'check' then insert into contract_probe.things values (2, -1);
    when 'enum' then perform 'gold'::public.subscription_status;
    when 'uuid' then perform 'not-a-uuid'::uuid;
    when 'nul' then perform '"\\u0000"'::jsonb;
    when 'ours' then raise sqlstate 'PT409' using message = 'that was done already', hint = 'Fetch it first.';
    else raise exception 'internal state: hunter2';
  end case;
  return '{}';
end
$$;
grant execute on function contract_probe.fail(text) to service_role;
"""


@pytest.fixture(scope="module")
def failing(database_url: str) -> Iterator[TestClient]:
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(FAILURES)
    database = PsycopgDatabase(DatabaseSettings(database_url=database_url, db_pool_size=1))
    app = create_app("test")

    @app.get("/fail/{kind}")
    def fail(kind: str) -> Any:
        return database.call("contract_probe.fail", {"kind": kind})

    yield TestClient(app, raise_server_exceptions=False)
    database.close()
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("drop schema contract_probe cascade")


@pytest.mark.parametrize(
    ("kind", "status", "title", "database_words"),
    [
        ("unique", 409, "Conflict", 'duplicate key value violates unique constraint "things_pkey"'),
        ("check", 409, "Conflict", 'violates check constraint "things_size_check"'),
        ("enum", 400, "Invalid input", 'invalid input value for enum public.subscription_status: "gold"'),
        ("uuid", 400, "Invalid input", 'invalid input syntax for type uuid: "not-a-uuid"'),
        ("nul", 400, "Invalid input", "unsupported Unicode escape sequence"),
        ("other", 500, "Internal error", "internal state: hunter2"),
    ],
)
def test_database_errors_are_answered_in_the_projects_words(
    failing: TestClient, caplog: pytest.LogCaptureFixture, kind: str, status: int, title: str, database_words: str
) -> None:
    response = failing.get(f"/fail/{kind}")
    assert response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    assert (response.status_code, problem["title"]) == (status, title)
    assert database_text_in(response.text) is None, response.text
    for part in ("things", "subscription_status", "gold", "hunter2", "contract_probe"):
        assert part not in response.text
    assert "hint" not in problem
    # The operator still reads what the database said.
    (logged,) = [r for r in caplog.records if r.getMessage() == "database call failed"]
    assert database_words in logged.detail


def test_our_sql_functions_refusals_keep_their_own_words(failing: TestClient) -> None:
    response = failing.get("/fail/ours")
    assert response.status_code == 409
    assert (response.json()["detail"], response.json()["hint"]) == ("that was done already", "Fetch it first.")
