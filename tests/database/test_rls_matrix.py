"""Who may do what to whom, for every table the API exposes, asserted case by case.

The tables come from the catalog (every table in a schema `supabase/config.toml` exposes), so a new table
without expectations here fails the suite. Identity is switched exactly as PostgREST does it: role and
`request.jwt.claims`, local to a transaction.

Outcomes: Y the action happens, H it silently touches nothing (RLS filters the row out), D refused for lack
of a privilege, R refused by a policy's WITH CHECK.
"""

from __future__ import annotations

import tomllib
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql
from psycopg.types.json import Jsonb

from functions.evaluation.rubrics import CATEGORY_CRITERIA
from shared.db.rls import acting_as
from tests.support.dataset import NEXT_POSITION, UserData, populate_user
from tests.support.identities import ANON, SERVICE, sign_up, user_claims
from tests.support.peers import matched_room, paid_user, rubric_scores, under_way

ROLES = ("anon", "owner", "other", "service_role")
ACTIONS = ("select", "insert", "update", "delete")
Y, H, D, R = "Y", "H", "D", "R"


@dataclass(frozen=True)
class Rules:
    select: tuple[str, str, str, str]
    insert: tuple[str, str, str, str]
    update: tuple[str, str, str, str]
    delete: tuple[str, str, str, str]
    # The column an update sets to itself: one the owner may change where any is granted.
    update_column: str = "updated_at"


SERVICE_WRITES_OWNER_READS = dict(select=(D, Y, H, Y), insert=(D, D, D, Y), update=(D, D, D, Y), delete=(D, D, D, Y))
SERVICE_ONLY_ADMIN_READS = dict(select=(D, H, H, Y), insert=(D, D, D, Y), update=(D, D, D, Y), delete=(D, D, D, Y))

