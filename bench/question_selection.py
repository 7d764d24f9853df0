"""Question selection on the big database: the latency of one selection, and 32 concurrent ones in one bucket.

    .venv/bin/python -m bench.question_selection [--runs 500] [--threads 32 --processes 4 --phase-seconds 10 --rounds 4]

Runs on `prep_bench` (bench.generate_volume: 100k users, 1M questions, 10M served), as service_role, over
connections set up like production's (autocommit, no prepared statements, role and claims set per transaction),
and measures the engine functions as shipped (migration 20261125000009), nothing reproduced from them.

Latency. USERS existing users each get 1,000 more served questions (10 finished sessions of 100): the first
HEAVY of them 600 in the queried bucket, the best-ranked ones, which the selection walks first and must skip,
and the rest spread over the whole bank by page sampling. Then RUNS calls, cycling through the users and two
request shapes (the bare bucket; with a target role and a tag), each time both
- private.question_candidates(user, request, 5): the selection, and
- service.request_questions(user, request): quota, session start (its trigger serves), the session's list,
each in its own transaction rolled back, in alternating order, after one unmeasured pass. Target: selection
p95 <= 20 ms. Then the plans the selection itself runs, for a heavy user and both shapes, as auto_explain logs
them with ANALYZE and BUFFERS (what EXPLAIN (ANALYZE, BUFFERS) prints), each summarized by node and index.

Throughput. THREADS connections (spread over PROCESSES client processes, so that Python's GIL does not
serialize the client), each with its own 32 users, request 5 questions of the same popular bucket as fast as
they can, in phases of PHASE_SECONDS, in five modes:
- serving, usage not tracked: private.serve_questions into the user's open session (what
  service.request_questions does for a continued session, without its per-user quota counter): the selection,
  the append-only session_questions inserts every serve needs anyway (they are the session's content and the
  no-repeat guarantee) and the list returned, committed asynchronously, with no usage counting at all;
- serving with usage tracking as shipped: the same, while service.rollup_question_stats rolls the served
  records into usage_count every ROLLUP_SECONDS. Target: >= 0.8x serving untracked;
- diagnostic, the same with a durable commit (`synchronous_commit = on` set locally after the serve, which
  overrides the function's transaction-local setting): what the asynchronous commit buys;
- diagnostic, the naive design: serving, and `usage_count = usage_count + 1` on the served questions in the same
  transaction: the contention on the popular rows the append-only record avoids (public.questions is vacuumed
  after each of its phases, untimed: the dead row versions it leaves would slow every later phase);
- for scale, selection only: private.question_candidates alone (read-only, nothing served or returned).
What a serving phase served is deleted after it, so that each phase starts from the same history (what users
are served lengthens their next selections' walk). ROUNDS rounds of all five, in an order reversed every other
round so that any drift left hits all alike, after an unmeasured warm-up; medians are compared. Each phase
records what the benchmark's backends wait on (pg_stat_activity sampled; the rollup's apart), the WAL activity
(pg_stat_wal, cluster-wide), the CPU used by the client processes, by the benchmark's backends, by the
rollup's and by the whole machine, and public.questions' n_tup_upd (serving must add none: the increments in
a tracking phase are the rollup's own).

Everything added is marked (config {"bench": "question_selection"} on its sessions) and deleted at the end (then
the tables are vacuumed), and by the next run if one was interrupted; the latency calls are rolled back. The
statistics the rollup and the hot-row mode change (the bucket's usage_count, rank_score, ...; the rollup
watermark) are saved to RESTORE_FILE first and put back afterwards, or by the next run.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
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
from multiprocessing.connection import Connection as Pipe
from pathlib import Path
from typing import Any, LiteralString

import psycopg
from psycopg.types.json import Jsonb
from rich.panel import Panel
from rich.table import Table

from bench.database import bench_url, dbname, describe, maintenance_url, read_marker
from bench.questions_common import (
    OUT_DIR,
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
# Many users per connection, so that what the tracked phases serve lengthens each user's walk only a little.
USERS_PER_THREAD = 32
TARGET_P95_MS = 20.0
TARGET_RATIO = 0.8
APP_NAME = "bench.question_selection"
ROLLUP_APP_NAME = f"{APP_NAME} rollup"
RESTORE_FILE = OUT_DIR / "question_selection.restore.json"

SELECTION_ONLY = "selection only, nothing served"
UNTRACKED = "serving, usage not tracked"
SHIPPED = "serving with usage tracking, as shipped"
DURABLE = "serving with usage tracking, durable commit"
HOT_ROW = "serving with a hot-row usage_count update"
MODES = [SELECTION_ONLY, UNTRACKED, SHIPPED, DURABLE, HOT_ROW]
SERVING_MODES = {UNTRACKED, SHIPPED, DURABLE, HOT_ROW}
# The rollup runs during these: it is how usage is tracked.
TRACKING_MODES = {SHIPPED, DURABLE}

MIGRATION = Path(__file__).resolve().parent.parent / "supabase" / "migrations" / "20261125000009_question_engine.sql"
ENGINE_FUNCTIONS = {
    "private.question_candidates": "private.question_candidates(uuid, jsonb, integer)",
    "private.serve_questions": "private.serve_questions(uuid, uuid, jsonb, integer)",
    "service.request_questions": "service.request_questions(uuid, jsonb)",
    "service.rollup_question_stats": "service.rollup_question_stats()",
}

CANDIDATES: LiteralString = "select count(*) from private.question_candidates(%s, %s, %s)"
REQUEST: LiteralString = "select service.request_questions(%s, %s)"
SERVE: LiteralString = "select jsonb_array_length(private.serve_questions(%s, %s, %s, %s))"
# Transaction-local like the function's own set_config, and later in the transaction: this one wins.
DURABLE_COMMIT: LiteralString = "set local synchronous_commit = on"
# The naive design: serve, and count each served question on its own row at once. `= any(array)` scans the
# primary key in id order, so concurrent transactions lock their rows in one order and wait rather than deadlock.
HOT_ROW_SERVE: LiteralString = """
with served as (select private.serve_questions(%s, %s, %s, %s) as list),
counted as (
  update public.questions q set usage_count = q.usage_count + 1
  where q.id = any(array(select (e ->> 'id')::uuid from served, jsonb_array_elements(served.list) e))
)
select jsonb_array_length(list) from served
"""
ROLLUP: LiteralString = "select service.rollup_question_stats()"


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


def connect(url: str, application_name: str = APP_NAME) -> psycopg.Connection:
    # As production's pooled connections: autocommit, no server-side prepared statements.
    return psycopg.connect(url, autocommit=True, prepare_threshold=None, application_name=application_name)


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
    conn.execute("analyze public.session_questions, public.served_questions")
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


def explain_selection(conn: psycopg.Connection, user: uuid.UUID, shape: str) -> list[str]:
    """The plans private.question_candidates runs for one request, one per widening step it takes, as
    auto_explain logs them with ANALYZE and BUFFERS: the function's own statements, with its plan cache."""
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
                conn.execute(CANDIDATES, (user, Jsonb(request_for(shape)), WANTED)).fetchone()
    finally:
        conn.remove_notice_handler(collect)
    # The widening steps' query; the other statements are the function's bookkeeping.
    return [n for n in notices if "public.questions q" in n and "served_questions s" in n]


