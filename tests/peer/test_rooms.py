"""Rooms under RLS, acting as each user exactly as PostgREST and Realtime do: the two participants read their room,
turns, chat and channel; a third user reads nothing of it; a turn's candidate never reads its answer key; feedback
is revealed after giving one's own or after the deadline; reports reach the reporter and moderators only."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from typing import Any

import psycopg
import pytest
from psycopg.types.json import Jsonb

from bench import postgrest
from functions.evaluation.rubrics import CATEGORY_CRITERIA
from shared.db.rls import acting_as
from tests.abuse.attempts import as_user, refusal
from tests.support.identities import user_claims
from tests.support.peers import Room, matched_room, paid_user, rubric_scores, under_way


def expected_score(db: psycopg.Connection, turn: uuid.UUID, scores: dict[str, int]) -> float:
    category = db.execute("select category from public.peer_turns where id = %s", (turn,)).fetchone()[0]
    criteria = CATEGORY_CRITERIA[category]
    return 100 * sum(c.weight * (scores[c.name] - 1) / 4 for c in criteria) / sum(c.weight for c in criteria)


@pytest.fixture
def room(db: psycopg.Connection) -> Room:
    room = matched_room(db, paid_user(db), paid_user(db))
    under_way(db, room)
    return room


@pytest.fixture
def stranger(db: psycopg.Connection) -> uuid.UUID:
    return paid_user(db)


def count(db: psycopg.Connection, user: uuid.UUID, table: str, where: str, *params: object) -> Any:
    return as_user(db, user, f"select count(*) from {table} where {where}", *params)


def say(db: psycopg.Connection, user: uuid.UUID, room: Room, body: str) -> Any:
    return as_user(
        db, user, "insert into public.peer_messages (room_id, user_id, body) values (%s, %s, %s) returning id",
        room.id, user, body,
    )  # fmt: skip


def give_feedback(db: psycopg.Connection, user: uuid.UUID, turn: uuid.UUID, scores: object) -> Any:
    return as_user(
        db, user,
        "insert into public.peer_feedback (turn_id, author_id, scores, comment) values (%s, %s, %s, 'Good pace')"
        " returning overall_score",
        turn, user, Jsonb(scores),
    )  # fmt: skip


def test_participants_read_the_room_and_a_third_user_reads_nothing(
    db: psycopg.Connection, room: Room, stranger: uuid.UUID
) -> None:
    say(db, room.first, room, "Hello! Ready when you are.")
    as_user(db, room.second, "insert into public.peer_seats (room_id, user_id) values (%s, %s) returning 1",
            room.id, room.second)  # fmt: skip
    tables = {
        "public.peer_rooms": "id = %s",
        "public.peer_turns": "room_id = %s",
        "public.peer_messages": "room_id = %s",
        "public.peer_seats": "room_id = %s",
    }
    for table, where in tables.items():
        assert count(db, room.first, table, where, room.id) >= 1, table
        assert count(db, room.second, table, where, room.id) >= 1, table
        assert count(db, stranger, table, where, room.id) == 0, table
    assert count(db, stranger, "public.peer_turn_keys", "true") == 0


def test_the_interviewer_reads_the_answer_key_and_the_candidate_does_not(db: psycopg.Connection, room: Room) -> None:
    first_turn, second_turn = room.turn_ids
    question = db.execute("select question_id from public.peer_turns where id = %s", (first_turn,)).fetchone()[0]
    assert question is not None
    # Turn 1: `first` interviews `second`.
    assert count(db, room.first, "public.peer_turn_keys", "turn_id = %s", first_turn) == 1
    assert count(db, room.second, "public.peer_turn_keys", "turn_id = %s", first_turn) == 0
    assert count(db, room.second, "public.question_answer_keys", "question_id = %s", question) == 0
    # Turn 2: the roles swap.
    assert count(db, room.second, "public.peer_turn_keys", "turn_id = %s", second_turn) == 1
    assert count(db, room.first, "public.peer_turn_keys", "turn_id = %s", second_turn) == 0


def test_a_third_user_cannot_write_into_the_room(db: psycopg.Connection, room: Room, stranger: uuid.UUID) -> None:
    error = refusal(
        db, stranger, "insert into public.peer_messages (room_id, user_id, body) values (%s, %s, 'hi')",
        room.id, stranger,
    )  # fmt: skip
    assert isinstance(error, psycopg.errors.InsufficientPrivilege)
    forged = refusal(
        db, room.first, "insert into public.peer_messages (room_id, user_id, body) values (%s, %s, 'as you')",
        room.id, room.second,
    )  # fmt: skip
    assert isinstance(forged, psycopg.errors.InsufficientPrivilege)


def test_chat_messages_are_bounded_in_size_and_rate(db: psycopg.Connection, room: Room) -> None:
    too_big = refusal(
        db, room.first, "insert into public.peer_messages (room_id, user_id, body) values (%s, %s, %s)",
        room.id, room.first, "x" * 1_000_000,
    )  # fmt: skip
    assert too_big.sqlstate == "PT413", too_big
    too_long = refusal(
        db, room.first, "insert into public.peer_messages (room_id, user_id, body) values (%s, %s, %s)",
        room.id, room.first, "x" * 2001,
    )  # fmt: skip
    assert isinstance(too_long, psycopg.errors.CheckViolation)
    for n in range(30):
        say(db, room.first, room, f"line {n}")
    flood = refusal(
        db, room.first, "insert into public.peer_messages (room_id, user_id, body) values (%s, %s, 'one more')",
        room.id, room.first,
    )  # fmt: skip
    assert flood.sqlstate == "PT429", flood
    assert say(db, room.second, room, "my own budget") is not None  # per user


def test_chat_is_in_the_realtime_publication(db: psycopg.Connection) -> None:
    published = db.execute(
        "select 1 from pg_publication_tables where pubname = 'supabase_realtime' and tablename = 'peer_messages'"
    ).fetchone()
    assert published == (1,)


# Realtime Authorization: what Realtime runs when a client joins a private channel --------------------------------


def channel_access(db: psycopg.Connection, user: uuid.UUID, topic: str) -> tuple[int, bool]:
    """As Realtime checks a join: rows of the topic inserted for the check, then, as the user with the topic set,
    how many they may read (broadcast and presence) and whether they may send (insert)."""
    with db.transaction(force_rollback=True):
        db.execute(
            "insert into realtime.messages (topic, extension) values (%s, 'broadcast'), (%s, 'presence')",
            (topic, topic),
        )
        with acting_as(db, user_claims(user)):
            db.execute("select set_config('realtime.topic', %s, true)", (topic,))
            readable = db.execute("select count(*) from realtime.messages where topic = %s", (topic,)).fetchone()[0]
            try:
                with db.transaction():
                    db.execute("insert into realtime.messages (topic, extension) values (%s, 'broadcast')", (topic,))
                can_send = True
            except psycopg.errors.InsufficientPrivilege:
                can_send = False
    return readable, can_send


def test_only_participants_join_the_rooms_private_channel(
    db: psycopg.Connection, room: Room, stranger: uuid.UUID
) -> None:
    topic = f"peer-room:{room.id}"
    assert channel_access(db, room.first, topic) == (2, True)
    assert channel_access(db, room.second, topic) == (2, True)
    assert channel_access(db, stranger, topic) == (0, False)
    assert channel_access(db, room.first, f"peer-room:{uuid.uuid4()}") == (0, False)


def test_a_topic_shaped_otherwise_than_a_room_id_is_no_room_and_no_error(db: psycopg.Connection, room: Room) -> None:
    for topic in (f"peer-room:{'-' * 36}", f"peer-room:{str(room.id).upper()}", f"peer-room:{room.id}x", "x" * 10_000):
        assert channel_access(db, room.first, topic) == (0, False)


def test_a_channel_join_finds_its_room_by_primary_key(db: psycopg.Connection, room: Room) -> None:
    """Not a scan of every room ever held: the topic is read as the room's id."""
    with db.transaction(force_rollback=True), acting_as(db, user_claims(room.first)):
        db.execute("select set_config('realtime.topic', %s, true)", (f"peer-room:{room.id}",))
        db.execute("set local enable_seqscan = off")  # a plan that can avoid the scan does
        plan = "\n".join(row[0] for row in db.execute("explain select count(*) from realtime.messages"))
    assert "peer_rooms_pkey" in plan
    assert "Seq Scan on peer_rooms" not in plan