EXPECTATIONS: dict[str, Rules] = {
    "public.users": Rules(
        select=(D, Y, H, Y),
        insert=(D, D, D, Y),
        update=(D, Y, H, Y),
        delete=(D, D, D, Y),
        update_column="display_name",
    ),
    "public.user_profiles": Rules(
        select=(D, Y, H, Y),
        insert=(D, Y, R, Y),
        update=(D, Y, H, Y),
        delete=(D, Y, H, Y),
        update_column="target_role",
    ),
    "public.plans": Rules(select=(Y, Y, Y, Y), insert=(D, D, D, Y), update=(D, D, D, Y), delete=(D, D, D, Y)),
    "public.achievement_catalog": Rules(
        select=(Y, Y, Y, Y), insert=(D, D, D, Y), update=(D, D, D, Y), delete=(D, D, D, Y)
    ),
    "public.billing_customers": Rules(**SERVICE_WRITES_OWNER_READS),
    "public.subscriptions": Rules(**SERVICE_WRITES_OWNER_READS),
    "public.subscription_changes": Rules(**SERVICE_WRITES_OWNER_READS),
    "public.usage_counters": Rules(**SERVICE_WRITES_OWNER_READS),
    "public.questions": Rules(select=(D, Y, Y, Y), insert=(D, D, D, Y), update=(D, D, D, Y), delete=(D, D, D, Y)),
    # The owner answered the target question; the other user did not.
    "public.question_answer_keys": Rules(**SERVICE_WRITES_OWNER_READS),
    "public.vocabulary": Rules(select=(Y, Y, Y, Y), insert=(D, D, D, Y), update=(D, D, D, Y), delete=(D, D, D, Y)),
    "public.practice_sessions": Rules(
        select=(D, Y, H, Y),
        insert=(D, Y, R, Y),
        update=(D, Y, H, Y),
        delete=(D, D, D, Y),
        update_column="status",
    ),
    "public.session_questions": Rules(**SERVICE_WRITES_OWNER_READS),
    "public.served_questions": Rules(**SERVICE_WRITES_OWNER_READS),
    "public.responses": Rules(
        select=(D, Y, H, Y),
        insert=(D, Y, R, Y),
        update=(D, Y, H, Y),
        delete=(D, D, D, Y),
        update_column="answer_text",
    ),
    "public.question_ratings": Rules(
        select=(D, Y, H, Y),
        insert=(D, Y, R, Y),
        update=(D, Y, H, Y),
        delete=(D, Y, H, Y),
        update_column="rating",
    ),
    "public.achievements": Rules(**SERVICE_WRITES_OWNER_READS),
    "public.user_progress": Rules(**SERVICE_WRITES_OWNER_READS),
    "public.progress_totals": Rules(**SERVICE_WRITES_OWNER_READS),
    "public.category_abilities": Rules(**SERVICE_WRITES_OWNER_READS),
    "public.analytics_daily": Rules(**SERVICE_ONLY_ADMIN_READS),
    "public.ai_usage": Rules(**SERVICE_ONLY_ADMIN_READS),
    # Moderators (app_metadata.role) read versions and every report and transition: tests/curation.
    "public.question_versions": Rules(**SERVICE_ONLY_ADMIN_READS),
    "public.question_reports": Rules(
        select=(D, Y, H, Y), insert=(D, Y, R, Y), update=(D, D, D, Y), delete=(D, D, D, Y)
    ),
    # Append-only for everyone; a non-moderator's insert is refused by its trigger before any policy.
    "public.question_transitions": Rules(
        select=(D, H, H, Y), insert=(D, D, D, Y), update=(D, D, D, D), delete=(D, D, D, D)
    ),
    # Peer sessions: the owner met `peer` in a room and `third` in another; `other` met neither.
    "public.peer_requests": Rules(
        select=(D, Y, H, Y),
        insert=(D, Y, R, Y),
        update=(D, H, H, Y),  # only a waiting request may be changed, and only to cancelled (tests/abuse)
        delete=(D, D, D, Y),
        update_column="status",
    ),
    "public.peer_rooms": Rules(**SERVICE_WRITES_OWNER_READS),
    "public.peer_seats": Rules(select=(D, Y, H, Y), insert=(D, Y, R, Y), update=(D, D, D, Y), delete=(D, D, D, Y)),
    "public.peer_turns": Rules(**SERVICE_WRITES_OWNER_READS),
    # The owner's key is of the turn they interview in.
    "public.peer_turn_keys": Rules(**SERVICE_WRITES_OWNER_READS),
    "public.peer_messages": Rules(
        select=(D, Y, H, Y),
        insert=(D, Y, R, Y),
        update=(D, D, D, Y),
        delete=(D, D, D, Y),
        update_column="body",
    ),
    "public.peer_feedback": Rules(select=(D, Y, H, Y), insert=(D, Y, R, Y), update=(D, D, D, Y), delete=(D, D, D, Y)),
    "public.peer_blocks": Rules(select=(D, Y, H, Y), insert=(D, Y, R, Y), update=(D, D, D, Y), delete=(D, D, D, Y)),
    # Only moderators change a report's status (tests/peer); its reporter reads it.
    "public.peer_reports": Rules(
        select=(D, Y, H, Y),
        insert=(D, Y, R, Y),
        update=(D, H, H, Y),
        delete=(D, D, D, Y),
        update_column="status",
    ),
}

CONFIG = Path(__file__).resolve().parents[2] / "supabase" / "config.toml"


def exposed_schemas() -> list[str]:
    return tomllib.loads(CONFIG.read_text())["api"]["schemas"]


@dataclass
class World:
    owner: UserData
    other: uuid.UUID
    newcomer: uuid.UUID
    claims: dict[str, dict[str, Any]] = field(default_factory=dict)
    targets: dict[str, dict[str, Any]] = field(default_factory=dict)
    new_rows: dict[str, dict[str, Any]] = field(default_factory=dict)
    setup: dict[str, str] = field(default_factory=dict)


