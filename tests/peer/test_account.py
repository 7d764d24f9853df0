"""An account deleted after a peer session: its rows go with it, and the other participant keeps their own."""

from __future__ import annotations

import psycopg
from psycopg.types.json import Jsonb

from tests.support.peers import check_in, matched_room, paid_user, rubric_scores, under_way


def test_the_other_participant_keeps_the_room_and_their_own_rows(db: psycopg.Connection) -> None:
    room = matched_room(db, paid_user(db), paid_user(db))
    under_way(db, room)
    leaving, staying = room.first, room.second
    check_in(db, room.id, staying)
    for user in (leaving, staying):
        db.execute("insert into public.peer_messages (room_id, user_id, body) values (%s, %s, 'Hi')", (room.id, user))
    for author, turn in ((leaving, room.turn_ids[0]), (staying, room.turn_ids[1])):
        db.execute(
            "insert into public.peer_feedback (turn_id, author_id, scores) values (%s, %s, %s)",
            (turn, author, Jsonb(rubric_scores(db, turn))),
        )
    db.execute("insert into public.peer_blocks (blocker_id, blocked_id) values (%s, %s)", (staying, leaving))
    db.execute(
        "insert into public.peer_reports (room_id, reporter_id, reported_id, reason) values (%s, %s, %s, 'harassment')",
        (room.id, staying, leaving),
    )
    db.execute("update public.subscriptions set cancel_at_period_end = true where user_id = %s", (leaving,))

    db.execute("delete from auth.users where id = %s", (leaving,))

    def rows(query: str) -> list[tuple[object, ...]]:
        return db.execute(query, {"room": room.id}).fetchall()

    assert rows("select user_a, user_b from public.peer_rooms where id = %(room)s") == [(None, staying)]
    assert rows("select user_id from public.peer_seats where room_id = %(room)s") == [(staying,)]
    assert rows(
        "select interviewer_id, candidate_id from public.peer_turns where room_id = %(room)s order by turn"
    ) == [(None, staying), (staying, None)]
    assert rows("select user_id from public.peer_messages where room_id = %(room)s") == [(staying,)]
    assert rows("select count(*) from public.peer_feedback where room_id = %(room)s") == [(0,)]
    assert rows("select reporter_id, reported_id from public.peer_reports where room_id = %(room)s") == [
        (staying, None)
    ]
    assert db.execute("select count(*) from public.peer_blocks where blocker_id = %s", (staying,)).fetchone() == (0,)
    export = db.execute("select service.export_account(%s)", (staying,)).fetchone()[0]
    assert [r["id"] for r in export["peer_rooms"]] == [str(room.id)]
    assert len(export["peer_messages"]) == 1


def test_the_export_shows_received_feedback_only_once_it_may_be_read(db: psycopg.Connection) -> None:
    room = matched_room(db, paid_user(db), paid_user(db))
    under_way(db, room)
    db.execute(
        "insert into public.peer_feedback (turn_id, author_id, scores) values (%s, %s, %s)",
        (room.turn_ids[0], room.first, Jsonb(rubric_scores(db, room.turn_ids[0]))),
    )
    export = db.execute("select service.export_account(%s)", (room.second,)).fetchone()[0]
    assert export["peer_feedback"] == []
    assert len(db.execute("select service.export_account(%s)", (room.first,)).fetchone()[0]["peer_feedback"]) == 1