def test_the_channel_closes_after_the_room(db: psycopg.Connection, room: Room) -> None:
    db.execute(
        "update public.peer_rooms set starts_at = now() - interval '3 hours', ends_at = now() - interval '2 hours'"
        " where id = %s",
        (room.id,),
    )
    assert channel_access(db, room.first, f"peer-room:{room.id}") == (0, False)


def test_the_stand_in_defines_realtime_as_supabase_does(db: psycopg.Connection) -> None:
    columns = db.execute(
        "select column_name, data_type from information_schema.columns"
        " where table_schema = 'realtime' and table_name = 'messages' order by ordinal_position"
    ).fetchall()
    assert [name for name, _ in columns] == [
        "topic", "extension", "payload", "event", "private", "updated_at", "inserted_at", "id",
    ]  # fmt: skip
    db.execute("select set_config('realtime.topic', 'peer-room:x', true)")
    assert db.execute("select realtime.topic()").fetchone()[0] == "peer-room:x"


# Feedback -----------------------------------------------------------------------------------------------------


def test_feedback_is_revealed_to_its_subject_after_they_give_theirs(db: psycopg.Connection, room: Room) -> None:
    first_turn, second_turn = room.turn_ids
    scores = rubric_scores(db, first_turn)
    score = give_feedback(db, room.first, first_turn, scores)  # on `second`, the candidate of turn 1
    # 0-100 from the scale positions and the rubric's weights, as ai_score is.
    assert float(score) == pytest.approx(expected_score(db, first_turn, scores), abs=0.01)
    assert count(db, room.second, "public.peer_feedback", "room_id = %s", room.id) == 0
    give_feedback(db, room.second, second_turn, rubric_scores(db, second_turn))
    assert count(db, room.second, "public.peer_feedback", "room_id = %s", room.id) == 2
    assert count(db, room.first, "public.peer_feedback", "room_id = %s", room.id) == 2


