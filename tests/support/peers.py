"""Peer sessions for tests: paid users asking for a session, the room the matcher opens, a room under way."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import psycopg
from psycopg.types.json import Jsonb

from functions.evaluation.rubrics import CATEGORY_CRITERIA
from tests.support.identities import give_paid_plan, sign_up

CRITERIA = Jsonb(
    [
        {"name": "situation", "description": "Sets the scene", "weight": 0.5},
        {"name": "result", "description": "Says what came of it", "weight": 0.5},
    ]
)


@dataclass(frozen=True)
class Room:
    id: uuid.UUID
    first: uuid.UUID  # interviews in turn 1
    second: uuid.UUID  # interviews in turn 2
    turn_ids: tuple[uuid.UUID, uuid.UUID]


def paid_user(conn: psycopg.Connection) -> uuid.UUID:
    user = sign_up(conn)
    give_paid_plan(conn, user)
    return user


def keyed_question(conn: psycopg.Connection, level: str = "entry", category: str = "behavioral") -> uuid.UUID:
    """An active bank question of `level` with an answer key (what a room's turn is given)."""
    question = conn.execute(
        "insert into public.questions (content, category, difficulty, experience_level, source)"
        " values (%s, %s, 'easy', %s, 'curated') returning id",
        (f"Tell me about a time you changed course ({uuid.uuid4().hex[:12]}).", category, level),
    ).fetchone()[0]
    conn.execute(
        "insert into public.question_answer_keys (question_id, evaluation_criteria, key_points)"
        " values (%s, %s, '{Names the trade-off}')",
        (question, CRITERIA),
    )
    return question


def ask(
    conn: psycopg.Connection,
    user: uuid.UUID,
    *,
    role: str = "software engineer",
    level: str = "entry",
    start: datetime | None = None,
    hours: float = 3,
) -> uuid.UUID:
    """A peer request written as the service would (the triggers check it and try to match it at once)."""
    start = start or datetime.now(UTC)
    return conn.execute(
        "insert into public.peer_requests (user_id, target_role, experience_level, available_from, available_until,"
        " timezone) values (%s, %s, %s, %s, %s, 'Europe/Paris') returning id",
        (user, role, level, start, start + timedelta(hours=hours)),
    ).fetchone()[0]


def room_of(conn: psycopg.Connection, request: uuid.UUID) -> uuid.UUID | None:
    return conn.execute("select room_id from public.peer_requests where id = %s", (request,)).fetchone()[0]


def matched_room(conn: psycopg.Connection, first: uuid.UUID, second: uuid.UUID) -> Room:
    """Two requests of one class, the second matched to the first on arrival, the first checked in (which opens
    the turns); returns their room."""
    keyed_question(conn)
    keyed_question(conn)
    ask(conn, first)
    room = room_of(conn, ask(conn, second))
    assert room is not None, "the second request was not matched on arrival"
    # The first check-in opens the turns.
    check_in(conn, room, first)
    turns = conn.execute("select id from public.peer_turns where room_id = %s order by turn", (room,)).fetchall()
    return Room(room, first, second, (turns[0][0], turns[1][0]))


def check_in(conn: psycopg.Connection, room: uuid.UUID, user: uuid.UUID) -> None:
    conn.execute("insert into public.peer_seats (room_id, user_id) values (%s, %s)", (room, user))


def under_way(conn: psycopg.Connection, room: Room) -> None:
    """Move the room's start 5 minutes into the past (as if it had been scheduled an hour earlier)."""
    conn.execute(
        "update public.peer_rooms set starts_at = now() - interval '5 minutes',"
        " ends_at = now() + interval '55 minutes', feedback_due_at = now() + interval '1 day' where id = %s",
        (room.id,),
    )


def rubric_scores(db: psycopg.Connection, turn: uuid.UUID) -> dict[str, int]:
    """A score for every criterion of the turn's category rubric (functions/evaluation/rubrics.py): 1, 2, 3..."""
    category = db.execute("select category from public.peer_turns where id = %s", (turn,)).fetchone()[0]
    return {c.name: 1 + n % 5 for n, c in enumerate(CATEGORY_CRITERIA[category])}
