"""Question selection on the big database: the latency of one selection, and 32 concurrent ones in one bucket.

    .venv/bin/python -m bench.question_selection [--runs 500] [--threads 32 --phase-seconds 10 --rounds 3]

Runs on `prep_bench` (bench.generate_volume: 100k users, 1M questions, 10M served), as service_role, over
connections set up like production's (autocommit, no prepared statements, role and claims set per transaction).

Latency. USERS existing users each get 1,000 more served questions (10 finished sessions of 100): the first
HEAVY of them 600 in the queried bucket, the best-ranked ones, which the selection walks first and must skip,
and the rest spread over the whole bank by page sampling. Then RUNS calls, cycling through the users and two
request shapes (the bare bucket; with a target role and a tag), each time both
- private.question_candidates(user, request, 5): pure selection, and
- service.request_questions(user, request): quota, session start (its trigger serves), the session's list,
each in its own transaction rolled back, in alternating order, after one unmeasured pass. Target: p95 <= 20 ms.
Then EXPLAIN (ANALYZE, BUFFERS) of the selection's inner query (its text reproduced from the function body, with
a heavy user's parameters), the plan the function itself ran (captured with auto_explain), and, as the diagnosis
of what the plan costs, the inner query as shipped against a recommended form (RECOMMENDED_QUERY), interleaved.

Throughput. THREADS threads, each with its own connection and its own 8 users (distinct from the others),
request 5 questions of the same popular bucket, as fast as they can, in phases of PHASE_SECONDS:
- with tracking: private.serve_questions into the user's open session (what service.request_questions does
  for a continued session, without its per-user quota counter): selection plus the append-only
  session_questions inserts, committed;
- without: private.question_candidates only;
- and, to tell the cost of durable commits from that of the inserts and their locks, with tracking again but
  committed with synchronous_commit off (a diagnostic, not production's setting);
- and both again with the recommended selection (a what-if, in per-connection pg_temp functions): what tracking
  costs once selection is cheap.
ROUNDS rounds of all five, in an order reversed every other round so that the drift of the growing history
hits all alike; medians are compared. Target: with >= 0.8x without. Meanwhile pg_stat_activity is sampled for
what the backends wait on, and public.questions' n_tup_upd is read before and after (serving must update no
question row); afterwards, how many of the bucket's top questions carry a row lock's xmax (the foreign key check
of each session_questions insert takes FOR KEY SHARE on its question: a lock, though no update).

Everything added is marked (config {"bench": "question_selection"} on its sessions) and deleted at the end (then
the two tables are vacuumed), and by the next run if one was interrupted; the latency calls are rolled back.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, LiteralString

import psycopg
from psycopg.types.json import Jsonb
from rich.panel import Panel
from rich.table import Table

from bench.database import bench_url, dbname, describe, maintenance_url, read_marker
from bench.questions_common import (
    SERVICE_CLAIMS,
    caption,
    console,
    latency,
    machine,
    now_iso,
    revision,
    write_report,
)

BUCKET = {"category": "technical", "difficulty": "medium", "experience_level": "mid"}
SHAPES: dict[str, dict[str, Any]] = {
    "bucket": {},
    "role + tag": {"target_role": "software engineer", "tags": ["system-design"]},
}
WANTED = 5
MARK = {"bench": "question_selection"}
SESSIONS_PER_USER, PER_SESSION = 10, 100
IN_BUCKET = 600
USERS_PER_THREAD = 8
TARGET_P95_MS = 20.0
TARGET_RATIO = 0.8
APP_NAME = "bench.question_selection"
WITH, WITHOUT, ASYNC = "with tracking", "without", "with tracking, async commit"
WITH_FIXED, WITHOUT_FIXED = "with tracking, recommended selection", "without, recommended selection"
MODES = [WITH, WITHOUT, ASYNC, WITH_FIXED, WITHOUT_FIXED]

# private.question_candidates' inner query for one widening step, as in the function body (20261125000009),
# with its variables as parameters. FRAGMENTS must appear in the installed body, or the copy is stale.
INNER_QUERY: LiteralString = """
select c.id from (
  select q.id, q.rank_score
  from public.questions q
  where q.is_active
    and q.category = %(category)s::public.question_category
    and q.difficulty = %(difficulty)s::public.difficulty
    and q.experience_level = any(%(levels)s::public.experience_level[])
    and (%(role)s::text is null or q.target_role is null or lower(q.target_role) = lower(%(role)s::text))
    and (%(tags)s::text[] is null or q.tags && %(tags)s::text[])
    and q.id <> all(%(picked)s::uuid[])
    and not exists (
      select from public.session_questions s
      where s.user_id = %(user_id)s and s.question_id = q.id
    )
  order by q.rank_score desc
  limit %(pool)s
) c
order by c.rank_score + random() * 0.15 desc
limit %(wanted)s
"""
# The same step as the function could run it (the fix recommended): each level walked on its own, so the
# bucket index returns rows in rank order and LIMIT stops the walk; the never-served check probes the unique
# (user_id, question_id) index per candidate (OFFSET 0 keeps it a correlated subplan: as an anti join the planner
# materializes the user's whole history and rescans it per candidate); the tags test stays a filter on the walk
# (`is true`: as an indexable && the planner ANDs in a bitmap of every bank row with the tag).
RECOMMENDED_QUERY: LiteralString = """
select c.id from (
  select q.id, q.rank_score
  from public.questions q
  where q.is_active
    and q.category = %(category)s::public.question_category
    and q.difficulty = %(difficulty)s::public.difficulty
    and q.experience_level = %(level)s::public.experience_level
    and (%(role)s::text is null or q.target_role is null or lower(q.target_role) = lower(%(role)s::text))
    and (%(tags)s::text[] is null or (q.tags && %(tags)s::text[]) is true)
    and q.id <> all(%(picked)s::uuid[])
    and not exists (
      select from public.session_questions s
      where s.user_id = %(user_id)s and s.question_id = q.id
      offset 0
    )
  order by q.rank_score desc
  limit %(pool)s
) c
order by c.rank_score + random() * 0.15 desc
limit %(wanted)s
"""
FORMS: dict[str, LiteralString] = {"as shipped": INNER_QUERY, "recommended": RECOMMENDED_QUERY}
FRAGMENTS = [
    "order by q.rank_score desc",
    "limit 4 * (wanted - cardinality(picked))",
    "order by c.rank_score + random() * 0.15 desc",
    "s.user_id = question_candidates.user_id and s.question_id = q.id",
]


MIGRATION = Path(__file__).resolve().parent.parent / "supabase" / "migrations" / "20261125000009_question_engine.sql"
ENGINE_FUNCTIONS = {
    "private.question_candidates": "private.question_candidates(uuid, jsonb, integer)",
    "private.serve_questions": "private.serve_questions(uuid, uuid, jsonb, integer)",
    "service.request_questions": "service.request_questions(uuid, jsonb)",
}


def engine_version(conn: psycopg.Connection) -> dict[str, bool]:
    """Whether each engine function in the database has the checkout's body: the benchmark database keeps the
    migrations it was generated with, and a migration edited since then is not applied again."""
    text = MIGRATION.read_text(encoding="utf-8")
    same = {}
    for name, signature in ENGINE_FUNCTIONS.items():
        body = re.search(rf"create function {re.escape(name)}\(.*?\$\$(.*?)\$\$;", text, re.DOTALL)
        installed = conn.execute("select prosrc from pg_proc where oid = %s::regprocedure", (signature,)).fetchone()
        same[name] = bool(body and installed and body.group(1).strip() == installed[0].strip())
    return same


@contextmanager
def as_service(conn: psycopg.Connection, *, rollback: bool) -> Iterator[psycopg.Connection]:
    """One transaction as service_role, set up as the gateway does (shared.db.rls.acting_as)."""
    with conn.transaction(force_rollback=rollback):
        conn.execute(
            "select set_config('role', 'service_role', true), set_config('request.jwt.claims', %s, true)",
            (json.dumps(SERVICE_CLAIMS),),
        )
        yield conn


def connect(url: str) -> psycopg.Connection:
    # As production's pooled connections: autocommit, no server-side prepared statements.
    return psycopg.connect(url, autocommit=True, prepare_threshold=None, application_name=APP_NAME)


def remove_marked(conn: psycopg.Connection) -> int:
    """Delete the sessions this benchmark added; their served questions go with them (on delete cascade)."""
    cursor = conn.execute("delete from public.practice_sessions where config @> %s", (Jsonb(MARK),))
    return cursor.rowcount


def pick_users(conn: psycopg.Connection, count: int, seed: float) -> list[uuid.UUID]:
    conn.execute("select setseed(%s)", (seed,))
    return [row[0] for row in conn.execute("select id from public.users order by random() limit %s", (count,))]


def add_history(conn: psycopg.Connection, users: list[uuid.UUID], heavy: int) -> dict[str, Any]:
    """1,000 more served questions per user in finished sessions; the first `heavy` users mostly in BUCKET."""
    total = SESSIONS_PER_USER * PER_SESSION
    in_bucket_counts = []
    with conn.transaction():
        # Inserting a session fires its start trigger (quota, first questions): this is history, loaded as
        # generate_volume loads it. The rows reference existing questions and users.
        conn.execute("set local session_replication_role = replica")
        for index, user in enumerate(users):
            ids: list[uuid.UUID] = []
            if index < heavy:
                ids = [
                    row[0]
                    for row in conn.execute(
                        """
                        select q.id from public.questions q
                        where q.is_active and q.category = %(category)s and q.difficulty = %(difficulty)s
                          and q.experience_level = %(experience_level)s
                          and not exists (select from public.session_questions s
                                          where s.user_id = %(user)s and s.question_id = q.id)
                        order by q.rank_score desc limit %(n)s
                        """,
                        {**BUCKET, "user": user, "n": IN_BUCKET},
                    )
                ]
            ids += [
                row[0]
                for row in conn.execute(
                    """
                    select q.id from public.questions q tablesample system (0.6) repeatable (%(seed)s)
                    where not exists (select from public.session_questions s
                                      where s.user_id = %(user)s and s.question_id = q.id)
                      and q.id <> all(%(taken)s)
                    limit %(n)s
                    """,
                    {"seed": index, "user": user, "taken": ids, "n": total - len(ids)},
                )
            ]
            if len(ids) < total:
                raise SystemExit(f"sampled only {len(ids)} questions for user {user}")
            sessions = [
                row[0]
                for row in conn.execute(
                    """
                    insert into public.practice_sessions (user_id, session_type, status, config, started_at,
                                                          ended_at)
                    select %s, 'custom', 'completed', %s, now() - interval '1 day', now() - interval '1 day'
                    from generate_series(1, %s)
                    returning id
                    """,
                    (user, Jsonb(MARK), SESSIONS_PER_USER),
                )
            ]
            conn.execute(
                """
                insert into public.session_questions (session_id, user_id, question_id, position, served_at)
                select (%(sessions)s::uuid[])[1 + (n - 1) / %(per)s], %(user)s, q, 1 + (n - 1) %% %(per)s,
                       now() - interval '1 day'
                from unnest(%(ids)s::uuid[]) with ordinality as t (q, n)
                """,
                {"sessions": sessions, "per": PER_SESSION, "user": user, "ids": ids},
            )
            counted = conn.execute(
                """
                select count(*) from public.session_questions s join public.questions q on q.id = s.question_id
                where s.user_id = %(user)s and q.category = %(category)s and q.difficulty = %(difficulty)s
                  and q.experience_level = %(experience_level)s
                """,
                {**BUCKET, "user": user},
            ).fetchone()
            in_bucket_counts.append(counted[0] if counted else 0)
    conn.execute("analyze public.session_questions")
    served = conn.execute("select count(*) from public.session_questions where user_id = any(%s)", (users,)).fetchone()
    return {
        "users": len(users),
        "heavy_users": heavy,
        "served_per_user_total_median": (served[0] if served else 0) / len(users),
        "served_in_bucket_heavy_median": statistics.median(in_bucket_counts[:heavy]) if heavy else 0,
        "served_in_bucket_spread_median": statistics.median(in_bucket_counts[heavy:]),
    }


def request_for(shape: str) -> dict[str, Any]:
    return {**BUCKET, **SHAPES[shape], "count": WANTED}


def timed(
    conn: psycopg.Connection, query: LiteralString, params: tuple[Any, ...] | dict[str, Any]
) -> tuple[float, Any]:
    """One call in its own transaction, rolled back; only the statement's execution and fetch are timed."""
    with as_service(conn, rollback=True):
        started = time.perf_counter()
        row = conn.execute(query, params).fetchone()
        return time.perf_counter() - started, row[0] if row else None