def test_feedback_is_revealed_after_the_deadline(db: psycopg.Connection, room: Room) -> None:
    give_feedback(db, room.first, room.turn_ids[0], rubric_scores(db, room.turn_ids[0]))
    db.execute(
        "update public.peer_rooms set starts_at = now() - interval '1 day 2 hours',"
        " ends_at = now() - interval '1 day 1 hour', feedback_due_at = now() - interval '1 second' where id = %s",
        (room.id,),
    )
    assert count(db, room.second, "public.peer_feedback", "room_id = %s", room.id) == 1


@pytest.mark.parametrize(
    ("spoil", "message"),
    [
        (lambda scores: dict(list(scores.items())[:1]), "scores must name exactly the"),
        (lambda scores: {**scores, "charisma": 5}, "scores must name exactly the"),
        (lambda scores: {**scores, next(iter(scores)): 6}, "whole number from 1 to 5"),
        (lambda scores: {**scores, next(iter(scores)): "5"}, "whole number from 1 to 5"),
        (lambda scores: {**scores, next(iter(scores)): 4.5}, "whole number from 1 to 5"),
        (lambda scores: list(scores.values()), "JSON object"),
    ],
    ids=["missing", "unknown", "off the scale", "a string", "a fraction", "an array"],
)
def test_feedback_must_score_every_rubric_criterion_on_the_scale(
    db: psycopg.Connection, room: Room, spoil: Callable[[dict[str, int]], object], message: str
) -> None:
    turn = room.turn_ids[0]
    error = refusal(
        db, room.first, "insert into public.peer_feedback (turn_id, author_id, scores) values (%s, %s, %s)",
        turn, room.first, Jsonb(spoil(rubric_scores(db, turn))),
    )  # fmt: skip
    assert error.sqlstate == "PT422", error
    assert message in error.diag.message_primary


