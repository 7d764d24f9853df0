"""Matching: one class (role, level) with overlapping windows, oldest first, never oneself nor a blocked pair;
a no-show waits behind punctual users; the scheduled matcher pairs what arrived together and settles rooms."""

from __future__ import annotations

import threading
import time
import uuid
from datetime import UTC, datetime, timedelta

import psycopg

from tests.abuse.attempts import as_user, refusal
from tests.support.peers import ask, keyed_question, matched_room, paid_user, room_of, under_way


def participants(db: psycopg.Connection, room: uuid.UUID) -> set[uuid.UUID]:
    return set(db.execute("select user_a, user_b from public.peer_rooms where id = %s", (room,)).fetchone())


def in_order(db: psycopg.Connection, requests: list[uuid.UUID]) -> None:
    """One transaction has one now(): space the requests' priorities a second apart, in the list's order."""
    for seconds, request in enumerate(requests):
        db.execute(
            "update public.peer_requests set priority_at = priority_at + make_interval(secs => %s) where id = %s",
            (seconds, request),
        )


def without_matching_on_arrival(db: psycopg.Connection) -> None:
    """Requests that arrive together (each in its own transaction, missing the other): the scheduled run's case."""
    db.execute("alter table public.peer_requests disable trigger match_on_request")


def test_a_request_is_matched_on_arrival_with_the_oldest_fitting_request_of_its_class(db: psycopg.Connection) -> None:
    keyed_question(db)
    oldest, newer, other_level, newcomer = (paid_user(db) for _ in range(4))
    ask(db, other_level, level="senior")  # another class, older than all
    first = ask(db, oldest)
    second = ask(db, newer)
    assert room_of(db, first) == room_of(db, second)  # the newer one took the oldest on arrival
    third = ask(db, newcomer)
    assert room_of(db, third) is None  # nobody of its class waits any more; the senior request is not its class
    assert participants(db, room_of(db, first)) == {oldest, newer}


def test_windows_must_share_an_hour(db: psycopg.Connection) -> None:
    morning, evening = paid_user(db), paid_user(db)
    now = datetime.now(UTC)
    ask(db, morning, start=now, hours=2)
    late = ask(db, evening, start=now + timedelta(hours=1, minutes=30), hours=2)
    assert room_of(db, late) is None


def test_a_blocked_pair_never_meets_again(db: psycopg.Connection) -> None:
    room = matched_room(db, paid_user(db), paid_user(db))
    as_user(
        db, room.second, "insert into public.peer_blocks (blocker_id, blocked_id) values (%s, %s) returning 1",
        room.second, room.first,
    )  # fmt: skip
    ask(db, room.first)
    assert room_of(db, ask(db, room.second)) is None  # the block of the second holds in both directions
    without_matching_on_arrival(db)
    assert db.execute("select service.match_peer_requests()").fetchone()[0] == {"peer_rooms_opened": 0}


def test_blocking_someone_never_met_is_refused(db: psycopg.Connection) -> None:
    me, stranger = paid_user(db), paid_user(db)
    error = refusal(db, me, "insert into public.peer_blocks (blocker_id, blocked_id) values (%s, %s)", me, stranger)
    assert isinstance(error, psycopg.errors.InsufficientPrivilege)
    assert "row-level security" in str(error)


def test_the_scheduled_matcher_pairs_neighbours_then_the_oldest_left_with_its_first_fit(
    db: psycopg.Connection,
) -> None:
    keyed_question(db)
    without_matching_on_arrival(db)
    users = [paid_user(db) for _ in range(5)]
    # users[1] blocked users[0]: the neighbour pairing (0, 1) does not fit, (2, 3) does; then the oldest left,
    # users[0], takes its first fit, users[4]; users[1] waits.
    db.execute("insert into public.peer_blocks (blocker_id, blocked_id) values (%s, %s)", (users[1], users[0]))
    requests = [ask(db, user) for user in users]
    in_order(db, requests)
    assert room_of(db, requests[0]) is None
    opened = db.execute("select service.match_peer_requests()").fetchone()[0]
    assert opened == {"peer_rooms_opened": 2}
    rooms = [room_of(db, request) for request in requests]
    assert participants(db, rooms[2]) == {users[2], users[3]}
    assert participants(db, rooms[0]) == {users[0], users[4]}
    assert rooms[1] is None


def test_concurrent_newcomers_of_a_class_meet(database_url: str) -> None:
    """Each request waits for the class's lock, so the second sees the first once it commits."""
    with psycopg.connect(database_url, autocommit=True) as setup:
        keyed_question(setup)
        first, second = paid_user(setup), paid_user(setup)
    with psycopg.connect(database_url) as one, psycopg.connect(database_url) as two:
        ask(one, first, role="recruiter")
        waiting = threading.Thread(target=lambda: (ask(two, second, role="recruiter"), two.commit()))
        waiting.start()
        time.sleep(0.3)
        assert waiting.is_alive()  # blocked on the class's lock while the first transaction is open
        one.commit()
        waiting.join(timeout=10)
        room = one.execute("select room_id from public.peer_requests where user_id = %s", (second,)).fetchone()[0]
        assert room is not None  # both matched (committed in this module's database, in another class)


def test_a_no_show_waits_behind_punctual_users(db: psycopg.Connection) -> None:
    room = matched_room(db, paid_user(db), paid_user(db))
    under_way(db, room)
    db.execute("update public.peer_rooms set starts_at = now() - interval '20 minutes' where id = %s", (room.id,))
    settled = db.execute("select service.settle_peer_rooms(now())").fetchone()[0]
    assert settled == {"peer_requests_expired": 0, "peer_rooms_settled": 1, "peer_no_shows_recorded": 1}
    seats = dict(db.execute("select user_id, no_show from public.peer_seats where room_id = %s", (room.id,)))
    assert seats == {room.first: False, room.second: True}
    assert db.execute("select status from public.peer_rooms where id = %s", (room.id,)).fetchone()[0] == "missed"

    # The no-show asks first, a punctual user later: a newcomer is matched with the punctual one.
    keyed_question(db)
    without_matching_on_arrival(db)
    punctual, newcomer = paid_user(db), paid_user(db)
    no_show_request = ask(db, room.second)
    punctual_request = ask(db, punctual)
    db.execute("alter table public.peer_requests enable trigger match_on_request")
    newcomer_request = ask(db, newcomer)
    assert room_of(db, newcomer_request) == room_of(db, punctual_request) is not None
    assert room_of(db, no_show_request) is None


def test_at_most_ten_requests_a_day(db: psycopg.Connection) -> None:
    user = paid_user(db)
    for _ in range(10):
        request = ask(db, user, level="executive")
        as_user(db, user, "update public.peer_requests set status = 'cancelled' where id = %s returning 1", request)
    error = refusal(
        db, user,
        "insert into public.peer_requests (user_id, target_role, experience_level, available_from, available_until,"
        " timezone) values (%s, 'swe', 'executive', now(), now() + interval '2 hours', 'UTC')",
        user,
    )  # fmt: skip
    assert error.sqlstate == "PT429", error


def test_the_peer_rubric_is_the_ai_evaluations(db: psycopg.Connection) -> None:
    from functions.evaluation.rubrics import CATEGORY_CRITERIA

    in_sql = {
        (category, name): float(weight)
        for category, name, weight in db.execute("select category, name, weight from private.rubric_criteria")
    }
    in_python = {
        (category, criterion.name): criterion.weight
        for category, criteria in CATEGORY_CRITERIA.items()
        for criterion in criteria
    }
    assert in_sql == in_python