PLAN_NODE = re.compile(
    r"^\s*(?:->\s+)?(?P<node>[A-Z][\w ]*?)(?: using (?P<index>\S+))?(?: on (?P<relation>\S+))?(?: \w+)?"
    r"\s+\(cost=[^)]*\) \(actual time=[\d.]+\.\.(?P<ms>[\d.]+) rows=(?P<rows>[\d.]+) loops=(?P<loops>\d+)\)"
)
REMOVED = re.compile(r"^\s*Rows Removed by Filter: (\d+)")
SCANNED_TABLES = {"questions", "served_questions"}  # the never-served probe reads the ledger (migration 17)


def plan_nodes(plan: str) -> list[dict[str, Any]]:
    """Each node of a text plan: its type, index and relation, actual rows and loops, rows its filter dropped."""
    nodes: list[dict[str, Any]] = []
    for line in plan.splitlines():
        if match := PLAN_NODE.match(line):
            nodes.append(
                {
                    "node": match["node"],
                    "index": match["index"],
                    "relation": match["relation"],
                    "rows": float(match["rows"]),
                    "loops": int(match["loops"]),
                    "ms": float(match["ms"]),
                    "removed_by_filter": 0,
                }
            )
        elif (removed := REMOVED.match(line)) and nodes:
            nodes[-1]["removed_by_filter"] = int(removed[1])
    return nodes


def explain_report(conn: psycopg.Connection, user: uuid.UUID) -> dict[str, Any]:
    plans = {shape: explain_selection(conn, user, shape) for shape in SHAPES}
    nodes = {shape: [plan_nodes(plan) for plan in steps] for shape, steps in plans.items()}
    scans = [n for steps in nodes.values() for step in steps for n in step if n["relation"] in SCANNED_TABLES]
    return {
        "user": str(user),
        "plans": plans,
        "nodes": nodes,
        "indexes_used": sorted({n["index"] for n in scans if n["index"]}),
        "scans_without_index": sorted({f"{n['node']} on {n['relation']}" for n in scans if not n["index"]}),
    }


# Throughput