CANDIDATES: LiteralString = "select count(*) from private.question_candidates(%s, %s, %s)"
REQUEST: LiteralString = "select service.request_questions(%s, %s)"


def measure_latency(conn: psycopg.Connection, users: list[uuid.UUID], heavy: int, runs: int) -> dict[str, Any]:
    samples: dict[tuple[str, str, str], list[float]] = {}
    short = Counter[str]()
    for measured in (False, True):
        total = runs if measured else len(users) * len(SHAPES)
        for i in range(total):
            user = users[i % len(users)]
            shape = list(SHAPES)[(i // len(users)) % len(SHAPES)]
            group = "heavy" if users.index(user) < heavy else "spread"
            request = request_for(shape)
            calls: list[tuple[str, LiteralString, tuple[Any, ...]]] = [
                ("question_candidates", CANDIDATES, (user, Jsonb(request), WANTED)),
                ("request_questions", REQUEST, (user, Jsonb(request))),
            ]
            if i % 2:
                calls.reverse()
            for name, query, params in calls:
                elapsed, result = timed(conn, query, params)
                got = result if name == "question_candidates" else len(result["questions"])
                if got != WANTED:
                    short[name] += 1
                if measured:
                    samples.setdefault((name, group, shape), []).append(elapsed)
    by_case = {" / ".join(key): latency(values) for key, values in sorted(samples.items())}
    overall = {
        name: latency([s for (n, _, _), values in samples.items() if n == name for s in values])
        for name in ("question_candidates", "request_questions")
    }
    return {"runs": runs, "overall": overall, "by_case": by_case, "calls_short_of_5": dict(short)}


def inner_params(user: uuid.UUID, shape: str) -> dict[str, Any]:
    """The inner query's parameters in the function's first (exact) step for this request."""
    request = request_for(shape)
    return {
        "category": request["category"],
        "difficulty": request["difficulty"],
        "levels": [request["experience_level"]],
        "level": request["experience_level"],
        "role": request.get("target_role"),
        "tags": request.get("tags"),
        "picked": [],
        "user_id": user,
        "pool": 4 * WANTED,
        "wanted": WANTED,
    }


def explain_inner(conn: psycopg.Connection, user: uuid.UUID) -> dict[str, Any]:
    """EXPLAIN (ANALYZE, BUFFERS) of the inner query in both forms and both request shapes, for one user."""
    body = conn.execute(
        "select prosrc from pg_proc where oid = 'private.question_candidates(uuid, jsonb, integer)'::regprocedure"
    ).fetchone()
    plans = {}
    for form, query in FORMS.items():
        for shape in SHAPES:
            with as_service(conn, rollback=True):
                plan = conn.execute("explain (analyze, buffers) " + query, inner_params(user, shape)).fetchall()
            plans[f"{form} / {shape}"] = "\n".join(line for (line,) in plan)
    stale = [f for f in FRAGMENTS if body is None or f not in body[0]]
    return {"user": str(user), "copy_is_stale": stale, "plans": plans}


def diagnose_walk(conn: psycopg.Connection, users: list[uuid.UUID], heavy: int, runs: int) -> dict[str, Any]:
    """The inner query as shipped against the recommended form, interleaved, on the same users and shapes."""
    samples: dict[tuple[str, str, str], list[float]] = {}
    for i in range(runs):
        user = users[i % len(users)]
        shape = list(SHAPES)[(i // len(users)) % len(SHAPES)]
        group = "heavy" if users.index(user) < heavy else "spread"
        forms = list(FORMS.items()) if i % 2 else list(FORMS.items())[::-1]
        for form, query in forms:
            elapsed, found = timed(conn, "select count(*) from (" + query + ") found", inner_params(user, shape))
            if found != WANTED:
                raise SystemExit(f"{form} found {found} questions for {user} ({shape}), not {WANTED}")
            samples.setdefault((form, group, shape), []).append(elapsed)
    return {" / ".join(key): latency(values) for key, values in sorted(samples.items())}


def auto_explained(conn: psycopg.Connection, user: uuid.UUID, shape: str) -> list[str]:
    """The plans request_questions actually ran (nested statements included), as auto_explain reports them."""
    notices: list[str] = []

    def collect(diagnostic: psycopg.errors.Diagnostic) -> None:
        if diagnostic.message_primary and "Query Text" in diagnostic.message_primary:
            notices.append(diagnostic.message_primary)

    conn.add_notice_handler(collect)
    try:
        with conn.transaction(force_rollback=True):
            # Superuser settings first; then the call as service_role.
            conn.execute("load 'auto_explain'")
            for setting, value in [
                ("auto_explain.log_min_duration", "0"),
                ("auto_explain.log_analyze", "on"),
                ("auto_explain.log_buffers", "on"),
                ("auto_explain.log_nested_statements", "on"),
                ("auto_explain.log_level", "notice"),
            ]:
                conn.execute("select set_config(%s, %s, true)", (setting, value))
            with as_service(conn, rollback=True):
                conn.execute(REQUEST, (user, Jsonb(request_for(shape)))).fetchone()
    finally:
        conn.remove_notice_handler(collect)
    return [n for n in notices if "public.questions q" in n and "session_questions s" in n]


# Throughput

# What tracking would cost once selection is cheap: the same two modes with the recommended selection (its exact
# step: the bucket requests measured here need no other), as functions in each worker connection's own pg_temp
# schema, which no other session sees and which goes with the connection: no migration or shared schema changes.
RECOMMENDED_SELECTION: LiteralString = """
  select q.id from (
    select q.id, q.rank_score from public.questions q
    where q.is_active
      and q.category = (p_request ->> 'category')::public.question_category
      and q.difficulty = (p_request ->> 'difficulty')::public.difficulty
      and q.experience_level = (p_request ->> 'experience_level')::public.experience_level
      and not exists (
        select from public.session_questions s where s.user_id = p_user and s.question_id = q.id offset 0
      )
    order by q.rank_score desc
    limit 4 * p_wanted
  ) q
  order by q.rank_score + random() * 0.15 desc
  limit p_wanted
"""
WHAT_IF_FUNCTIONS: list[LiteralString] = [
    "create function pg_temp.select_recommended(p_user uuid, p_request jsonb, p_wanted integer) returns integer"
    " language plpgsql as $$ begin return (select count(*) from (" + RECOMMENDED_SELECTION + ") c); end $$",
    # private.serve_questions with the recommended selection in place of private.question_candidates.
    """
    create function pg_temp.serve_recommended(p_user uuid, p_session uuid, p_request jsonb, p_wanted integer)
    returns jsonb language plpgsql as $$
    declare
      last_position integer;
    begin
      perform from public.practice_sessions s where s.id = p_session for update;
      select coalesce(max(sq.position), 0) into last_position
      from public.session_questions sq where sq.session_id = p_session;
      insert into public.session_questions (session_id, user_id, question_id, position, widening)
      select p_session, p_user, c.id, last_position + row_number() over (), 'exact'
      from ("""
    + RECOMMENDED_SELECTION
    + """) c
      on conflict on constraint session_questions_user_id_question_id_key do nothing;
      return private.session_question_list(p_session, last_position);
    end
    $$
    """,
    "grant execute on function pg_temp.select_recommended(uuid, jsonb, integer),"
    " pg_temp.serve_recommended(uuid, uuid, jsonb, integer) to service_role",
]
SELECT_SQL: dict[bool, LiteralString] = {
    False: CANDIDATES,
    True: "select pg_temp.select_recommended(%s, %s, %s)",
}
SERVE_SQL: dict[bool, LiteralString] = {
    False: "select jsonb_array_length(private.serve_questions(%s, %s, %s, %s))",
    True: "select jsonb_array_length(pg_temp.serve_recommended(%s, %s, %s, %s))",
}


@dataclass
class Worker:
    conn: psycopg.Connection
    users: list[uuid.UUID]
    request: dict[str, Any]
    turn: int = 0
    sessions: dict[uuid.UUID, tuple[uuid.UUID, int]] = field(default_factory=dict)

    def next_user(self) -> uuid.UUID:
        self.turn += 1
        return self.users[self.turn % len(self.users)]

    def select(self, user: uuid.UUID, *, recommended: bool = False) -> int:
        with as_service(self.conn, rollback=False):
            row = self.conn.execute(SELECT_SQL[recommended], (user, Jsonb(self.request), WANTED)).fetchone()
        return row[0] if row else 0

    def serve(self, user: uuid.UUID, *, durable: bool = True, recommended: bool = False) -> int:
        session, served = self.sessions.get(user, (None, PER_SESSION))
        if session is None or served + WANTED > PER_SESSION:
            session, served = self._open_session(user), 0
        with as_service(self.conn, rollback=False):
            if not durable:
                self.conn.execute("set local synchronous_commit = off")
            row = self.conn.execute(SERVE_SQL[recommended], (user, session, Jsonb(self.request), WANTED)).fetchone()
        got = row[0] if row else 0
        self.sessions[user] = (session, served + got)
        return got

    def _open_session(self, user: uuid.UUID) -> uuid.UUID:
        # A fresh session per 100 questions (as a client would start one), without the start trigger's own serving.
        with self.conn.transaction():
            self.conn.execute("set local session_replication_role = replica")
            row = self.conn.execute(
                "insert into public.practice_sessions (user_id, session_type, config) values (%s, 'custom', %s)"
                " returning id",
                (user, Jsonb({**MARK, **self.request})),
            ).fetchone()
        assert row is not None
        return row[0]


@dataclass
class Phase:
    mode: str
    round: int
    requests: int
    seconds: float
    short: int
    errors: Counter[str]
    waits: Counter[str]

    @property
    def rate(self) -> float:
        return self.requests / self.seconds


def run_phase(url: str, workers: list[Worker], mode: str, round_: int, seconds: float) -> Phase:
    counts = [0] * len(workers)
    shorts = [0] * len(workers)
    errors = [Counter[str]() for _ in workers]
    waits = Counter[str]()
    start = threading.Barrier(len(workers) + 1)
    stop = threading.Event()

    def loop(index: int, worker: Worker) -> None:
        start.wait()
        call = {
            WITH: worker.serve,
            WITHOUT: worker.select,
            ASYNC: lambda user: worker.serve(user, durable=False),
            WITH_FIXED: lambda user: worker.serve(user, recommended=True),
            WITHOUT_FIXED: lambda user: worker.select(user, recommended=True),
        }[mode]
        while not stop.is_set():
            try:
                got = call(worker.next_user())
            except psycopg.Error as error:
                errors[index][f"{error.sqlstate} {type(error).__name__}"] += 1
                continue
            counts[index] += 1
            shorts[index] += got < WANTED

    threads = [threading.Thread(target=loop, args=(i, w)) for i, w in enumerate(workers)]
    for thread in threads:
        thread.start()
    with psycopg.connect(url, autocommit=True) as monitor:
        start.wait()
        began = time.perf_counter()
        while time.perf_counter() - began < seconds:
            # What the benchmark's backends are doing: a wait event, or none (on CPU).
            for event, n in monitor.execute(
                "select coalesce(wait_event_type || ':' || wait_event, 'CPU'), count(*) from pg_stat_activity"
                " where application_name = %s and state = 'active' group by 1",
                (APP_NAME,),
            ):
                waits[event] += n
            time.sleep(0.05)
        stop.set()
        for thread in threads:
            thread.join()
        elapsed = time.perf_counter() - began
    return Phase(mode, round_, sum(counts), elapsed, sum(shorts), sum(errors, Counter[str]()), waits)


def question_updates(url: str) -> tuple[int, int]:
    # A new connection, so its statistics snapshot is fresh.
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute(
            "select n_tup_upd, n_tup_hot_upd from pg_stat_all_tables where relid = 'public.questions'::regclass"
        ).fetchone()
    return (row[0], row[1]) if row else (0, 0)


def measure_throughput(url: str, users: list[uuid.UUID], threads: int, seconds: float, rounds: int) -> dict:
    request = {**BUCKET, "count": WANTED}
    workers = [
        Worker(connect(url), users[i * USERS_PER_THREAD : (i + 1) * USERS_PER_THREAD], request) for i in range(threads)
    ]
    for worker in workers:
        for statement in WHAT_IF_FUNCTIONS:
            worker.conn.execute(statement)
    updates_before = question_updates(url)
    phases: list[Phase] = []
    try:
        for round_ in range(rounds):
            # ABBA: the history the tracked phases add makes later selections walk further, for both modes alike.
            order = MODES if round_ % 2 == 0 else MODES[::-1]
            for mode in order:
                phases.append(run_phase(url, workers, mode, round_ + 1, seconds))
                console.print(f"round {round_ + 1} {mode}: {phases[-1].rate:.0f} requests/s")
    finally:
        for worker in workers:
            worker.conn.close()
    time.sleep(1.5)  # backends flush their table statistics at most once a second
    updates_after = question_updates(url)
    with psycopg.connect(url, autocommit=True) as conn:
        top = conn.execute(
            """
            select count(*), count(*) filter (where xmax::text <> '0') from (
              select xmax from public.questions q
              where q.is_active and q.category = %(category)s and q.difficulty = %(difficulty)s
                and q.experience_level = %(experience_level)s
              order by q.rank_score desc limit 200) t
            """,
            BUCKET,
        ).fetchone()
    medians = {mode: statistics.median(p.rate for p in phases if p.mode == mode) for mode in MODES}
    return {
        "threads": threads,
        "users_per_thread": USERS_PER_THREAD,
        "phase_seconds": seconds,
        "rounds": rounds,
        "request": request,
        "phases": [
            {
                "mode": p.mode,
                "round": p.round,
                "requests": p.requests,
                "seconds": p.seconds,
                "requests_per_second": p.rate,
                "short_of_5": p.short,
                "errors": dict(p.errors),
                "wait_samples": dict(p.waits.most_common()),
            }
            for p in phases
        ],
        "median_requests_per_second": medians,
        "ratio_with_to_without": medians[WITH] / medians[WITHOUT],
        "ratio_async_commit_to_without": medians[ASYNC] / medians[WITHOUT],
        "ratio_with_to_without_recommended_selection": medians[WITH_FIXED] / medians[WITHOUT_FIXED],
        "questions_n_tup_upd": {"before": updates_before[0], "after": updates_after[0]},
        "questions_n_tup_hot_upd": {"before": updates_before[1], "after": updates_after[1]},
        "top_200_of_bucket_with_lock_xmax": top[1] if top else None,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=50, help="users given 1,000 served questions (default 50)")
    parser.add_argument("--heavy", type=int, default=20, help="of which mostly in the queried bucket (default 20)")
    parser.add_argument("--runs", type=int, default=500, help="measured calls of each function (default 500)")
    parser.add_argument("--threads", type=int, default=32)
    parser.add_argument("--phase-seconds", type=float, default=10)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seed", type=float, default=0.17, help="setseed() for the user picks, in [-1, 1]")
    parser.add_argument("--database-url", help="the generated database (default: prep_bench on the server)")
    args = parser.parse_args(argv)

    url = bench_url(args.database_url)
    with psycopg.connect(maintenance_url(url), autocommit=True) as admin:
        volume = read_marker(admin, dbname(url))
    if not volume or volume.get("state") != "complete":
        raise SystemExit(f"{describe(url)} holds no complete generated data: run `python -m bench.generate_volume`")

    with connect(url) as conn:
        measured = revision(conn)  # before the run: others may edit the checkout meanwhile
        same_as_checkout = engine_version(conn)
        leftovers = remove_marked(conn)
        if leftovers:
            console.print(f"removed {leftovers} sessions left by an interrupted run")
        picked = pick_users(conn, args.users + args.threads * USERS_PER_THREAD, args.seed)
        latency_users, throughput_users = picked[: args.users], picked[args.users :]
        try:
            console.print(f"{describe(url)}: adding 1,000 served questions to each of {args.users} users")
            history = add_history(conn, latency_users, args.heavy)
            console.print(f"latency: {args.runs} measured calls of each function")
            latencies = measure_latency(conn, latency_users, args.heavy, args.runs)
            explained = explain_inner(conn, latency_users[0])
            in_function = auto_explained(conn, latency_users[0], "role + tag")
            console.print(f"diagnosis: {args.runs} calls of the inner query in each form")
            diagnosis = diagnose_walk(conn, latency_users, args.heavy, args.runs)
            console.print(f"throughput: {args.threads} threads, {args.rounds} rounds of {args.phase_seconds:g}s each")
            throughput = measure_throughput(url, throughput_users, args.threads, args.phase_seconds, args.rounds)
        finally:
            removed = remove_marked(conn)
            # Leaves the tables as generated for the next benchmark: the deleted rows' index entries would
            # otherwise linger (far below autovacuum's threshold on 10M rows) and slow scans of recent rows.
            conn.execute("vacuum public.session_questions, public.practice_sessions")
        report = {
            "benchmark": "question_selection",
            "date": now_iso(),
            "machine": machine(conn),
            "revision": measured,
            "engine_functions_match_checkout": same_as_checkout,
            "database": {"target": describe(url), "volume": volume},
            "parameters": {**vars(args), "bucket": BUCKET, "shapes": SHAPES, "database_url": None},
            "history": history,
            "latency": latencies,
            "target_p95_ms": TARGET_P95_MS,
            "explain_inner_query": explained,
            "auto_explain_in_function": in_function,
            "inner_query_as_shipped_vs_recommended": diagnosis,
            "throughput": throughput,
            "target_ratio": TARGET_RATIO,
            "cleanup_sessions_deleted": removed,
        }
    print_report(report)
    write_report("question_selection", report)
    return 0


def print_report(report: dict[str, Any]) -> None:
    explained = report["explain_inner_query"]
    stale = f" (stale copy: {explained['copy_is_stale']})" if explained["copy_is_stale"] else ""
    for name in ("as shipped / role + tag", "recommended / role + tag"):  # the JSON has both shapes
        console.print(Panel(explained["plans"][name], title=f"inner selection query, heavy user, {name}{stale}"))
    console.print(f"engine functions identical to the checkout's: {report['engine_functions_match_checkout']}")
    if report["auto_explain_in_function"]:  # the first step's; the JSON has every step's
        plan = report["auto_explain_in_function"][0]
        console.print(Panel(plan, title="the same query as run inside request_questions (auto_explain)"))

    lat = report["latency"]
    table = Table(title=f"Selection latency, ms ({lat['runs']} runs of each function)", caption=caption(report))
    for column in ("function / users / request", "runs", "p50", "p95", "max"):
        table.add_column(column, justify="left" if column.startswith("function") else "right")
    rows = [(f"{name} (all)", s) for name, s in lat["overall"].items()] + list(lat["by_case"].items())
    for name, s in rows:
        colour = "green" if s["p95_ms"] <= report["target_p95_ms"] else "red"
        table.add_row(
            name,
            str(s["runs"]),
            f"{s['median_ms']:.2f}",
            f"[{colour}]{s['p95_ms']:.2f}[/{colour}]",
            f"{s['max_ms']:.2f}",
        )
    console.print(table)
    diagnosis = Table(title="Diagnosis: the inner query as shipped vs recommended, ms")
    for column in ("form / users / request", "runs", "p50", "p95", "max"):
        diagnosis.add_column(column, justify="left" if column.startswith("form") else "right")
    for name, s in report["inner_query_as_shipped_vs_recommended"].items():
        diagnosis.add_row(name, str(s["runs"]), f"{s['median_ms']:.2f}", f"{s['p95_ms']:.2f}", f"{s['max_ms']:.2f}")
    console.print(diagnosis)
    history = report["history"]
    console.print(
        f"history: {history['served_per_user_total_median']:.0f} served per user; in the queried bucket "
        f"{history['served_in_bucket_heavy_median']:.0f} (heavy) / {history['served_in_bucket_spread_median']:.0f}"
        f" (spread); calls short of {WANTED}: {lat['calls_short_of_5'] or 'none'}"
    )

    tp = report["throughput"]
    phases = Table(title=f"{tp['threads']} concurrent requests for one bucket, {tp['phase_seconds']:g}s phases")
    for column in ("round", "mode", "requests", "req/s", "short", "errors", "top waits (samples)"):
        phases.add_column(column, justify="right" if column in ("requests", "req/s", "short") else "left")
    for p in tp["phases"]:
        waits = ", ".join(f"{k} {v}" for k, v in list(p["wait_samples"].items())[:4])
        errors = ", ".join(f"{k} x{v}" for k, v in p["errors"].items()) or "-"
        phases.add_row(
            str(p["round"]), p["mode"], f"{p['requests']:,}", f"{p['requests_per_second']:.0f}", str(p["short_of_5"]),
            errors, waits,
        )  # fmt: skip
    console.print(phases)
    ratio = tp["ratio_with_to_without"]
    colour = "green" if ratio >= report["target_ratio"] else "red"
    medians = tp["median_requests_per_second"]
    updates = tp["questions_n_tup_upd"]
    console.print(
        f"median requests/s: with tracking {medians[WITH]:.0f}, without {medians[WITHOUT]:.0f}; "
        f"ratio [{colour}]{ratio:.2f}[/{colour}] (target >= {report['target_ratio']}); diagnostic: with tracking and "
        f"asynchronous commit {medians[ASYNC]:.0f} ({tp['ratio_async_commit_to_without']:.2f}x)\n"
        f"what-if, recommended selection: with tracking {medians[WITH_FIXED]:.0f}, "
        f"without {medians[WITHOUT_FIXED]:.0f}; ratio {tp['ratio_with_to_without_recommended_selection']:.2f}\n"
        f"public.questions n_tup_upd {updates['before']} -> {updates['after']} "
        f"(change {updates['after'] - updates['before']}); top 200 of the bucket carrying a row-lock xmax: "
        f"{tp['top_200_of_bucket_with_lock_xmax']}; sessions deleted afterwards: {report['cleanup_sessions_deleted']}"
    )


if __name__ == "__main__":
    sys.exit(main())
