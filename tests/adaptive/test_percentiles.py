"""Percentiles among peers (service.refresh_peer_percentiles): never of a cohort under 20 users (k-anonymity), the
narrowest cohort that has 20, and each user reads only their own."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import psycopg
import pytest

from shared.db.rls import acting_as
from tests.support.identities import sign_up, user_claims

NOW = datetime(2026, 12, 4, 12, tzinfo=UTC)


def peer(db: psycopg.Connection, role: str | None, level: str | None, ability: float, category: str) -> uuid.UUID:
    user = sign_up(db)
    db.execute(
        "insert into public.user_profiles (user_id, target_role, experience_level) values (%s, %s, %s)",
        (user, role, level),
    )
    db.execute(
        "insert into public.category_abilities (user_id, category, ability, answers) values (%s, %s, %s, 5)",
        (user, category, ability),
    )
    return user


def standing(db: psycopg.Connection, user: uuid.UUID, category: str) -> tuple:
    return db.execute(
        "select cohort, cohort_size, percentile from public.category_abilities where user_id = %s and category = %s",
        (user, category),
    ).fetchone()


def refresh(db: psycopg.Connection) -> dict:
    return db.execute("select service.refresh_peer_percentiles(%s, true)", (NOW,)).fetchone()[0]


@pytest.fixture
def engineers(db: psycopg.Connection) -> list[uuid.UUID]:
    """19 mid-level software engineers and 6 mid-level designers, in behavioral; abilities 0.0, 0.1, ..."""
    people = [peer(db, "software engineer", "mid", i / 10, "behavioral") for i in range(19)]
    return people + [peer(db, "designer", "mid", 5 + i, "behavioral") for i in range(6)]


def test_a_cohort_of_19_is_widened_to_the_level_of_25(db: psycopg.Connection, engineers: list[uuid.UUID]) -> None:
    refresh(db)
    assert standing(db, engineers[0], "behavioral") == ("level", 25, 0)
    assert standing(db, engineers[-1], "behavioral") == ("level", 25, 100)


def test_the_twentieth_member_makes_the_narrow_cohort(db: psycopg.Connection, engineers: list[uuid.UUID]) -> None:
    twentieth = peer(db, "software engineer", "mid", 4.5, "behavioral")
    refresh(db)
    assert standing(db, twentieth, "behavioral") == ("role_level", 20, 100)
    assert standing(db, engineers[0], "behavioral") == ("role_level", 20, 0)
    assert standing(db, engineers[-1], "behavioral") == ("level", 26, 100)  # 6 designers: their level


def test_under_20_in_every_cohort_there_is_no_percentile(db: psycopg.Connection) -> None:
    few = [peer(db, "software engineer", "mid", i, "technical") for i in range(19)]
    assert refresh(db)["percentiles_updated"] == 0
    assert {standing(db, user, "technical") for user in few} == {(None, None, None)}


def test_a_cohort_that_shrinks_below_20_loses_its_percentiles(
    db: psycopg.Connection, engineers: list[uuid.UUID]
) -> None:
    refresh(db)
    db.execute("delete from public.users where id = any(%s)", (engineers[19:],))  # the designers leave
    refresh(db)
    assert standing(db, engineers[0], "behavioral") == (None, None, None)


def test_a_user_reads_only_their_own_percentiles(db: psycopg.Connection, engineers: list[uuid.UUID]) -> None:
    refresh(db)
    with acting_as(db, user_claims(engineers[3])):
        rows = db.execute("select user_id, cohort_size from public.category_abilities").fetchall()
    assert rows == [(engineers[3], 25)]


def test_the_scheduled_refresh_runs_once_a_day(db: psycopg.Connection, engineers: list[uuid.UUID]) -> None:
    first = db.execute("select service.refresh_peer_percentiles(%s)", (NOW,)).fetchone()[0]
    assert first["percentiles_updated"] == 25
    again = db.execute("select service.refresh_peer_percentiles(%s)", (NOW,)).fetchone()[0]
    assert again == {"percentiles_updated": 0, "skipped": "computed within the last 20 hours"}