@dataclass
class Worker:
    """One client connection and its users, each with an open session (and how many it has served)."""

    conn: psycopg.Connection
    users: list[uuid.UUID]
    request: dict[str, Any]
    turn: int = 0
    sessions: dict[uuid.UUID, tuple[uuid.UUID, int]] = field(default_factory=dict)
    opened: list[uuid.UUID] = field(default_factory=list)

    def open_sessions(self) -> None:
        # Before any phase: no phase pays for session starts.
        for user in self.users:
            self.sessions[user] = (self._open_session(user), 0)

    def forget_served(self) -> None:
        """Deletes what this worker served (its sessions stay open, filling from position 1 again): every phase
        starts from the same history, so later phases' selections do not walk further than earlier ones'."""
        self.conn.execute(
            "with forgotten as (delete from public.session_questions where session_id = any(%s)"
            " returning user_id, question_id)"
            " delete from public.served_questions s using forgotten f"
            " where s.user_id = f.user_id and s.question_id = f.question_id",
            (self.opened,),
        )
        self.sessions = {user: (session, 0) for user, (session, _) in self.sessions.items()}
        self.opened = [session for session, _ in self.sessions.values()]

    def next_user(self) -> uuid.UUID:
        self.turn += 1
        return self.users[self.turn % len(self.users)]

    def call(self, mode: str, user: uuid.UUID) -> int:
        """One request in `mode`, in its own transaction; how many questions it selected."""
        if mode == SELECTION_ONLY:
            with as_service(self.conn, rollback=False):
                row = self.conn.execute(CANDIDATES, (user, Jsonb(self.request), WANTED)).fetchone()
            return row[0] if row else 0
        session, served = self.sessions[user]
        if served + WANTED > PER_SESSION:
            session, served = self._open_session(user), 0
        with as_service(self.conn, rollback=False):
            serve = HOT_ROW_SERVE if mode == HOT_ROW else SERVE
            row = self.conn.execute(serve, (user, session, Jsonb(self.request), WANTED)).fetchone()
            if mode == DURABLE:
                self.conn.execute(DURABLE_COMMIT)
        got = row[0] if row else 0
        self.sessions[user] = (session, served + got)
        return got

    def _open_session(self, user: uuid.UUID) -> uuid.UUID:
        # A session per 100 questions (as a client would start one), without the start trigger's own serving.
        with self.conn.transaction():
            self.conn.execute("set local session_replication_role = replica")
            row = self.conn.execute(
                "insert into public.practice_sessions (user_id, session_type, config) values (%s, 'custom', %s)"
                " returning id",
                (user, Jsonb({**MARK, **self.request})),
            ).fetchone()
        assert row is not None
        self.opened.append(row[0])
        return row[0]


@dataclass
class Load:
    """What a client process's workers did in one phase."""

    requests: int = 0
    short: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    cpu_seconds: float = 0.0


