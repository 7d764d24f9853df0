"""Live peer interviews: the matcher over 10,000 waiting requests, the wait to a match over a simulated day of
arrivals, and chat inserts under RLS in 1,000 concurrent rooms.

    .venv/bin/python -m bench.peer [--runs 3] [--day-arrivals 3000] [--chat-inserts 2000]

Runs on its own scratch database (`prep_bench_peer` on DATABASE_URL's server, or the embedded one).

- Matching: 10,000 waiting requests of paid users over 50 classes (10 roles x 5 levels), windows of 1-4 hours
  starting within the next 8 hours, written with the on-request match off (so they all wait), then one run of
  service.match_peer_requests(); timed `--runs` times from the same requests, median quoted (target <= 1 s).
- Simulated day: arrivals over 24 hours (rate following the time of day, classes Zipf-weighted, 70% "now for
  1-3 hours", 30% "later today"), each written with the real triggers (matched on arrival when a request fits);
  the clock is simulated by moving every waiting request's times back by the time between arrivals, and the
  scheduled run (settle, then match) is called every simulated 15 minutes. Wait = simulated time from arrival to
  the room; requests that expire unmatched are counted apart.
- Chat: 1,000 rooms under way; each measured insert is one request, sent as `authenticated` (RLS: participant
  check) and as `service_role`, in four ways side by side (bench/postgrest.py explains the plan cache):
  PostgREST's statements prepared on a connection per role -- what PostgREST does, and the figure that answers
  the target (p95 ratio's median over rounds <= 1.3); the same on one connection whose role changes at every
  request; PostgREST's statements never prepared; and the plain insert first measured. pg_stat_statements then
  shows, per way and role, how many calls were planned and the server's planning and execution ms a call.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import statistics
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
from rich.console import Console

from bench import postgrest
from bench.database import dbname, describe, fresh_scratch_database
from shared.db.rls import acting_as

DB_NAME = "prep_bench_peer"
OUT_FILE = Path(__file__).resolve().parent / "out" / "peer.json"
MATCHING_TARGET_SECONDS = 1.0
CHAT_TARGET_RATIO = 1.3
ROLES = [
    "software engineer", "data scientist", "product manager", "designer", "devops engineer",
    "engineering manager", "data analyst", "security engineer", "consultant", "recruiter",
]  # fmt: skip
LEVELS = ["entry", "mid", "senior", "lead", "executive"]
SERVICE_CLAIMS: dict[str, Any] = {"role": "service_role", "iss": "supabase-local"}

console = Console()


def claims(user: uuid.UUID) -> dict[str, Any]:
    now = int(time.time())
    return {"sub": str(user), "role": "authenticated", "aud": "authenticated", "iat": now, "exp": now + 3600,
            "app_metadata": {"provider": "email"}, "user_metadata": {}}  # fmt: skip


def paid_users(conn: psycopg.Connection, count: int) -> list[uuid.UUID]:
    """`count` signed-up users with an active monthly subscription, in two statements."""
    users = [uuid.uuid4() for _ in range(count)]
    conn.execute(
        "insert into auth.users (instance_id, id, aud, role, email, raw_app_meta_data, raw_user_meta_data,"
        " email_confirmed_at, created_at, updated_at)"
        " select '00000000-0000-0000-0000-000000000000', u, 'authenticated', 'authenticated',"
        " 'peer-' || u || '@example.test', '{\"provider\": \"email\"}', '{}', now(), now(), now()"
        " from unnest(%s::uuid[]) u",
        (users,),
    )
    conn.execute(
        "insert into public.subscriptions (user_id, plan_id, status, stripe_customer_id, stripe_subscription_id)"
        " select u, (select id from public.plans where code = 'monthly'), 'active', 'cus_' || u, 'sub_' || u"
        " from unnest(%s::uuid[]) u",
        (users,),
    )
    return users


def ten_thousand_waiting(conn: psycopg.Connection, users: list[uuid.UUID], seed: int) -> None:
    rng = random.Random(seed)
    rows = []
    for user in users:
        start = rng.uniform(0, 8)
        rows.append((user, rng.choice(ROLES), rng.choice(LEVELS), start, start + rng.uniform(1, 4)))
    conn.execute("alter table public.peer_requests disable trigger match_on_request")
    with conn.cursor() as cur:
        cur.executemany(
            "insert into public.peer_requests (user_id, target_role, experience_level, available_from,"
            " available_until, timezone) values (%s, %s, %s, now() + %s::float8 * interval '1 hour',"
            " now() + %s::float8 * interval '1 hour', 'Europe/Paris')",
            [(u, r, lv, a, b) for u, r, lv, a, b in rows],
        )
    conn.execute("alter table public.peer_requests enable trigger match_on_request")


def clear_peer_sessions(conn: psycopg.Connection) -> None:
    conn.execute("truncate public.peer_rooms, public.peer_requests cascade")


def bench_matching(url: str, runs: int) -> dict[str, Any]:
    seconds, opened = [], []
    with psycopg.connect(url, autocommit=True) as conn:
        users = paid_users(conn, 10_000)
        conn.execute("vacuum analyze")
        for run in range(runs):
            clear_peer_sessions(conn)
            ten_thousand_waiting(conn, users, seed=run)
            conn.execute("analyze public.peer_requests")
            started = time.perf_counter()
            result = conn.execute("select service.match_peer_requests()").fetchone()[0]  # type: ignore[index]
            seconds.append(time.perf_counter() - started)
            opened.append(result["peer_rooms_opened"])
            console.print(f"  matching run {run + 1}: {seconds[-1]:.3f} s, {opened[-1]} rooms opened")
        clear_peer_sessions(conn)
    return {
        "waiting": 10_000,
        "runs_seconds": [round(s, 4) for s in seconds],
        "median_seconds": round(statistics.median(seconds), 4),
        "rooms_opened": opened,
        "target_seconds": MATCHING_TARGET_SECONDS,
    }


def arrival_times(count: int, rng: random.Random) -> list[float]:
    """Hours since midnight, denser in the evening (rate 1 + 0.8 sin, peak at 20:00)."""
    times: list[float] = []
    while len(times) < count:
        hour = rng.uniform(0, 24)
        if rng.uniform(0, 1.8) <= 1 + 0.8 * math.sin((hour - 14) / 24 * 2 * math.pi):
            times.append(hour)
    return sorted(times)


def bench_simulated_day(url: str, arrivals: int) -> dict[str, Any]:
    rng = random.Random(7)
    classes = [(role, level) for role in ROLES[:5] for level in LEVELS[:4]]
    weights = [1 / (rank + 1) for rank in range(len(classes))]
    times = arrival_times(arrivals, rng)
    arrived: dict[uuid.UUID, float] = {}
    waits: dict[uuid.UUID, float] = {}
    with psycopg.connect(url, autocommit=True) as conn:
        clear_peer_sessions(conn)
        users = paid_users(conn, arrivals)
        clock, next_schedule = 0.0, 0.25

        def advance(to: float) -> None:
            nonlocal clock
            if to > clock:
                conn.execute(
                    "update public.peer_requests set available_from = available_from - %s::float8 * interval '1 hour',"
                    " available_until = available_until - %s::float8 * interval '1 hour',"
                    " priority_at = priority_at - %s::float8 * interval '1 hour' where status = 'waiting'",
                    (to - clock,) * 3,
                )
                clock = to

        def record_matches() -> None:
            for (request,) in conn.execute(
                "select id from public.peer_requests where status = 'matched' and id = any(%s)",
                ([r for r in arrived if r not in waits],),
            ).fetchall():
                waits[request] = clock - arrived[request]

        for user, at in zip(users, times, strict=True):
            while next_schedule <= at:
                advance(next_schedule)
                conn.execute("select service.settle_peer_rooms(now())")
                conn.execute("select service.match_peer_requests()")
                record_matches()
                next_schedule += 0.25
            advance(at)
            role, level = rng.choices(classes, weights)[0]
            start = 0.0 if rng.random() < 0.7 else rng.uniform(1, 8)
            length = rng.uniform(1, 3) if start == 0 else 2.0
            request = conn.execute(
                "insert into public.peer_requests (user_id, target_role, experience_level, available_from,"
                " available_until, timezone) values (%s, %s, %s, now() + %s::float8 * interval '1 hour',"
                " now() + %s::float8 * interval '1 hour', 'UTC') returning id",
                (user, role, level, start, start + length),
            ).fetchone()[0]  # type: ignore[index]
            arrived[request] = at
            record_matches()
        expired = conn.execute("select count(*) from public.peer_requests where status = 'expired'").fetchone()[0]  # type: ignore[index]
        clear_peer_sessions(conn)
    minutes = sorted(w * 60 for w in waits.values())
    return {
        "arrivals": arrivals,
        "classes": len(classes),
        "matched": len(waits),
        "matched_share": round(len(waits) / arrivals, 4),
        "expired_unmatched": expired,
        "p50_wait_minutes": round(statistics.median(minutes), 1),
        "p95_wait_minutes": round(minutes[int(0.95 * (len(minutes) - 1))], 1),
    }


def p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[int(0.95 * (len(ordered) - 1))]


MESSAGE = "Could you say more about the trade-off?"
PLAIN_INSERT = "insert into public.peer_messages (room_id, user_id, body) values (%s, %s, %s)"
POSTGREST_INSERT = postgrest.insert_minimal("peer_messages", {"body": "text", "room_id": "uuid", "user_id": "uuid"})


@dataclass(frozen=True)
class ChatWay:
    """One way a chat message reaches the database: the statement's shape, whether it is prepared, and whether
    both sides share one connection (its role changing at every request) or each has its own."""

    key: str
    what: str
    postgrest_shape: bool
    prepare_threshold: int | None
    shared_connection: bool


CHAT_WAYS = [
    ChatWay("prepared", "PostgREST's statements, prepared, a connection per role (as PostgREST serves a role's"
            " requests: plans cached)", True, 0, False),
    ChatWay("prepared_role_switching", "PostgREST's statements, prepared, one connection sending the same"
            " insert alternately as each role (planned again at every request)", True, 0, True),
    ChatWay("unprepared", "PostgREST's statements, never prepared, a connection per role (a client behind a"
            " transaction pooler: planned at every request)", True, None, False),
    ChatWay("plain", "a plain insert, one connection whose role changes at every request, psycopg's defaults"
            " (the figure first measured: planned at every request)", False, 5, True),
]  # fmt: skip


class ChatClient:
    def __init__(self, url: str, way: ChatWay) -> None:
        self.way = way
        first = psycopg.connect(url, prepare_threshold=way.prepare_threshold)
        self.connections = {"authenticated": first, "service_role": first}
        if not way.shared_connection:
            self.connections["service_role"] = psycopg.connect(url, prepare_threshold=way.prepare_threshold)

    def send(self, side: str, room: uuid.UUID, user: uuid.UUID) -> float:
        """One message as one request; its seconds."""
        conn = self.connections[side]
        request_claims = claims(user) if side == "authenticated" else SERVICE_CLAIMS
        started = time.perf_counter()
        if self.way.postgrest_shape:
            with postgrest.request(conn, request_claims, "POST", "/peer_messages"):
                body = {"body": MESSAGE, "room_id": str(room), "user_id": str(user)}
                conn.execute(POSTGREST_INSERT, (json.dumps(body),)).fetchone()
        else:
            with acting_as(conn, request_claims):
                conn.execute(PLAIN_INSERT, (room, user, MESSAGE))
            conn.commit()
        return time.perf_counter() - started

    def close(self) -> None:
        for conn in set(self.connections.values()):
            conn.close()


def chat_rooms(url: str) -> list[tuple[uuid.UUID, uuid.UUID, uuid.UUID]]:
    """1,000 rooms under way (2,000 paid users matched in pairs on arrival)."""
    with psycopg.connect(url, autocommit=True) as conn:
        clear_peer_sessions(conn)
        users = paid_users(conn, 2_000)
        for first, second in zip(users[::2], users[1::2], strict=True):
            for user in (first, second):  # the second is matched with the first on arrival
                conn.execute(
                    "insert into public.peer_requests (user_id, target_role, experience_level, available_from,"
                    " available_until, timezone) values (%s, 'software engineer', 'mid', now(),"
                    " now() + interval '3 hours', 'UTC')",
                    (user,),
                )
        rooms = conn.execute("select id, user_a, user_b from public.peer_rooms").fetchall()
        assert len(rooms) == 1_000, len(rooms)
        conn.execute("update public.peer_rooms set starts_at = now() - interval '5 minutes'")
        conn.execute("vacuum analyze")
    return rooms


def senders(rooms: list[tuple[uuid.UUID, uuid.UUID, uuid.UUID]], count: int, rng: random.Random) -> list[Any]:
    """`count` (room, participant) picks, each participant at most once per 2,000 so that nobody reaches the
    limit of 30 messages a minute (each pick sends one message per way and side)."""
    everyone = [(room, user) for room, a, b in rooms for user in (a, b)]
    picks: list[Any] = []
    while len(picks) < count:
        picks += rng.sample(everyone, min(len(everyone), count - len(picks)))
    return picks


def bench_chat(url: str, inserts: int, rounds: int) -> dict[str, Any]:
    """Every way side by side: each pick is sent by every way, as authenticated and as service_role in
    alternating order, so machine noise hits all alike; p95 of each side per round, ratio's median over rounds.
    Then, per way, 300 requests a side with pg_stat_statements: how often the server planned, and what it cost."""
    rng = random.Random(11)
    rooms = chat_rooms(url)
    with psycopg.connect(url, autocommit=True) as admin:
        server = postgrest.ServerTimes(admin, dbname(url))
        server.enable()
        clients = [ChatClient(url, way) for way in CHAT_WAYS]
        ways: dict[str, Any] = {way.key: {"what": way.what, "rounds": []} for way in CHAT_WAYS}
        for round_number in range(rounds + 1):  # the first round warms up and is not counted
            timings = {way.key: {"authenticated": [], "service_role": []} for way in CHAT_WAYS}
            for n, (room, user) in enumerate(senders(rooms, inserts, rng)):
                for client in clients:
                    for side in ["authenticated", "service_role"] if n % 2 else ["service_role", "authenticated"]:
                        timings[client.way.key][side].append(client.send(side, room, user))
            admin.execute("delete from public.peer_messages")  # the next round starts under the rate limit
            if round_number == 0:
                continue
            for key, sides in timings.items():
                auth_p95, service_p95 = p95(sides["authenticated"]) * 1000, p95(sides["service_role"]) * 1000
                ways[key]["rounds"].append({"authenticated_p95_ms": round(auth_p95, 3),
                                            "service_p95_ms": round(service_p95, 3),
                                            "ratio": round(auth_p95 / service_p95, 3)})  # fmt: skip
            console.print(f"  chat round {round_number}: " + ", ".join(
                f"{key} {ways[key]['rounds'][-1]['ratio']:.2f}" for key in ways))  # fmt: skip
        for client in clients:
            server.reset()
            for room, user in senders(rooms, 300, rng):
                for side in ("authenticated", "service_role"):
                    client.send(side, room, user)
            admin.execute("delete from public.peer_messages")
            prefix = "WITH pgrst_source" if client.way.postgrest_shape else "insert into public.peer_messages"
            ways[client.way.key]["server"] = server.of(prefix)
            client.close()
    for figures in ways.values():
        figures["ratio_p95_median"] = statistics.median(r["ratio"] for r in figures["rounds"])
    return {
        "rooms": 1_000,
        "inserts_per_side_per_round": inserts,
        "ways": ways,
        # The figure first measured (a plain insert, planned at every request), under its first name.
        "ratio_p95_median": ways["plain"]["ratio_p95_median"],
        "prepared_ratio_p95_median": ways["prepared"]["ratio_p95_median"],
        "target_ratio": CHAT_TARGET_RATIO,
    }


def print_chat(chat: dict[str, Any]) -> None:
    for key, figures in chat["ways"].items():
        ratio = figures["ratio_p95_median"]
        console.print(f"chat insert p95 authenticated / service_role, {key}: median ratio {ratio:.2f}")
        console.print(f"    {figures['what']}")
        for role, stats in sorted(figures["server"].items()):
            console.print(
                f"    server, {role}: planned {stats['plans']} of {stats['calls']} calls, planning"
                f" {stats['plan_ms_per_call']:.3f} ms + execution {stats['exec_ms_per_call']:.3f} ms a call"
            )
    console.print(
        f"target <= {CHAT_TARGET_RATIO}: PostgREST prepares its statements and a pooled connection keeps serving"
        f" the authenticated role, so the RLS plan is made once per connection: the prepared figure"
        f" ({chat['prepared_ratio_p95_median']:.2f}) is the one that answers it; the others show what a client"
        " that has every request planned again pays."
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--day-arrivals", type=int, default=3000)
    parser.add_argument("--chat-inserts", type=int, default=1000)
    args = parser.parse_args()
    url = fresh_scratch_database(DB_NAME, "peer")
    console.print(f"peer benchmark on {describe(url)}")
    matching = bench_matching(url, args.runs)
    console.print(f"matching 10k waiting: median {matching['median_seconds']:.3f} s (target <= 1 s)")
    day = bench_simulated_day(url, args.day_arrivals)
    console.print(f"simulated day: {day}")
    chat = bench_chat(url, args.chat_inserts, args.runs)
    print_chat(chat)
    OUT_FILE.parent.mkdir(exist_ok=True)
    OUT_FILE.write_text(
        json.dumps(
            {"measured_at": datetime.now(UTC).isoformat(), "matching": matching, "simulated_day": day, "chat": chat},
            indent=2,
        )
    )
    console.print(f"wrote {OUT_FILE}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
