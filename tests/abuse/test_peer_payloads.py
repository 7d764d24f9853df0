"""Hostile values in what a peer-session user writes: every column and its size is checked before any work
(PT413 by bytes, then PT422 by shape), and nothing a client sends sets a time, a priority or a score."""

from __future__ import annotations

import json
import uuid

import psycopg
import pytest

from tests.abuse.attempts import as_user, timed_refusal
from tests.support.peers import Room, matched_room, paid_user, under_way

REFUSED_WITHIN_SECONDS = 1.0
MEGABYTES = 8 * 1024 * 1024
# Serialized once here, as PostgREST hands the body to the database as text: the timing is the database's.
TWO_HUNDRED_THOUSAND_SCORES = json.dumps({f"criterion_{i}": 5 for i in range(200_000)})

REQUEST = (
    "insert into public.peer_requests (user_id, target_role, experience_level, available_from, available_until,"
    " timezone) values (%(user)s, %(role)s, 'mid', %(start)s, %(end)s, %(zone)s) returning id"
)


@pytest.fixture
def user(db: psycopg.Connection) -> uuid.UUID:
    return paid_user(db)


@pytest.fixture
def room(db: psycopg.Connection) -> Room:
    room = matched_room(db, paid_user(db), paid_user(db))
    under_way(db, room)
    return room


def request(user: uuid.UUID, **overrides: object) -> dict[str, object]:
    return {"user": user, "role": "software engineer", "start": None, "end": None, "zone": "UTC", **overrides}


def window(db: psycopg.Connection, start: str, end: str) -> tuple[object, object]:
    return db.execute(f"select now() + interval '{start}', now() + interval '{end}'").fetchone()  # type: ignore[return-value]


@pytest.mark.parametrize(
    ("overrides", "sqlstate", "message"),
    [
        ({"role": "x" * MEGABYTES}, "PT422", "longer than 120 bytes"),
        ({"role": "Ignore previous instructions and"}, "PT422", "unknown role"),
        ({"zone": "UTC+167"}, "PT422", "is not an IANA time zone name"),
        ({"zone": "Z" * MEGABYTES}, "PT422", "is not an IANA time zone name"),
    ],
    ids=["role of megabytes", "free-text role", "posix offset zone", "zone of megabytes"],
)
def test_hostile_request_fields_are_refused_fast(
    db: psycopg.Connection, user: uuid.UUID, overrides: dict[str, object], sqlstate: str, message: str
) -> None:
    start, end = window(db, "0 minutes", "3 hours")
    error, seconds = timed_refusal(db, user, REQUEST, request(user, start=start, end=end, **overrides))
    assert error.sqlstate == sqlstate, error
    assert message in error.diag.message_primary
    assert seconds < REFUSED_WITHIN_SECONDS


@pytest.mark.parametrize(
    ("start", "end", "message"),
    [
        ("0 minutes", "30 minutes", "must hold a one-hour session"),
        ("-3 hours", "30 minutes", "must hold a one-hour session"),  # the past does not count
        ("1 day", "15 days", "more than 14 days ahead"),
    ],
)
def test_windows_that_cannot_hold_a_session_or_reach_too_far_are_refused(
    db: psycopg.Connection, user: uuid.UUID, start: str, end: str, message: str
) -> None:
    begins, ends = window(db, start, end)
    error, _ = timed_refusal(db, user, REQUEST, request(user, start=begins, end=ends))
    assert error.sqlstate == "PT422", error
    assert message in error.diag.message_primary


def test_a_request_cannot_set_its_priority_status_or_room(db: psycopg.Connection, user: uuid.UUID) -> None:
    start, end = window(db, "0 minutes", "3 hours")
    for column, value in (("priority_at", "2000-01-01"), ("status", "matched"), ("created_at", "2000-01-01")):
        error, _ = timed_refusal(
            db, user,
            f"insert into public.peer_requests (user_id, target_role, experience_level, available_from,"
            f" available_until, timezone, {column}) values (%s, 'swe', 'mid', %s, %s, 'UTC', %s)",
            user, start, end, value,
        )  # fmt: skip
        assert isinstance(error, psycopg.errors.InsufficientPrivilege), column
    request_id = as_user(db, user, REQUEST, request(user, start=start, end=end))
    error, _ = timed_refusal(db, user, "update public.peer_requests set status = 'matched' where id = %s", request_id)
    assert isinstance(error, psycopg.errors.InsufficientPrivilege)  # only cancelling is allowed
    assert "row-level security" in str(error)


@pytest.mark.parametrize(
    ("statement", "value", "message"),
    [
        (
            "insert into public.peer_messages (room_id, user_id, body) values (%s, %s, %s)",
            "x" * MEGABYTES,
            "the limit is 8000",
        ),
        (
            "insert into public.peer_feedback (turn_id, author_id, scores) values ((select id from public.peer_turns"
            " where room_id = %s and turn = 1), %s, %s::jsonb)",
            TWO_HUNDRED_THOUSAND_SCORES,
            "the limit is 1024",
        ),
        (
            "insert into public.peer_feedback (turn_id, author_id, scores, comment) values ((select id from"
            " public.peer_turns where room_id = %s and turn = 1), %s, '{}', %s)",
            "x" * MEGABYTES,
            "the limit is 8000",
        ),
        (
            "insert into public.peer_reports (room_id, reporter_id, reported_id, reason, details)"
            " values (%s, %s, (select user_b from public.peer_rooms where id = %s), 'other', %s)",
            "x" * MEGABYTES,
            "the limit is 8000",
        ),
    ],
    ids=["chat body", "feedback scores", "feedback comment", "report details"],
)
def test_megabyte_values_are_refused_fast_by_size(
    db: psycopg.Connection, room: Room, statement: str, value: object, message: str
) -> None:
    params: tuple[object, ...] = (room.id, room.first, value)
    if statement.count("%s") == 4:
        params = (room.id, room.first, room.id, value)
    error, seconds = timed_refusal(db, room.first, statement, *params)
    assert error.sqlstate == "PT413", error
    assert message in error.diag.message_primary
    assert seconds < REFUSED_WITHIN_SECONDS


def test_a_check_in_records_the_servers_time_and_never_a_verdict(db: psycopg.Connection, room: Room) -> None:
    for column, value in (("joined_at", "2000-01-01"), ("no_show", False)):
        error, _ = timed_refusal(
            db, room.second, f"insert into public.peer_seats (room_id, user_id, {column}) values (%s, %s, %s)",
            room.id, room.second, value,
        )  # fmt: skip
        assert isinstance(error, psycopg.errors.InsufficientPrivilege), column
    recorded = as_user(
        db, room.second,
        "insert into public.peer_seats (room_id, user_id) values (%s, %s)"
        " returning joined_at > now() - interval '1 minute' and not no_show",
        room.id, room.second,
    )  # fmt: skip
    assert recorded is True


def test_checking_in_outside_the_rooms_time_or_someone_elses_seat_is_refused(
    db: psycopg.Connection, room: Room
) -> None:
    forged, _ = timed_refusal(
        db, room.first, "insert into public.peer_seats (room_id, user_id) values (%s, %s)", room.id, room.second
    )
    assert isinstance(forged, psycopg.errors.InsufficientPrivilege)
    db.execute(
        "update public.peer_rooms set starts_at = now() + interval '1 hour', ends_at = now() + interval '2 hours'"
        " where id = %s",
        (room.id,),
    )
    early, _ = timed_refusal(
        db, room.second, "insert into public.peer_seats (room_id, user_id) values (%s, %s)", room.id, room.second
    )
    assert isinstance(early, psycopg.errors.InsufficientPrivilege)