def drive(workers: list[Worker], mode: str, start: float, end: float) -> Load:
    """Each worker in its own thread, requesting from `start` to `end` (time.monotonic: the same clock in every
    process); a request that completes after `end` is not counted."""
    cpu_before = time.process_time()
    loads = [Load() for _ in workers]

    def loop(worker: Worker, load: Load) -> None:
        time.sleep(max(0.0, start - time.monotonic()))
        while time.monotonic() < end:
            try:
                got = worker.call(mode, worker.next_user())
            except psycopg.Error as error:
                load.errors[f"{error.sqlstate} {type(error).__name__}"] += 1
                continue
            if time.monotonic() <= end:
                load.requests += 1
                load.short += got < WANTED

    threads = [threading.Thread(target=loop, args=pair) for pair in zip(workers, loads, strict=True)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    cpu_seconds = time.process_time() - cpu_before
    for worker in workers:
        if mode in SERVING_MODES:
            worker.forget_served()
        # The backend reports its table and WAL statistics now, not up to 10 s later: the phase's own counts.
        worker.conn.execute("select pg_stat_force_next_flush()")
    return Load(
        requests=sum(load.requests for load in loads),
        short=sum(load.short for load in loads),
        errors=sum((load.errors for load in loads), Counter[str]()),
        cpu_seconds=cpu_seconds,
    )


def client_process(url: str, user_groups: list[list[uuid.UUID]], request: dict[str, Any], pipe: Pipe) -> None:
    """A client process: a worker per user group, then one phase per (mode, start, end) received, until None."""
    workers = [Worker(connect(url), users, request) for users in user_groups]
    try:
        for worker in workers:
            worker.open_sessions()
        pipe.send([worker.conn.info.backend_pid for worker in workers])
        while (command := pipe.recv()) is not None:
            pipe.send(drive(workers, *command))
    finally:
        for worker in workers:
            worker.conn.close()


class Clients:
    """The client processes, which share the workers between them."""

    def __init__(self, url: str, user_groups: list[list[uuid.UUID]], processes: int, request: dict[str, Any]) -> None:
        context = multiprocessing.get_context("spawn")  # a fresh interpreter: no inherited connections or locks
        self.pipes: list[Pipe] = []
        self.processes: list[multiprocessing.process.BaseProcess] = []
        for index in range(processes):
            ours, theirs = context.Pipe()
            process = context.Process(
                target=client_process, args=(url, user_groups[index::processes], request, theirs), daemon=True
            )
            process.start()
            self.pipes.append(ours)
            self.processes.append(process)
        self.backend_pids: list[int] = [pid for pipe in self.pipes for pid in pipe.recv()]

    def start(self, mode: str, start: float, end: float) -> None:
        for pipe in self.pipes:
            pipe.send((mode, start, end))

    def results(self) -> Load:
        loads: list[Load] = [pipe.recv() for pipe in self.pipes]
        return Load(
            requests=sum(load.requests for load in loads),
            short=sum(load.short for load in loads),
            errors=sum((load.errors for load in loads), Counter[str]()),
            cpu_seconds=sum(load.cpu_seconds for load in loads),
        )

    def close(self) -> None:
        for pipe in self.pipes:
            pipe.send(None)
        for process in self.processes:
            process.join(timeout=30)


CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
CPUS = os.cpu_count() or 1


def process_ticks(pid: int) -> int:
    # utime and stime: the 14th and 15th fields, counted after the parenthesized command name.
    stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(stat[11]) + int(stat[12])


@dataclass
class CpuTicks:
    machine_busy: int
    machine_total: int
    backends: int
    rollup: int

    @classmethod
    def read(cls, backend_pids: list[int], rollup_pid: int) -> CpuTicks:
        """The whole machine's busy and total ticks (/proc/stat), the benchmark's backends' and the rollup's."""
        fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
        idle = fields[3] + fields[4]  # idle and iowait
        backends = sum(process_ticks(pid) for pid in backend_pids)
        return cls(sum(fields) - idle, sum(fields), backends, process_ticks(rollup_pid))


WAL_COLUMNS = ["wal_records", "wal_fpi", "wal_bytes", "wal_write", "wal_sync"]


def server_counters(monitor: psycopg.Connection) -> tuple[int, dict[str, int]]:
    """public.questions' n_tup_upd and the cluster's pg_stat_wal (each autocommit statement a fresh snapshot)."""
    updated = monitor.execute(
        "select n_tup_upd from pg_stat_all_tables where relid = 'public.questions'::regclass"
    ).fetchone()
    wal = monitor.execute("select wal_records, wal_fpi, wal_bytes::bigint, wal_write, wal_sync from pg_stat_wal")
    return (updated[0] if updated else 0), dict(zip(WAL_COLUMNS, wal.fetchone() or (), strict=True))


def run_rollups(conn: psycopg.Connection, start: float, end: float, every: float, log: list[dict[str, Any]]) -> None:
    """service.rollup_question_stats every `every` seconds from `start` + every/2 until `end`, as the schedule
    runs it alongside serving: when each ran, for how long, how many questions it updated, or its error."""
    at = start + every / 2
    while at < end:
        time.sleep(max(0.0, at - time.monotonic()))
        began = time.monotonic()
        entry: dict[str, Any] = {"at_s": round(began - start, 2)}
        try:
            with as_service(conn, rollback=False):
                row = conn.execute(ROLLUP).fetchone()
            entry["questions_updated"] = row[0]["questions_updated"] if row else 0
        except psycopg.Error as error:
            entry["error"] = f"{error.sqlstate} {type(error).__name__}: {error}"
        entry["seconds"] = round(time.monotonic() - began, 3)
        log.append(entry)
        at += every
    conn.execute("select pg_stat_force_next_flush()")


@dataclass
class Phase:
    mode: str
    round: int
    seconds: float
    load: Load
    waits: Counter[str]
    rollup_waits: Counter[str]
    rollups: list[dict[str, Any]]
    questions_n_tup_upd: tuple[int, int]
    wal: dict[str, int]
    cpu: tuple[CpuTicks, CpuTicks]

    @property
    def rate(self) -> float:
        return self.load.requests / self.seconds

    @property
    def rollup_updates(self) -> int:
        return sum(run.get("questions_updated", 0) for run in self.rollups)

    @property
    def serving_updates(self) -> int:
        """Updates of public.questions rows other than the rollup's."""
        before, after = self.questions_n_tup_upd
        return after - before - self.rollup_updates

    def summary(self) -> dict[str, Any]:
        before, after = self.cpu
        client = self.load.cpu_seconds / self.seconds
        backends = (after.backends - before.backends) / CLOCK_TICKS / self.seconds
        rollup = (after.rollup - before.rollup) / CLOCK_TICKS / self.seconds
        busy = (after.machine_busy - before.machine_busy) / (after.machine_total - before.machine_total)
        per_request_ms = 1000 / max(self.rate, 1e-9)
        return {
            "mode": self.mode,
            "round": self.round,
            "seconds": self.seconds,
            "requests": self.load.requests,
            "requests_per_second": self.rate,
            "short_of_5": self.load.short,
            "errors": dict(self.load.errors),
            "wait_samples": dict(self.waits.most_common()),
            "rollups": self.rollups,
            "rollup_wait_samples": dict(self.rollup_waits.most_common()),
            "rollup_cpu_cores": rollup,
            "questions_n_tup_upd": {"before": self.questions_n_tup_upd[0], "after": self.questions_n_tup_upd[1]},
            "questions_updated_by_rollup": self.rollup_updates,
            "questions_updated_by_serving": self.serving_updates,
            "wal": self.wal,
            "wal_syncs_per_second": self.wal["wal_sync"] / self.seconds,
            "client_cpu_cores": client,
            "backend_cpu_cores": backends,
            "machine_cpu_busy": busy,
            # The walwriter, the monitor's backend, and whatever else shares the machine.
            "other_cpu_cores": busy * CPUS - client - backends - rollup,
            "client_cpu_ms_per_request": client * per_request_ms,
            "backend_cpu_ms_per_request": backends * per_request_ms,
        }


def run_phase(
    clients: Clients,
    monitor: psycopg.Connection,
    rollup_conn: psycopg.Connection,
    mode: str,
    round_: int,
    seconds: float,
    rollup_seconds: float,
) -> Phase:
    updated_before, wal_before = server_counters(monitor)
    start = time.monotonic() + 0.3  # every client thread is waiting by then
    end = start + seconds
    clients.start(mode, start, end)
    rollups: list[dict[str, Any]] = []
    rollup = threading.Thread(target=run_rollups, args=(rollup_conn, start, end, rollup_seconds, rollups))
    if mode in TRACKING_MODES:
        rollup.start()
    waits = {APP_NAME: Counter[str](), ROLLUP_APP_NAME: Counter[str]()}
    time.sleep(max(0.0, start - time.monotonic()))
    cpu_before = CpuTicks.read(clients.backend_pids, rollup_conn.info.backend_pid)
    while time.monotonic() < end:
        # What the benchmark's backends and the rollup's are doing: a wait event, or none (on CPU).
        for application, event, n in monitor.execute(
            "select application_name, coalesce(wait_event_type || ':' || wait_event, 'CPU'), count(*)"
            " from pg_stat_activity where application_name = any(%s) and state = 'active' group by 1, 2",
            (list(waits),),
        ):
            waits[application][event] += n
        time.sleep(0.05)
    cpu_after = CpuTicks.read(clients.backend_pids, rollup_conn.info.backend_pid)
    load = clients.results()
    if rollup.is_alive():
        rollup.join()
    updated_after, wal_after = server_counters(monitor)
    wal = {name: wal_after[name] - wal_before[name] for name in WAL_COLUMNS}
    return Phase(
        mode,
        round_,
        seconds,
        load,
        waits[APP_NAME],
        waits[ROLLUP_APP_NAME],
        rollups,
        (updated_before, updated_after),
        wal,
        (cpu_before, cpu_after),
    )


def commit_settings(conn: psycopg.Connection, user: uuid.UUID, request: dict[str, Any]) -> dict[str, str]:
    """synchronous_commit at the end of a serving transaction, as shipped and with the durable override (all
    rolled back): the setting its commit follows."""
    seen: dict[str, str] = {}
    with conn.transaction(force_rollback=True):
        conn.execute("set local session_replication_role = replica")  # a session without the start trigger
        row = conn.execute(
            "insert into public.practice_sessions (user_id, session_type, config) values (%s, 'custom', %s)"
            " returning id",
            (user, Jsonb({**MARK, **request})),
        ).fetchone()
        assert row is not None
        conn.execute("set local session_replication_role = origin")
        for mode in (SHIPPED, DURABLE):
            with as_service(conn, rollback=True):
                conn.execute(SERVE, (user, row[0], Jsonb(request), WANTED))
                if mode == DURABLE:
                    conn.execute(DURABLE_COMMIT)
                setting = conn.execute("select current_setting('synchronous_commit')").fetchone()
                seen[mode] = setting[0] if setting else "?"
    return seen


def measure_throughput(
    url: str,
    users: list[uuid.UUID],
    threads: int,
    processes: int,
    seconds: float,
    rounds: int,
    rollup_seconds: float,
) -> dict[str, Any]:
    request = {**BUCKET, "count": WANTED}
    user_groups = [users[i * USERS_PER_THREAD : (i + 1) * USERS_PER_THREAD] for i in range(threads)]
    phases: list[Phase] = []
    vacuums: list[float] = []
    with connect(url, f"{APP_NAME} monitor") as monitor, connect(url, ROLLUP_APP_NAME) as rollup_conn:
        settings = commit_settings(monitor, users[0], request)
        clients = Clients(url, user_groups, processes, request)
        try:
            # Unmeasured: the bucket's pages into the cache, every connection's plans made.
            run_phase(clients, monitor, rollup_conn, SELECTION_ONLY, 0, min(seconds, 3), rollup_seconds)
            for round_ in range(1, rounds + 1):
                # ABBA: whatever drifts (the cache, the machine's other load) hits all modes alike.
                for mode in MODES if round_ % 2 else MODES[::-1]:
                    phases.append(run_phase(clients, monitor, rollup_conn, mode, round_, seconds, rollup_seconds))
                    summary = phases[-1].summary()
                    console.print(
                        f"round {round_} {mode}: {summary['requests_per_second']:.0f} requests/s, "
                        f"client CPU {summary['client_cpu_cores']:.2f} cores, backends "
                        f"{summary['backend_cpu_cores']:.2f}, machine busy {summary['machine_cpu_busy']:.0%}"
                    )
                    if mode == HOT_ROW:
                        # Its updates leave hundreds of dead versions of each popular row, each with its own index
                        # entries (usage_count is indexed: no HOT update), which every later walk of the bucket's
                        # top and every foreign key check would wade through (measured: the next phases at 40%).
                        began = time.monotonic()
                        monitor.execute("vacuum public.questions")
                        vacuums.append(time.monotonic() - began)
        finally:
            clients.close()
        # Serving updates no question, but each session_questions insert's foreign key check takes FOR KEY SHARE on
        # its question: a row lock, written into the popular rows' xmax (a multixact when several serves share it).
        locked = monitor.execute(
            """
            select count(*) filter (where xmax::text <> '0') from (
              select xmax from public.questions q
              where q.is_active and q.category = %(category)s and q.difficulty = %(difficulty)s
                and q.experience_level = %(experience_level)s
              order by q.rank_score desc limit 200) top
            """,
            BUCKET,
        ).fetchone()
    medians = {mode: statistics.median(p.rate for p in phases if p.mode == mode) for mode in MODES}
    rate = {(p.round, p.mode): p.rate for p in phases}
    per_round = {
        mode: [rate[(r, mode)] / rate[(r, UNTRACKED)] for r in range(1, rounds + 1)]
        for mode in MODES
        if mode != UNTRACKED
    }
    rollups = [run for p in phases for run in p.rollups]
    return {
        "threads": threads,
        "client_processes": processes,
        "users_per_thread": USERS_PER_THREAD,
        "phase_seconds": seconds,
        "rounds": rounds,
        "rollup_every_seconds": rollup_seconds,
        "request": request,
        "synchronous_commit_at_serving_commit": settings,
        "phases": [p.summary() for p in phases],
        "median_requests_per_second": medians,
        # The target's ratio: serving with usage tracking against the same serving without it.
        "ratio_to_untracked": {mode: medians[mode] / medians[UNTRACKED] for mode in MODES if mode != UNTRACKED},
        "ratio_to_selection_only": {
            mode: medians[mode] / medians[SELECTION_ONLY] for mode in MODES if mode != SELECTION_ONLY
        },
        "ratio_to_untracked_per_round": per_round,
        "median_per_phase": {
            key: {mode: statistics.median(p.summary()[key] for p in phases if p.mode == mode) for mode in MODES}
            for key in (
                "backend_cpu_ms_per_request",
                "client_cpu_ms_per_request",
                "backend_cpu_cores",
                "client_cpu_cores",
                "other_cpu_cores",
                "machine_cpu_busy",
                "wal_syncs_per_second",
            )
        },
        "vacuum_after_hot_row_seconds": vacuums,
        "top_200_of_bucket_with_lock_xmax": locked[0] if locked else None,
        "shipped_questions_n_tup_upd": [
            {
                "round": p.round,
                "before": p.questions_n_tup_upd[0],
                "after": p.questions_n_tup_upd[1],
                "by_rollup": p.rollup_updates,
                "by_serving": p.serving_updates,
            }
            for p in phases
            if p.mode == SHIPPED
        ],
        "rollup_runs": {
            "runs": len(rollups),
            "errors": [run["error"] for run in rollups if "error" in run],
            "median_seconds": statistics.median(run["seconds"] for run in rollups) if rollups else None,
            "max_seconds": max((run["seconds"] for run in rollups), default=None),
            "wait_samples": dict(sum((p.rollup_waits for p in phases), Counter[str]()).most_common()),
        },
    }


# What the throughput phases change in place, saved and put back


def save_question_stats(conn: psycopg.Connection) -> None:
    """The statistics of the bucket's questions (the rollup rewrites them, the hot-row mode increments
    usage_count), the rollup watermark, and the transaction id after which any update is the run's own. In a
    file, so that a run that dies before putting them back is undone by the next."""
    row = conn.execute(
        """
        select jsonb_build_object(
          'xid', xid(pg_current_xact_id())::text,
          'watermark', (select to_jsonb(w) from private.rollup_watermarks w where w.name = 'question_stats'),
          'questions', (select coalesce(jsonb_agg(to_jsonb(q)), '[]') from (
            select id, usage_count, rating_avg, rating_count, rank_score, updated_at from public.questions
            where category = %(category)s and difficulty = %(difficulty)s) q)
        )::text
        """,
        BUCKET,
    ).fetchone()
    assert row is not None
    RESTORE_FILE.parent.mkdir(exist_ok=True)
    RESTORE_FILE.write_text(row[0], encoding="utf-8")
    # Without a watermark the first rollup would recount every question ever served (10M rows); on its schedule
    # it recounts only what was served since its last run.
    conn.execute(
        "insert into private.rollup_watermarks (name, processed_until) values ('question_stats', now())"
        " on conflict (name) do update set processed_until = excluded.processed_until"
    )


def restore_question_stats(conn: psycopg.Connection) -> dict[str, int] | None:
    """Puts back what save_question_stats saved, if a file is there; how many questions it restored, and how many
    outside the saved ones were updated since (none expected: they would stay changed)."""
    if not RESTORE_FILE.exists():
        return None
    saved = RESTORE_FILE.read_text(encoding="utf-8")
    with conn.transaction():
        conn.execute("set local session_replication_role = replica")  # no set_updated_at trigger: as saved
        outside = conn.execute(
            """
            select count(*) from public.questions q
            where age(q.xmin) < age((%(saved)s::jsonb ->> 'xid')::xid)
              and not (q.category = %(category)s and q.difficulty = %(difficulty)s)
            """,
            {**BUCKET, "saved": saved},
        ).fetchone()
        restored = conn.execute(
            """
            update public.questions q
            set usage_count = s.usage_count, rating_avg = s.rating_avg, rating_count = s.rating_count,
                rank_score = s.rank_score, updated_at = s.updated_at
            from jsonb_to_recordset(%s::jsonb -> 'questions')
              as s (id uuid, usage_count bigint, rating_avg numeric, rating_count integer,
                    rank_score double precision, updated_at timestamptz)
            where q.id = s.id
              and (q.usage_count, q.rating_avg, q.rating_count, q.rank_score, q.updated_at)
                  is distinct from (s.usage_count, s.rating_avg, s.rating_count, s.rank_score, s.updated_at)
            """,
            (saved,),
        ).rowcount
        conn.execute("delete from private.rollup_watermarks where name = 'question_stats'")
        conn.execute(
            """
            insert into private.rollup_watermarks
            select * from jsonb_populate_record(null::private.rollup_watermarks, %(saved)s::jsonb -> 'watermark')
            where jsonb_typeof(%(saved)s::jsonb -> 'watermark') = 'object'
            """,
            {"saved": saved},
        )
    RESTORE_FILE.unlink()
    return {"questions_restored": restored, "questions_updated_outside_saved": outside[0] if outside else 0}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=50, help="users given 1,000 served questions (default 50)")
    parser.add_argument("--heavy", type=int, default=20, help="of which mostly in the queried bucket (default 20)")
    parser.add_argument("--runs", type=int, default=500, help="measured calls of each function (default 500)")
    parser.add_argument("--threads", type=int, default=32)
    parser.add_argument("--processes", type=int, default=4, help="client processes sharing the threads (default 4)")
    parser.add_argument("--phase-seconds", type=float, default=10)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--rollup-seconds", type=float, default=5, help="rollup interval in tracking phases")
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
        undone = restore_question_stats(conn)
        if leftovers or undone:
            console.print(f"undid an interrupted run: {leftovers} sessions removed, question statistics {undone}")
        picked = pick_users(conn, args.users + args.threads * USERS_PER_THREAD, args.seed)
        latency_users, throughput_users = picked[: args.users], picked[args.users :]
        try:
            console.print(f"{describe(url)}: adding 1,000 served questions to each of {args.users} users")
            history = add_history(conn, latency_users, args.heavy)
            console.print(f"latency: {args.runs} measured calls of each function")
            latencies = measure_latency(conn, latency_users, args.heavy, args.runs)
            explained = explain_report(conn, latency_users[0])
            console.print(
                f"throughput: {args.threads} threads in {args.processes} processes, {args.rounds} rounds of"
                f" {len(MODES)} phases of {args.phase_seconds:g}s"
            )
            save_question_stats(conn)
            throughput = measure_throughput(
                url,
                throughput_users,
                args.threads,
                args.processes,
                args.phase_seconds,
                args.rounds,
                args.rollup_seconds,
            )
        finally:
            removed = remove_marked(conn)
            restored = restore_question_stats(conn)
            # Leaves the tables as generated for the next benchmark: the deleted and rewritten rows' index entries
            # would otherwise linger (far below autovacuum's thresholds at this volume) and slow later scans.
            conn.execute(
                "vacuum public.session_questions, public.served_questions, public.practice_sessions, public.questions"
            )
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
            "explain_selection": explained,
            "throughput": throughput,
            "target_ratio": TARGET_RATIO,
            "cleanup": {"sessions_deleted": removed, "question_statistics": restored},
        }
    print_report(report)
    write_report("question_selection", report)
    return 0


