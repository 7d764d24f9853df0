"""One account's AI spend: reserved before each call, so concurrent calls cannot together pass the ceiling."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal

import psycopg
import pytest

from shared.ai import AiBudgetExceededError, AiCall, AiUsage, database_budget, database_usage_sink
from shared.config import AiSettings, DatabaseSettings
from shared.db.psycopg_transport import PsycopgDatabase
from tests.support.identities import sign_up

FREE_CEILING = Decimal("0.05")


@pytest.fixture
def database(database_url: str) -> Iterator[PsycopgDatabase]:
    db = PsycopgDatabase(DatabaseSettings(database_url=database_url, db_pool_size=10))
    yield db
    db.close()


@pytest.fixture
def free_user(database_url: str) -> str:
    with psycopg.connect(database_url, autocommit=True) as conn:
        return str(sign_up(conn))


def call(user: str, cost: str) -> AiCall:
    return AiCall(purpose="evaluation", model="m", user_id=user, response_id=None, worst_case_usd=Decimal(cost))


def spent(database_url: str, user: str) -> Decimal:
    with psycopg.connect(database_url) as conn:
        return conn.execute("select coalesce(sum(cost_usd), 0) from public.ai_usage where user_id = %s",
                            (user,)).fetchone()[0]  # fmt: skip


def test_twenty_concurrent_calls_of_one_free_account_reserve_no_more_than_its_ceiling(
    database: PsycopgDatabase, database_url: str, free_user: str
) -> None:
    reserve = database_budget(database, AiSettings(ai_daily_spend_cap_usd=Decimal(20)))

    def attempt(_: int) -> str:
        try:
            reserve(call(free_user, "0.01"))
        except AiBudgetExceededError as refused:
            return f"refused: {refused.scope}"
        return "granted"

    with ThreadPoolExecutor(max_workers=10) as pool:
        outcomes = list(pool.map(attempt, range(20)))
    # $0.05 in reservations of $0.01: the other 15 see the five before them, however they interleave.
    assert sorted(outcomes) == ["granted"] * 5 + ["refused: user"] * 15
    assert spent(database_url, free_user) == FREE_CEILING


def test_the_platform_cap_counts_every_users_reservations(database: PsycopgDatabase, database_url: str) -> None:
    reserve = database_budget(database, AiSettings(ai_daily_spend_cap_usd=Decimal("0.03")))
    with psycopg.connect(database_url, autocommit=True) as conn:
        users = [str(sign_up(conn)) for _ in range(4)]
        conn.execute("delete from public.ai_usage")
    reserve(call(users[0], "0.01"))
    reserve(call(users[1], "0.01"))
    reserve(call(users[2], "0.01"))
    with pytest.raises(AiBudgetExceededError) as refused:
        reserve(call(users[3], "0.01"))
    assert refused.value.scope == "platform"


def test_a_call_settles_its_reservation_with_what_it_cost(
    database: PsycopgDatabase, database_url: str, free_user: str
) -> None:
    reservation = database_budget(database, AiSettings())(call(free_user, "0.02"))
    assert spent(database_url, free_user) == Decimal("0.02")
    database_usage_sink(database)(
        AiUsage(purpose="evaluation", model="m", prompt_tokens=100, completion_tokens=20, audio_seconds=None,
                cost_usd=Decimal("0.000027"), latency_ms=900, succeeded=True, error=None, user_id=free_user,
                reservation_id=reservation)
    )  # fmt: skip
    with psycopg.connect(database_url) as conn:
        rows = conn.execute("select cost_usd, settled, prompt_tokens from public.ai_usage where user_id = %s",
                            (free_user,)).fetchall()  # fmt: skip
    assert rows == [(Decimal("0.000027"), True, 100)]


def test_a_reservation_nobody_settled_keeps_counting_its_worst_case(
    database: PsycopgDatabase, database_url: str, free_user: str
) -> None:
    # The process died during the call: the worst case stays spent rather than the call becoming free.
    database_budget(database, AiSettings())(call(free_user, "0.04"))
    with pytest.raises(AiBudgetExceededError):
        database_budget(database, AiSettings())(call(free_user, "0.02"))
    assert spent(database_url, free_user) == Decimal("0.04")