@pytest.fixture(scope="module")
def world(database_url: str) -> World:
    """Committed once per module: the owner's data, another user, and a newcomer to insert rows for."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        owner = populate_user(conn)
        # Ending with its period, so the service may delete the owner (a user Stripe still charges may not be
        # deleted at all: test_users_and_data); this matrix is about who may, not when.
        conn.execute("update public.subscriptions set cancel_at_period_end = true where user_id = %s", (owner.user_id,))
        other = sign_up(conn)
        newcomer = sign_up(conn)
        one = lambda q, *p: conn.execute(q, p).fetchone()[0]  # noqa: E731
        monthly = one("select id from public.plans where code = 'monthly'")
        free = one("select id from public.plans where code = 'free'")
        # A plan states every flag and limit (no defaults): the new one copies the monthly plan's, as text.
        monthly_features, monthly_limits = conn.execute(
            "select features::text, usage_limits::text from public.plans where code = 'monthly'"
        ).fetchone()
        spare_question = one(
            "insert into public.questions (content, category, difficulty, experience_level, source)"
            " values ('A question nobody was served yet?', 'technical', 'hard', 'senior', 'ai')"
            " returning id"
        )
        n_session = one(
            "insert into public.practice_sessions (user_id, session_type) values (%s, 'quick') returning id",
            newcomer,
        )
        n_question = one(
            "insert into public.questions (content, category, difficulty, experience_level, source)"
            " values ('What did the newcomer get asked?', 'behavioral', 'easy', 'entry', 'ai')"
            " returning id"
        )
        n_served = one(
            "insert into public.session_questions (session_id, user_id, question_id, position)"
            f" values (%s, %s, %s, {NEXT_POSITION}) returning id",
            n_session,
            newcomer,
            n_question,
            n_session,
        )
        n_subscription = one(
            "insert into public.subscriptions (user_id, plan_id, status, stripe_customer_id, stripe_subscription_id)"
            " values (%s, %s, 'canceled', 'cus_newcomer', 'sub_newcomer_old') returning id",
            newcomer,
            monthly,
        )
        conn.execute(
            "insert into public.question_answer_keys (question_id, key_points) values (%s, '{Names a decision}')",
            (owner.question_id,),
        )
        owner_achievement = one("select id from public.achievements where user_id = %s", owner.user_id)
        owner_progress = one("select id from public.user_progress where user_id = %s", owner.user_id)
        owner_change = one("select id from public.subscription_changes where user_id = %s", owner.user_id)
        owner_ai = one("select id from public.ai_usage where user_id = %s", owner.user_id)
        owner_question_report = one(
            "insert into public.question_reports (user_id, question_id, reason)"
            " values (%s, %s, 'unclear') returning id",
            owner.user_id,
            owner.question_id,
        )
        approval = one(
            "insert into public.question_transitions (question_id, to_status, reason, actor)"
            " values (%s, 'active', 'Reviewed', 'operator') returning id",
            spare_question,
        )
        daily = one(
            "insert into public.analytics_daily (metric_date, metric_name, metric_value)"
            " values ('2026-01-01', 'signups', 3) returning id"
        )
        peer, third = paid_user(conn), paid_user(conn)
        room = matched_room(conn, owner.user_id, peer)
        under_way(conn, room)
        owner_request = one("select id from public.peer_requests where user_id = %s", owner.user_id)  # matched
        owner_message = one(
            "insert into public.peer_messages (room_id, user_id, body) values (%s, %s, 'Hello') returning id",
            room.id,
            owner.user_id,
        )
        owner_feedback = one(
            "insert into public.peer_feedback (turn_id, author_id, scores) values (%s, %s, %s) returning id",
            room.turn_ids[0],
            owner.user_id,
            Jsonb(rubric_scores(conn, room.turn_ids[0])),
        )
        conn.execute("insert into public.peer_blocks (blocker_id, blocked_id) values (%s, %s)", (owner.user_id, peer))
        owner_peer_report = one(
            "insert into public.peer_reports (room_id, reporter_id, reported_id, reason) values (%s, %s, %s, 'spam')"
            " returning id",
            room.id,
            owner.user_id,
            peer,
        )
        # A room with `third` that has begun, with only a turn without key or feedback: the owner's new rows.
        spare_room = one(
            "insert into public.peer_rooms (target_role, experience_level, user_a, user_b, starts_at, ends_at,"
            " feedback_due_at) values ('designer', 'mid', %s, %s, now() - interval '5 minutes',"
            " now() + interval '55 minutes', now() + interval '1 day') returning id",
            owner.user_id,
            third,
        )
        spare_turn = one(
            "insert into public.peer_turns (room_id, turn, interviewer_id, candidate_id, category)"
            " values (%s, 1, %s, %s, 'behavioral') returning id",
            spare_room,
            owner.user_id,
            third,
        )

    w = World(owner=owner, other=other, newcomer=newcomer)
    u = owner.user_id
    w.targets = {
        "public.users": {"id": u},
        "public.user_profiles": {"user_id": u},
        "public.plans": {"id": free},
        "public.achievement_catalog": {"achievement_type": "streak_30"},
        "public.billing_customers": {"user_id": u},
        "public.subscriptions": {"id": owner.subscription_id},
        "public.subscription_changes": {"id": owner_change},
        "public.usage_counters": {"user_id": u, "metric": "evaluations"},
        "public.questions": {"id": spare_question},
        "public.question_answer_keys": {"question_id": owner.question_id},
        "public.vocabulary": {"kind": "role", "term": "developer"},
        "public.practice_sessions": {"id": owner.session_id},
        "public.session_questions": {"id": owner.session_question_id},
        "public.served_questions": {"user_id": u, "question_id": owner.question_id},
        "public.responses": {"id": owner.response_id},
        "public.question_ratings": {"user_id": u, "question_id": owner.question_id},
        "public.achievements": {"id": owner_achievement},
        "public.user_progress": {"id": owner_progress},
        "public.progress_totals": {"user_id": u},
        "public.category_abilities": {"user_id": u, "category": "behavioral"},
        "public.analytics_daily": {"id": daily},
        "public.ai_usage": {"id": owner_ai},
        "public.question_versions": {"question_id": owner.question_id, "version": 1},
        "public.question_reports": {"id": owner_question_report},
        "public.question_transitions": {"id": approval},
        "public.peer_requests": {"id": owner_request},
        "public.peer_rooms": {"id": room.id},
        "public.peer_seats": {"room_id": room.id, "user_id": u},
        "public.peer_turns": {"id": room.turn_ids[0]},
        "public.peer_turn_keys": {"turn_id": room.turn_ids[0]},
        "public.peer_messages": {"id": owner_message},
        "public.peer_feedback": {"id": owner_feedback},
        "public.peer_blocks": {"blocker_id": u, "blocked_id": peer},
        "public.peer_reports": {"id": owner_peer_report},
    }
    n = newcomer
    w.new_rows = {
        "public.users": {"id": n, "email": "newcomer@example.test"},
        "public.user_profiles": {"user_id": n, "target_role": "analyst"},
        "public.plans": {
            "code": "pro",
            "name": "Pro",
            "price_cents": 4900,
            "billing_interval": "month",
            "features": monthly_features,
            "usage_limits": monthly_limits,
        },
        "public.achievement_catalog": {
            "achievement_type": "marathon",
            "title": "Marathon",
            "description": "Completed 500 practice sessions.",
            "figure": "sessions_completed",
            "threshold": 500,
            "display_order": 999,
        },
        "public.billing_customers": {"user_id": n, "stripe_customer_id": "cus_newcomer"},
        "public.subscriptions": {
            "user_id": n,
            "plan_id": monthly,
            "status": "active",
            "stripe_customer_id": "cus_newcomer",
            "stripe_subscription_id": "sub_newcomer",
        },
        "public.subscription_changes": {
            "subscription_id": n_subscription,
            "user_id": n,
            "new_status": "canceled",
            "new_plan_id": monthly,
            "occurred_at": "2026-01-01T00:00:00Z",
        },
        "public.usage_counters": {"user_id": n, "metric": "evaluations", "period_start": "2026-01-01"},
        "public.questions": {
            "content": "Which trade-offs did you weigh last?",
            "category": "technical",
            "difficulty": "medium",
            "experience_level": "mid",
            "source": "ai",
        },
        "public.question_answer_keys": {"question_id": spare_question, "key_points": ["Weighs cost"]},
        "public.vocabulary": {"kind": "tag", "term": "newcomer-tag", "canonical": "newcomer-tag"},
        "public.practice_sessions": {"user_id": n, "session_type": "full"},
        "public.session_questions": {
            "session_id": n_session,
            "user_id": n,
            "question_id": spare_question,
            "position": 1000,
        },
        "public.served_questions": {"user_id": n, "question_id": spare_question, "session_question_id": uuid.uuid4()},
        "public.responses": {
            "session_id": n_session,
            "session_question_id": n_served,
            "user_id": n,
            "answer_text": "My answer",
        },
        "public.question_ratings": {"user_id": n, "question_id": n_question, "rating": 5},
        "public.achievements": {"user_id": n, "achievement_type": "first_session"},
        "public.user_progress": {
            "user_id": n,
            "metric_name": "sessions_completed",
            "period": "all_time",
            "period_start": "2026-01-01",
            "metric_value": 1,
        },
        "public.progress_totals": {"user_id": n, "questions_answered": 1},
        "public.category_abilities": {"user_id": n, "category": "technical"},
        "public.analytics_daily": {"metric_date": "2026-01-02", "metric_name": "signups", "metric_value": 1},
        "public.ai_usage": {
            "user_id": n,
            "purpose": "evaluation",
            "model": "m",
            "latency_ms": 1,
            "succeeded": True,
        },
        "public.question_versions": {
            "question_id": spare_question,
            "version": 2,
            "content": "A question nobody was served yet, reworded?",
            "category": "technical",
            "difficulty": "hard",
            "experience_level": "senior",
        },
        "public.question_reports": {"user_id": n, "question_id": n_question, "reason": "unclear"},
        "public.question_transitions": {"question_id": spare_question, "to_status": "active", "reason": "Fine"},
        # Peer rows are the owner's (peer sessions need a paid plan, which the newcomer lacks).
        "public.peer_requests": {
            "user_id": u,
            "target_role": "designer",
            "experience_level": "lead",
            "available_from": datetime.now(UTC),
            "available_until": datetime.now(UTC) + timedelta(hours=3),
            "timezone": "UTC",
        },
        "public.peer_rooms": {
            "target_role": "designer",
            "experience_level": "mid",
            "user_a": n,
            "user_b": other,
            "starts_at": "2026-12-01T10:00:00Z",
            "ends_at": "2026-12-01T11:00:00Z",
            "feedback_due_at": "2026-12-02T11:00:00Z",
        },
        "public.peer_seats": {"room_id": spare_room, "user_id": u},
        "public.peer_turns": {
            "room_id": spare_room,
            "turn": 2,
            "interviewer_id": third,
            "candidate_id": u,
            "category": "behavioral",
        },
        "public.peer_turn_keys": {"turn_id": spare_turn, "interviewer_id": u, "key_points": ["Asks why"]},
        "public.peer_messages": {"room_id": room.id, "user_id": u, "body": "Ready?"},
        "public.peer_feedback": {
            "turn_id": spare_turn,
            "author_id": u,
            "scores": Jsonb({c.name: 3 for c in CATEGORY_CRITERIA["behavioral"]}),
        },
        "public.peer_blocks": {"blocker_id": u, "blocked_id": third},
        "public.peer_reports": {"room_id": spare_room, "reporter_id": u, "reported_id": third, "reason": "other"},
    }
    # public.users rows come from the signup trigger; make room for the insert being attempted.
    w.setup = {"public.users": f"delete from public.users where id = '{n}'"}
    w.claims = {"anon": ANON, "owner": user_claims(u), "other": user_claims(other), "service_role": SERVICE}
    # Inserts are attempted for the newcomer: as the newcomer ("owner") or as someone else ("other").
    w.claims["insert:owner"] = user_claims(n)
    for table in EXPECTATIONS:
        if table.startswith("public.peer_"):
            w.claims[f"{table}:insert:owner"] = user_claims(u)
    return w


def _where(target: dict[str, Any]) -> tuple[sql.Composable, list[Any]]:
    clauses = [sql.SQL("{} = {}").format(sql.Identifier(k), sql.Placeholder()) for k in target]
    return sql.SQL(" and ").join(clauses), list(target.values())


def attempt(conn: psycopg.Connection, world: World, table: str, action: str, role: str) -> str:
    schema, name = table.split(".")
    ident = sql.Identifier(schema, name)
    rules = EXPECTATIONS[table]
    claims = world.claims.get(f"{table}:{action}:{role}") or world.claims.get(f"{action}:{role}", world.claims[role])
    outcome = "?"
    with conn.transaction():
        if action == "insert" and table in world.setup:
            conn.execute(world.setup[table])  # type: ignore[arg-type]
        try:
            with acting_as(conn, claims):
                if action == "select":
                    where, params = _where(world.targets[table])
                    count = conn.execute(
                        sql.SQL("select count(*) from {} where {}").format(ident, where), params
                    ).fetchone()[0]
                    outcome = Y if count == 1 else H
                elif action == "insert":
                    row = world.new_rows[table]
                    conn.execute(
                        sql.SQL("insert into {} ({}) values ({})").format(
                            ident,
                            sql.SQL(", ").join(map(sql.Identifier, row)),
                            sql.SQL(", ").join(sql.Placeholder() * len(row)),
                        ),
                        list(row.values()),
                    )
                    outcome = Y
                elif action == "update":
                    where, params = _where(world.targets[table])
                    column = sql.Identifier(rules.update_column)
                    cur = conn.execute(
                        sql.SQL("update {} set {} = {} where {}").format(ident, column, column, where),
                        params,
                    )
                    outcome = Y if cur.rowcount == 1 else H
                else:
                    where, params = _where(world.targets[table])
                    cur = conn.execute(sql.SQL("delete from {} where {}").format(ident, where), params)
                    outcome = Y if cur.rowcount == 1 else H
        except psycopg.errors.InsufficientPrivilege as error:
            outcome = R if "row-level security" in str(error) else D
        raise psycopg.Rollback  # every attempt leaves the database as it was
    return outcome


def test_every_exposed_table_has_expectations(db: psycopg.Connection) -> None:
    tables = {
        f"{schema}.{name}"
        for schema, name in db.execute(
            "select schemaname, tablename from pg_tables where schemaname = any(%s)", (exposed_schemas(),)
        ).fetchall()
    }
    assert tables == set(EXPECTATIONS), (
        f"tables without expectations: {sorted(tables - set(EXPECTATIONS))}; "
        f"expectations without tables: {sorted(set(EXPECTATIONS) - tables)}"
    )


def test_row_level_security_is_on_for_every_table(db: psycopg.Connection) -> None:
    off = db.execute(
        "select n.nspname || '.' || c.relname from pg_class c join pg_namespace n on n.oid = c.relnamespace"
        " where c.relkind in ('r', 'p') and n.nspname = any(%s) and not c.relrowsecurity",
        (["private", *exposed_schemas()],),
    ).fetchall()
    assert off == []


@pytest.fixture(scope="module")
def connection(database_url: str) -> Iterator[psycopg.Connection]:
    with psycopg.connect(database_url) as conn:
        yield conn


CASES = [(table, action, role) for table in EXPECTATIONS for action in ACTIONS for role in ROLES]


@pytest.mark.parametrize(("table", "action", "role"), CASES, ids=["-".join(c) for c in CASES])
def test_access(world: World, connection: psycopg.Connection, table: str, action: str, role: str) -> None:
    expected = getattr(EXPECTATIONS[table], action)[ROLES.index(role)]
    assert attempt(connection, world, table, action, role) == expected