def print_report(report: dict[str, Any]) -> None:
    explained = report["explain_selection"]
    for shape, steps in explained["plans"].items():  # the first widening step's; the JSON has every step's
        console.print(Panel(steps[0], title=f"private.question_candidates, heavy user, {shape} (auto_explain)"))
    nodes = Table(title="Selection plan nodes (heavy user)")
    for column in ("request / step", "node", "index", "relation", "rows x loops", "removed by filter", "ms"):
        nodes.add_column(column, justify="right" if column in ("rows x loops", "removed by filter", "ms") else "left")
    for shape, steps in explained["nodes"].items():
        for step, step_nodes in enumerate(steps, start=1):
            for n in step_nodes:
                nodes.add_row(
                    f"{shape} / {step}", n["node"], n["index"] or "", n["relation"] or "",
                    f"{n['rows']:g} x {n['loops']}", str(n["removed_by_filter"] or ""), f"{n['ms']:.2f}",
                )  # fmt: skip
    console.print(nodes)
    console.print(
        f"indexes used: {', '.join(explained['indexes_used'])}; scans of questions/served_questions without an"
        f" index: {', '.join(explained['scans_without_index']) or 'none'}; engine functions identical to the"
        f" checkout's: {report['engine_functions_match_checkout']}"
    )

    lat = report["latency"]
    table = Table(title=f"Selection latency, ms ({lat['runs']} runs of each function)", caption=caption(report))
    for column in ("function / users / request", "runs", "p50", "p95", "p99", "max"):
        table.add_column(column, justify="left" if column.startswith("function") else "right")
    rows = [(f"{name} (all)", s) for name, s in lat["overall"].items()] + list(lat["by_case"].items())
    for name, s in rows:
        colour = "green" if s["p95_ms"] <= report["target_p95_ms"] else "red"
        table.add_row(
            name,
            str(s["runs"]),
            f"{s['median_ms']:.2f}",
            f"[{colour}]{s['p95_ms']:.2f}[/{colour}]",
            f"{s['p99_ms']:.2f}",
            f"{s['max_ms']:.2f}",
        )
    console.print(table)
    history = report["history"]
    console.print(
        f"history: {history['served_per_user_total_median']:.0f} served per user; in the queried bucket "
        f"{history['served_in_bucket_heavy_median']:.0f} (heavy) / {history['served_in_bucket_spread_median']:.0f}"
        f" (spread); calls short of {WANTED}: {lat['calls_short_of_5'] or 'none'}; target: question_candidates"
        f" p95 <= {report['target_p95_ms']:g} ms"
    )

    tp = report["throughput"]
    phases = Table(
        title=f"{tp['threads']} concurrent requests for one bucket ({tp['client_processes']} client processes),"
        f" {tp['phase_seconds']:g}s phases"
    )
    columns = ["round", "mode", "req/s", "short", "errors", "rollups (s)", "questions upd.", "WAL syncs/s",
               "CPU ms/req: backends / client", "CPU cores: backends / client / other",
               "top waits (samples)"]  # fmt: skip
    for column in columns:
        phases.add_column(column, justify="right" if column in ("req/s", "short", "WAL syncs/s") else "left")
    for p in tp["phases"]:
        waits = ", ".join(f"{k} {v}" for k, v in list(p["wait_samples"].items())[:4])
        errors = ", ".join(f"{k} x{v}" for k, v in p["errors"].items()) or "-"
        rollups = " ".join(f"{run['seconds']:.2f}" if "error" not in run else "ERROR" for run in p["rollups"])
        phases.add_row(
            str(p["round"]), p["mode"], f"{p['requests_per_second']:.0f}", str(p["short_of_5"]), errors,
            rollups or "-", f"{p['questions_updated_by_serving']} + rollup {p['questions_updated_by_rollup']}",
            f"{p['wal_syncs_per_second']:.0f}",
            f"{p['backend_cpu_ms_per_request']:.2f} / {p['client_cpu_ms_per_request']:.2f}",
            f"{p['backend_cpu_cores']:.2f} / {p['client_cpu_cores']:.2f} / {p['other_cpu_cores']:.2f}", waits,
        )  # fmt: skip
    console.print(phases)
    medians, ratios, per_round, to_selection = (
        tp["median_requests_per_second"],
        tp["ratio_to_untracked"],
        tp["ratio_to_untracked_per_round"],
        tp["ratio_to_selection_only"],
    )
    per_phase = tp["median_per_phase"]
    summary = Table(title=f"Medians over {tp['rounds']} rounds")
    for column in (
        "mode", "req/s", "ratio to serving untracked", "per round", "ratio to selection only", "backend CPU ms/req",
        "machine busy",
    ):  # fmt: skip
        summary.add_column(column, justify="left" if column == "mode" else "right")
    for mode in MODES:
        ratio = ratios.get(mode)
        shown = f"{ratio:.2f}" if ratio is not None else "1"
        if mode == SHIPPED:
            colour = "green" if ratio is not None and ratio >= report["target_ratio"] else "red"
            shown = f"[{colour}]{shown}[/{colour}] (target >= {report['target_ratio']})"
        rounds = " ".join(f"{r:.2f}" for r in per_round.get(mode, []))
        summary.add_row(
            mode, f"{medians[mode]:.0f}", shown, rounds, f"{to_selection.get(mode, 1):.2f}",
            f"{per_phase['backend_cpu_ms_per_request'][mode]:.2f}", f"{per_phase['machine_cpu_busy'][mode]:.0%}",
        )  # fmt: skip
    console.print(summary)
    rollups = tp["rollup_runs"]
    shipped_updates = "; ".join(
        f"{u['before']} -> {u['after']} ({u['by_rollup']} by the rollup, {u['by_serving']} by serving)"
        for u in tp["shipped_questions_n_tup_upd"]
    )
    console.print(
        f"synchronous_commit at a serving transaction's commit: {tp['synchronous_commit_at_serving_commit']}\n"
        f"public.questions n_tup_upd in the shipped phases: {shipped_updates}; top 200 of the bucket carrying a"
        f" row lock's xmax afterwards: {tp['top_200_of_bucket_with_lock_xmax']}\n"
        f"rollups: {rollups['runs']} runs, median {rollups['median_seconds']} s, max {rollups['max_seconds']} s,"
        f" errors: {rollups['errors'] or 'none'}, waits: {rollups['wait_samples']}\n"
        f"vacuum of questions after the hot-row phases:"
        f" {', '.join(f'{v:.1f}' for v in tp['vacuum_after_hot_row_seconds'])} s\n"
        f"clean-up: {report['cleanup']}"
    )


if __name__ == "__main__":
    sys.exit(main())
