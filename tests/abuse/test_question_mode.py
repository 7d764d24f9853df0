"""POST /questions' `mode`: hostile values are refused by the request model, before the database is asked anything
(no session opened, no quota counted, no AI call), and the filters recommended mode would ignore are refused
rather than ignored, over HTTP and in SQL."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator

import psycopg
import pytest
from psycopg.types.json import Jsonb

from tests.abuse.attempts import refusal
from tests.questions.test_api import Harness
from tests.support.identities import sign_up

# Generous: the model refuses on the value's type and its first characters; the bench measures real figures.
REFUSED_WITHIN_SECONDS = 1.0
NESTED = {"recommended": True}
for _ in range(100):
    NESTED = {"mode": NESTED}


@pytest.fixture(scope="module")
def harness(database_url: str) -> Iterator[Harness]:
    h = Harness(database_url)
    yield h
    h.close()


@pytest.mark.parametrize(
    "mode",
    [
        "recommended ",
        "RECOMMENDED",
        "recommended\u0000",
        {"$ne": None},
        ["recommended"],
        True,
        1,
        NESTED,
        "x" * 1_000_000,
    ],
    ids=["trailing-space", "upper-case", "nul", "operator", "array", "boolean", "number", "nested", "megabyte"],
)
def test_a_mode_other_than_recommended_is_refused_before_the_database(harness: Harness, mode: object) -> None:
    user = harness.user(exhausted=False)
    started = time.perf_counter()
    response = harness.client.post("/questions", json={"mode": mode, "count": 5}, headers=harness.auth(user))
    seconds = time.perf_counter() - started

    assert response.status_code == 422, response.text
    assert response.json()["errors"][0]["field"] == "body.mode"
    assert seconds < REFUSED_WITHIN_SECONDS
    counted = harness.conn.execute(
        "select (select count(*) from public.practice_sessions where user_id = %s),"
        " (select count(*) from public.usage_counters where user_id = %s)",
        (user, user),
    ).fetchone()
    assert counted == (0, 0)
    assert harness.fake.calls == 0


@pytest.mark.parametrize(
    "config",
    [
        {"mode": "recommended", "experience_level": "executive"},
        {"mode": "recommended", "target_role": "software engineer"},
        {"mode": "recommended", "tags": ["sql"]},
    ],
    ids=["level", "role", "tags"],
)
def test_a_recommended_session_refuses_the_filters_it_would_ignore(db: psycopg.Connection, config: dict) -> None:
    user = sign_up(db)
    error = refusal(db, user, "select public.start_session('quick', %s)", Jsonb(config))
    assert error.sqlstate == "PT422", error
    assert "takes its level and role from your profile" in error.diag.message_primary
    # The service path checks the same config (service.request_questions, as POST /questions calls it).
    with pytest.raises(psycopg.Error) as caught:
        db.execute("select service.request_questions(%s, %s)", (uuid.uuid4(), Jsonb({**config, "count": 2})))
    assert caught.value.sqlstate == "PT422"