def test_only_the_turns_interviewer_gives_its_feedback(db: psycopg.Connection, room: Room) -> None:
    # The candidate of turn 1 grading themselves.
    error = refusal(
        db, room.second, "insert into public.peer_feedback (turn_id, author_id, scores) values (%s, %s, %s)",
        room.turn_ids[0], room.second, Jsonb(rubric_scores(db, room.turn_ids[0])),
    )  # fmt: skip
    assert error.sqlstate == "PT404", error


# Reports ------------------------------------------------------------------------------------------------------


def test_reports_reach_the_reporter_and_moderators_only(
    db: psycopg.Connection, room: Room, stranger: uuid.UUID
) -> None:
    report = as_user(
        db, room.second,
        "insert into public.peer_reports (room_id, reporter_id, reported_id, reason, details)"
        " values (%s, %s, %s, 'harassment', 'Rude remarks') returning id",
        room.id, room.second, room.first,
    )  # fmt: skip
    moderator = paid_user(db)
    reads = {
        "reporter": as_user(db, room.second, "select count(*) from public.peer_reports where id = %s", report),
        "reported": as_user(db, room.first, "select count(*) from public.peer_reports where id = %s", report),
        "stranger": as_user(db, stranger, "select count(*) from public.peer_reports where id = %s", report),
    }
    with acting_as(db, user_claims(moderator, app_metadata={"role": "moderator"})):
        reads["moderator"] = db.execute("select count(*) from public.peer_reports where id = %s", (report,)).fetchone()[
            0
        ]
        db.execute("update public.peer_reports set status = 'actioned' where id = %s", (report,))
    with acting_as(db, user_claims(stranger, user_metadata={"role": "moderator"})):
        reads["self-declared moderator"] = db.execute(
            "select count(*) from public.peer_reports where id = %s", (report,)
        ).fetchone()[0]
    assert reads == {"reporter": 1, "reported": 0, "stranger": 0, "moderator": 1, "self-declared moderator": 0}
    assert db.execute("select status from public.peer_reports where id = %s", (report,)).fetchone()[0] == "actioned"
    stranger_report = refusal(
        db, stranger,
        "insert into public.peer_reports (room_id, reporter_id, reported_id, reason) values (%s, %s, %s, 'spam')",
        room.id, stranger, room.first,
    )  # fmt: skip
    assert isinstance(stranger_report, psycopg.errors.InsufficientPrivilege)


def test_a_chat_message_sent_as_postgrest_sends_it_keeps_a_cached_plan(db: psycopg.Connection, room: Room) -> None:
    """PostgREST prepares its statements on long-lived connections: the insert's plan under RLS (the policies'
    participant check) is made for five messages, then a generic plan is kept, so planning the policies is not
    paid per message (bench/peer.py's chat figure rests on it). A policy that made the generic plan dearer than
    the custom ones would have every message planned again."""
    insert = postgrest.insert_minimal("peer_messages", {"body": "text", "room_id": "uuid", "user_id": "uuid"})
    for n in range(8):
        with acting_as(db, user_claims(room.first)):
            body = {"body": f"line {n}", "room_id": str(room.id), "user_id": str(room.first)}
            db.execute(insert, (json.dumps(body),), prepare=True)
    plans = db.execute(
        "select custom_plans, generic_plans from pg_prepared_statements where statement like %s",
        ('WITH pgrst_source AS (INSERT INTO "public"."peer_messages"%',),
    ).fetchone()
    assert plans == (5, 3)
    assert db.execute("select count(*) from public.peer_messages where room_id = %s", (room.id,)).fetchone()[0] == 8
