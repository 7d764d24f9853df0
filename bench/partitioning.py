"""Monthly partitioning (migration 17) against the unpartitioned tables it replaced, side by side in one run.

Setup (not timed, except the conversion): database A at migration 16 (unpartitioned) with USERS users, SESSIONS
sessions of 10 answered questions each spread over 12 months, an AI call per answer, and a busy day (yesterday)
with BUSY_DAY extra answers; bulk-loaded with the triggers off, then analyzed. B is a copy of A migrated to 17
(the converting migration, timed: it copies every row month by month and compares counts and checksums). C is a
copy of B whose months before the last are detached (1 month of history instead of 12).

Measured (medians of ROUNDS alternating rounds, A and B, or B and C, interleaved):
1. busy-day analytics (service.aggregate_platform_day of the busy day) with 12 months of history (B) against
   1 month (C). Target <= 1.2x.
2. question selection (service.request_questions, rolled back) and RLS reads as the user (their latest answers,
   their sessions' summaries) on B against A: <= 1.1x; answer inserts as the user (one transaction each, rolled
   back) on B against A: throughput >= 0.9x. The RLS reads twice: rolled back, which has psycopg deallocate its
   prepared statements, so every read is planned (the figure first measured, `rls_read`), and as PostgREST sends
   them (bench/postgrest.py: its statement shapes, prepared on a long-lived connection, so the plan is cached;
   `rls_read_prepared`, and each read alone), with pg_stat_statements' planning and execution per call.
3. retention of one month: detach + attach (functions/analytics/retention.py) on B against the row moves of
   migration 12 (delete ... returning, insert into the archive) of the same month on A: >= 50x faster. The
   three months retired hold RETIRED_MONTH_SESSIONS more sessions each (about 250,000 answers a month, still a
   hundredth of the month the platform is built for): row moves grow with the month and a detach does not,
   so a month of 50,000 answers measured the DDL's fixed cost against almost no rows (45x on a quiet machine).
4. the live table over a simulated year (a database of its own): each month's answers arrive, the schedule's
   retention keeps KEEP months; the size of public.responses after each month.
5. EXPLAIN of the hot queries on B: which partitions each one reads; and the generic plans of the user's reads
   (what a prepared statement keeps), executed: which months they read, and how many were removed at run time.

Run: .venv/bin/python -m bench.partitioning [--users 2000] [--sessions 60000] [--busy-day 50000] [--rounds 5]
     [--retired-month-sessions 20000] [--db-prefix prep_bench_part] [--no-pin-cores]
Figures go to bench/out/partitioning.json.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import statistics
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, LiteralString

import psycopg
from psycopg import sql
from psycopg.conninfo import make_conninfo
from psycopg.types.json import Jsonb
from rich.console import Console

from bench import postgrest
from bench.database import read_marker, server_url, write_marker
from functions.analytics.retention import run_retention
from prep import migrations
from shared.db.rls import acting_as

OUT = Path(__file__).parent / "out" / "partitioning.json"
PARTITION_PREFIXES = tuple(
    f"{table}_{part}" for table in ("responses", "session_questions", "ai_usage") for part in ("p", "after")
)
BENCHMARK = "partitioning"
# GET /responses?user_id=eq.<user>&order=created_at.desc&limit=20 and the sessions' summaries, as PostgREST sends them;
# and the latest answers bounded to this month and the last (created_at=gte.<start>&created_at=lt.<tomorrow>).
POSTGREST_READS = {
    "latest_answers": ("responses", postgrest.read("responses", [("user_id", "=")], "created_at", 20)),
    "session_summaries": (
        "session_summaries",
        postgrest.read("session_summaries", [("user_id", "=")], "started_at", 10),
    ),
    "latest_answers_bounded": (
        "responses",
        postgrest.read("responses", [("user_id", "="), ("created_at", ">="), ("created_at", "<")], "created_at", 20),
    ),
}
LATEST_ANSWERS = (
    'WITH pgrst_source AS ( SELECT "public"."responses".* FROM "public"."responses"'
    ' WHERE "public"."responses"."user_id" = $1'
)
# The statements whose planning and execution pg_stat_statements reports for the RLS reads.
READ_STATEMENTS = {
    "latest answers, planned every time": "select * from public.responses where user_id",
    "session summaries, planned every time": "select * from public.session_summaries where user_id",
    "latest answers, as PostgREST sends it": LATEST_ANSWERS + " ORDER",
    "session summaries, as PostgREST sends it": 'WITH pgrst_source AS ( SELECT "public"."session_summaries"',
    "latest answers of this month and the last, as PostgREST sends it": LATEST_ANSWERS + " AND",
}
UNPARTITIONED = "20261204000016"
console = Console()

LOAD_SQL = """
set session_replication_role = replica;
update public.plans set usage_limits = usage_limits || '{"practice_sessions": 100000, "question_requests": 100000}';
insert into public.questions (id, content, category, difficulty, experience_level, source)
select md5('question:' || g)::uuid, format('Benchmark question %%s: tell me about a trade-off you made.', g),
       (enum_range(null::public.question_category))[1 + g %% 6],
       (enum_range(null::public.difficulty))[1 + g / 6 %% 3],
       (enum_range(null::public.experience_level))[1 + g / 18 %% 4], 'ai'
from generate_series(0, %(questions)s - 1) g;
insert into auth.users (instance_id, id, aud, role, email, raw_app_meta_data, raw_user_meta_data, created_at)
select '00000000-0000-0000-0000-000000000000', md5('user:' || u)::uuid, 'authenticated', 'authenticated',
       format('bench-%%s@partitioning.test', u), '{"provider": "email"}', '{}', now() - interval '13 months'
from generate_series(0, %(users)s - 1) u;
insert into public.users (id, email, created_at)
select md5('user:' || u)::uuid, format('bench-%%s@partitioning.test', u), now() - interval '13 months'
from generate_series(0, %(users)s - 1) u;
create temp table plan as
select k, md5('session:' || k)::uuid as id, k %% %(users)s as u, md5('user:' || (k %% %(users)s))::uuid as user_id,
       k / %(users)s as ordinal,
       case when k < %(sessions)s
            then now() - interval '365 days' + k * (interval '364 days' / %(sessions)s)
            when k < %(sessions)s + %(busy)s
            then date_trunc('day', now()) - interval '1 day' + (k - %(sessions)s) * (interval '1 day' / %(busy)s)
            -- the three months the retention rounds retire (after the first, partial one)
            else date_trunc('month', now() - interval '365 days') + interval '1 month'
                 + (k - %(sessions)s - %(busy)s) * (interval '89 days' / %(retired)s)
       end as started_at
from generate_series(0, %(sessions)s + %(busy)s + %(retired)s - 1) k;
insert into public.practice_sessions (id, user_id, session_type, status, started_at, ended_at, created_at)
select id, user_id, 'quick', 'completed', started_at, started_at + interval '30 minutes', started_at from plan;
insert into public.session_questions (id, session_id, user_id, question_id, position, served_at, created_at)
select md5('sq:' || k || ':' || pos)::uuid, id, user_id,
       md5('question:' || ((u * 7919 + ordinal * 10 + pos) %% %(questions)s))::uuid, pos, started_at, started_at
from plan cross join generate_series(1, 10) pos;
insert into public.responses (id, session_id, session_question_id, user_id, category, answer_text,
                              evaluation_status, ai_score, evaluated_at, created_at)
select md5('response:' || k || ':' || pos)::uuid, id, md5('sq:' || k || ':' || pos)::uuid, user_id,
       (enum_range(null::public.question_category))[1 + ((u * 7919 + ordinal * 10 + pos) %% %(questions)s) %% 6],
       repeat('I weighed the options, then ', 8), 'completed', 40 + (k * 10 + pos) %% 60,
       started_at + pos * interval '3 minutes', started_at + pos * interval '2 minutes'
from plan cross join generate_series(1, 10) pos;
insert into public.ai_usage (user_id, purpose, model, latency_ms, succeeded, cost_usd, response_id, created_at)
select user_id, 'evaluation', 'bench', 900, true, 0.0002, md5('response:' || k || ':' || pos)::uuid,
       started_at + pos * interval '3 minutes'
from plan cross join generate_series(1, 10) pos;
-- Each user's open session with 10 served questions nobody answered yet: what the insert benchmark answers.
insert into public.practice_sessions (id, user_id, session_type, status, started_at)
select md5('open:' || u)::uuid, md5('user:' || u)::uuid, 'quick', 'in_progress', now()
from generate_series(0, %(users)s - 1) u;
insert into public.session_questions (id, session_id, user_id, question_id, position, served_at)
select md5('open-sq:' || u || ':' || pos)::uuid, md5('open:' || u)::uuid, md5('user:' || u)::uuid,
       md5('question:' || ((u * 7919 + %(questions)s - 11 + pos) %% %(questions)s))::uuid, pos, now()
from generate_series(0, %(users)s - 1) u cross join generate_series(1, 10) pos;
reset session_replication_role;
"""


def recreate(admin: psycopg.Connection, name: str, template: str | None = None) -> str:
    marker = read_marker(admin, name)
    if marker is not None:
        if marker.get("benchmark") != BENCHMARK:
            raise SystemExit(f"database {name} exists and was not made by {BENCHMARK}; refusing to drop it")
        admin.execute(sql.SQL("drop database {} with (force)").format(sql.Identifier(name)))
    statement = sql.SQL("create database {}").format(sql.Identifier(name))
    if template:
        statement = sql.SQL("create database {} template {}").format(sql.Identifier(name), sql.Identifier(template))
    admin.execute(statement)
    write_marker(admin, name, {"benchmark": BENCHMARK})
    return make_conninfo(server_url(), dbname=name)


def drop(admin: psycopg.Connection, name: str) -> None:
    if (read_marker(admin, name) or {}).get("benchmark") == BENCHMARK:
        admin.execute(sql.SQL("drop database {} with (force)").format(sql.Identifier(name)))


def median_ms(samples: list[float]) -> float:
    return round(statistics.median(samples) * 1000, 3)


def timed(call: Callable[[], Any]) -> float:
    started = time.perf_counter()
    call()
    return time.perf_counter() - started


def claims(user: str) -> dict[str, Any]:
    return {"sub": user, "role": "authenticated", "aud": "authenticated"}


def md5_uuid(text: str) -> str:
    """The ids LOAD_SQL gives: md5(text)::uuid."""
    return str(uuid.UUID(hashlib.md5(text.encode()).hexdigest()))


def user_id(u: int) -> str:
    return md5_uuid(f"user:{u}")


def open_sq(u: int, pos: int) -> str:
    return md5_uuid(f"open-sq:{u}:{pos}")


def open_session(u: int) -> str:
    return md5_uuid(f"open:{u}")


class Probe:
    """The user-facing operations, one sample each, always rolled back."""

    def __init__(self, url: str, users: int) -> None:
        self.conn = psycopg.connect(url)
        self.postgrest = postgrest.connect(url, prepared=True)
        self.users = users

    def select(self, u: int) -> float:
        request = Jsonb({"category": "technical", "difficulty": "medium", "experience_level": "mid", "count": 5})
        with self.conn.transaction(force_rollback=True):
            return timed(
                lambda: self.conn.execute("select service.request_questions(%s, %s)", (user_id(u), request)).fetchone()
            )

    def read(self, u: int) -> float:
        with self.conn.transaction(force_rollback=True), acting_as(self.conn, claims(user_id(u))):
            return timed(
                lambda: (
                    self.conn.execute(
                        "select * from public.responses where user_id = %s order by created_at desc limit 20",
                        (user_id(u),),
                    ).fetchall(),
                    self.conn.execute(
                        "select * from public.session_summaries where user_id = %s order by started_at desc limit 10",
                        (user_id(u),),
                    ).fetchall(),
                )
            )

    def postgrest_read(self, u: int, reads: tuple[str, ...] = ("latest_answers", "session_summaries")) -> float:
        """The same reads as `read`, each a request the way PostgREST sends it: prepared on a long-lived
        connection, committed (psycopg deallocates its prepared statements at every rollback, so `read`, which
        rolls back, has every statement planned again)."""
        user = user_id(u)
        today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
        arguments = {
            "latest_answers": (user,),
            "session_summaries": (user,),
            "latest_answers_bounded": (user, add_months(today.replace(day=1), -1), today + timedelta(days=1)),
        }
        started = time.perf_counter()
        for name in reads:
            with postgrest.request(self.postgrest, claims(user), "GET", f"/{POSTGREST_READS[name][0]}"):
                self.postgrest.execute(POSTGREST_READS[name][1], arguments[name]).fetchone()
        return time.perf_counter() - started

    def latest_answers(self, u: int) -> float:
        return self.postgrest_read(u, ("latest_answers",))

    def session_summaries(self, u: int) -> float:
        return self.postgrest_read(u, ("session_summaries",))

    def latest_answers_bounded(self, u: int) -> float:
        return self.postgrest_read(u, ("latest_answers_bounded",))

    def pin(self, cpu: int) -> None:
        """Both server processes of this probe onto one CPU (see --pin-cores)."""
        for conn in (self.conn, self.postgrest):
            os.sched_setaffinity(conn.info.backend_pid, {cpu})

    def close(self) -> None:
        self.conn.close()
        self.postgrest.close()

    def answer(self, u: int) -> float:
        with self.conn.transaction(force_rollback=True), acting_as(self.conn, claims(user_id(u))):
            return timed(
                lambda: [
                    self.conn.execute(
                        "insert into public.responses (session_id, session_question_id, user_id, answer_text)"
                        " values (%s, %s, %s, 'An answer')",
                        (open_session(u), open_sq(u, pos), user_id(u)),
                    )
                    for pos in range(1, 11)
                ]
            )


def side_by_side(name: str, old: Probe, new: Probe, rounds: int, per_round: int) -> dict[str, Any]:
    """Alternating samples of one operation on A (old) and B (new); ratio of medians, per round and overall."""
    operation = {
        "selection": Probe.select,
        "rls_read": Probe.read,
        "rls_read_prepared": Probe.postgrest_read,
        "rls_read_prepared_latest_answers": Probe.latest_answers,
        "rls_read_prepared_session_summaries": Probe.session_summaries,
        "rls_read_prepared_latest_answers_bounded": Probe.latest_answers_bounded,
        "answer_inserts": Probe.answer,
    }[name]
    ratios, all_old, all_new = [], [], []
    for _ in range(rounds):
        round_old, round_new = [], []
        for _ in range(per_round):
            u = random.randrange(old.users)
            round_old.append(operation(old, u))
            round_new.append(operation(new, u))
        ratios.append(statistics.median(round_new) / statistics.median(round_old))
        all_old += round_old
        all_new += round_new
    result = {
        "unpartitioned_ms": median_ms(all_old),
        "partitioned_ms": median_ms(all_new),
        "round_ratios": [round(r, 3) for r in ratios],
        "ratio_median": round(statistics.median(ratios), 3),
    }
    console.print(f"{name}: {result}")
    return result


def platform_day(url: str, day: str) -> float:
    with psycopg.connect(url, autocommit=True) as conn:
        return timed(lambda: conn.execute("select service.aggregate_platform_day(%s)", (day,)).fetchone())


def keep_last_month(url: str) -> None:
    """C: every month before the busy day's detached from the three live tables (the archive is not read)."""
    with psycopg.connect(url, autocommit=True) as conn:
        busy_month = conn.execute("select date_trunc('month', now() - interval '1 day', 'UTC')").fetchone()[0]
        for parent in ("public.session_questions", "public.responses", "public.ai_usage"):
            old = conn.execute(
                "select c.oid::regclass::text from pg_inherits i join pg_class c on c.oid = i.inhrelid"
                " where i.inhparent = %s::regclass and c.relname ~ '_p[0-9]{6}$'"
                " and to_date(right(c.relname, 6), 'YYYYMM') < %s",
                (parent, busy_month),
            ).fetchall()
            for (table,) in old:
                conn.execute(f"alter table {parent} detach partition {table}")  # type: ignore[arg-type]
                conn.execute(f"drop table {table}")  # type: ignore[arg-type]
        conn.execute("vacuum analyze")


def explain(url: str, day: str) -> dict[str, list[str]]:
    queries = {
        "a day's answers (platform metrics)": (
            "select count(*) from public.responses where created_at >= %(day)s::date and created_at < %(day)s::date + 1"
        ),
        "a day's served questions": (
            "select count(*) from public.session_questions"
            " where served_at >= %(day)s::date and served_at < %(day)s::date + 1"
        ),
        "a day's AI spend": (
            "select sum(cost_usd) from public.ai_usage"
            " where created_at >= %(day)s::date and created_at < %(day)s::date + 1"
        ),
        "today's AI spend (the spend cap)": (
            "select sum(cost_usd) from public.ai_usage"
            " where created_at >= date_trunc('day', now() at time zone 'utc') at time zone 'utc'"
        ),
        "a user's latest answers (history screen)": (
            "select * from public.responses where user_id = %(user)s order by created_at desc limit 20"
        ),
        "never served? (selection's probe, the ledger)": (
            "select from public.served_questions where user_id = %(user)s and question_id = md5('question:1')::uuid"
        ),
    }
    plans: dict[str, list[str]] = {}
    with psycopg.connect(url, autocommit=True) as conn:
        for what, query in queries.items():
            lines = [
                row[0]
                for row in conn.execute(
                    f"explain (analyze, costs off, timing off, summary off) {query}",  # type: ignore[arg-type]
                    {"day": day, "user": user_id(1)},
                )
            ]
            scanned = sorted({word for line in lines for word in line.split() if word.startswith(PARTITION_PREFIXES)})
            plans[what] = scanned
            console.print(f"[bold]{what}[/bold]: reads {', '.join(scanned) or 'no partition'}")
            console.print("\n".join("    " + line for line in lines))
    return plans


READS = (
    "rls_read",
    "rls_read_prepared",
    "rls_read_prepared_latest_answers",
    "rls_read_prepared_session_summaries",
    "rls_read_prepared_latest_answers_bounded",
)


def read_server_times(servers: dict[str, postgrest.ServerTimes]) -> dict[str, dict[str, Any]]:
    """Per read statement and database: how many calls were planned, planning and execution ms a call."""
    figures = {
        what: {side: server_times.of(prefix).get("authenticated") for side, server_times in servers.items()}
        for what, prefix in READ_STATEMENTS.items()
    }
    for what, sides in figures.items():
        console.print(f"server, {what}: {sides}")
    return figures


# A generic plan of each read (the plan a prepared statement keeps), executed as the user: which months it plans
# to read, which of them it read (an ordered Append stops once it has its rows: the rest are "never executed"),
# and whether any were left out at run time ("Subplans Removed").
GENERIC_PLAN_READS: dict[str, tuple[LiteralString, LiteralString]] = {
    "a user's latest answers (history screen)": (
        "uuid",
        "select * from public.responses where user_id = $1 order by created_at desc limit 20",
    ),
    "a user's latest session summaries": (
        "uuid",
        "select * from public.session_summaries where user_id = $1 order by started_at desc limit 10",
    ),
    "a user's answers of this month and the last (a history bounded by months)": (
        "uuid, timestamptz, timestamptz",
        "select * from public.responses where user_id = $1 and created_at >= $2 and created_at < $3"
        " order by created_at desc limit 20",
    ),
}


def scanned_relation(plan_line: str) -> str:
    """The table a scan node reads ("... Scan [using <index>] on <table> [alias]"), else '' (a bitmap index scan
    names its index)."""
    words = plan_line.split()
    table_scan = "Scan" in words and "on" in words and "Bitmap Index Scan" not in plan_line
    return words[words.index("on") + 1] if table_scan else ""


def generic_plans(url: str) -> dict[str, dict[str, Any]]:
    user = user_id(1)
    today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    bounds = [sql.Literal(add_months(today.replace(day=1), -1)), sql.Literal(today + timedelta(days=1))]
    plans: dict[str, dict[str, Any]] = {}
    with psycopg.connect(url) as conn:
        for what, (types, query) in GENERIC_PLAN_READS.items():
            with conn.transaction(force_rollback=True), acting_as(conn, claims(user)):
                conn.execute("set local plan_cache_mode = force_generic_plan")
                conn.execute(sql.SQL("prepare generic_read ({}) as {}").format(sql.SQL(types), sql.SQL(query)))
                arguments = [sql.Literal(user)] + (bounds if "timestamptz" in types else [])
                lines = [
                    row[0]
                    for row in conn.execute(
                        sql.SQL(
                            "explain (analyze, costs off, timing off, summary off) execute generic_read ({})"
                        ).format(sql.SQL(", ").join(arguments))
                    )
                ]
                conn.execute("deallocate generic_read")
            scans = {
                (relation, "(never executed)" not in line)
                for line in lines
                if (relation := scanned_relation(line)).startswith(PARTITION_PREFIXES)
            }
            planned = sorted({relation for relation, _ in scans})
            read = sorted({relation for relation, executed in scans if executed})
            removed = sum(int(line.split(":")[1]) for line in lines if "Subplans Removed" in line)
            plans[what] = {
                "partitions_planned": planned,
                "partitions_read": read,
                "subplans_removed_at_run_time": removed,
            }
            console.print(
                f"[bold]generic plan, {what}[/bold]: {len(planned)} partitions planned, {len(read)} read,"
                f" {removed} removed at run time"
            )
            console.print("\n".join("    " + line for line in lines))
    return plans


def retention_against_row_moves(old_url: str, new_url: str, rounds: int) -> dict[str, Any]:
    """The oldest live month each round: row moves on A, detach + attach on B."""
    moves, detaches, rows = [], [], []
    with psycopg.connect(old_url, autocommit=True) as conn:
        oldest = conn.execute("select date_trunc('month', min(created_at), 'UTC') from public.responses").fetchone()[0]
    for index in range(rounds):
        start = add_months(oldest, index + 1)  # the first month is partial
        end = add_months(start, 1)
        with psycopg.connect(old_url, autocommit=True) as conn:
            moved = conn.execute(
                "select count(*) from public.responses where created_at >= %s and created_at < %s", (start, end)
            ).fetchone()[0]
            began = time.perf_counter()
            conn.execute(
                "with moved as (delete from public.responses where created_at >= %s and created_at < %s"
                " returning *) insert into archive.responses select * from moved",
                (start, end),
            )
            moves.append(time.perf_counter() - began)
        rows.append(moved)
        began = time.perf_counter()
        run_retention(new_url, as_of=datetime.now(UTC), keep_months=_months_between(end, datetime.now(UTC)))
        detaches.append(time.perf_counter() - began)
        console.print(f"retention of {start:%Y-%m} ({moved} answers): rows moved in {moves[-1]:.3f} s, by partition")
        console.print(f"  in {detaches[-1]:.3f} s")
    ratios = [m / d for m, d in zip(moves, detaches, strict=True)]
    return {
        "rows_per_month": rows,
        "row_moves_s": [round(m, 3) for m in moves],
        "by_partition_s": [round(d, 3) for d in detaches],
        "speedups": [round(r, 1) for r in ratios],
        "speedup_median": round(statistics.median(ratios), 1),
    }


def add_months(at: datetime, months: int) -> datetime:
    total = at.month - 1 + months
    return at.replace(year=at.year + total // 12, month=total % 12 + 1)


def _months_between(start: datetime, now: datetime) -> int:
    """How many months to keep so that every month before `start` is past the window."""
    return (now.year - start.year) * 12 + now.month - start.month


def simulated_year(admin: psycopg.Connection, prefix: str, per_month: int, keep: int) -> dict[str, Any]:
    """Month by month: the month's answers arrive, months ahead are made, retention keeps `keep` months."""
    url = recreate(admin, f"{prefix}_year")
    try:
        with psycopg.connect(url, autocommit=True) as conn:
            migrations.build(conn)
            conn.execute("set session_replication_role = replica")
            conn.execute(
                "insert into public.users (id, email) values ('00000000-0000-4000-8000-000000000001', 'y@bench.test')"
            )
            conn.execute(
                "insert into public.practice_sessions (id, user_id, session_type, status, started_at)"
                " values ('00000000-0000-4000-8000-000000000002', '00000000-0000-4000-8000-000000000001', 'quick',"
                " 'in_progress', now())"
            )
            start = datetime(2030, 1, 1, tzinfo=UTC)
            sizes = []
            for month in range(14):
                at = add_months(start, month)
                conn.execute("select private.ensure_month_partitions(%s, 2)", (at,))
                conn.execute(
                    "insert into public.responses (session_id, session_question_id, user_id, category, answer_text,"
                    " created_at)"
                    " select '00000000-0000-4000-8000-000000000002', gen_random_uuid(),"
                    " '00000000-0000-4000-8000-000000000001', 'technical', repeat('an answer ', 20),"
                    " %s + g * (interval '27 days' / %s) from generate_series(1, %s) g",
                    (at, per_month, per_month),
                )
                run_retention(url, as_of=at + timedelta(days=28), keep_months=keep)
                size = int(
                    conn.execute(
                        "select sum(pg_total_relation_size(relid)) from pg_partition_tree('public.responses')"
                    ).fetchone()[0]
                )
                sizes.append(size)
                console.print(f"month {month + 1}: live public.responses {size / 1e6:.1f} MB")
    finally:
        drop(admin, f"{prefix}_year")
    return {"answers_per_month": per_month, "keep_months": keep, "live_bytes_by_month": sizes}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, default=2000)
    parser.add_argument("--sessions", type=int, default=60_000, help="over 12 months, 10 answers each")
    parser.add_argument("--busy-day", type=int, default=5_000, help="extra sessions yesterday, 10 answers each")
    parser.add_argument("--questions", type=int, default=20_000)
    parser.add_argument(
        "--retired-month-sessions",
        type=int,
        default=20_000,
        help="extra sessions (10 answers each) in each of the 3 months the retention rounds retire",
    )
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--per-round", type=int, default=40)
    parser.add_argument("--year-per-month", type=int, default=20_000)
    parser.add_argument("--db-prefix", default="prep_bench_part", help="names of the scratch databases")
    parser.add_argument(
        "--pin-cores",
        action=argparse.BooleanOptionalAction,
        default=len(os.sched_getaffinity(0)) >= 2,
        help="side-by-side probes with this process on CPU 0 and the servers' processes on CPU 1 (the default with"
        " 2 CPUs or more): unpinned, where the scheduler puts the two processes moves a 0.5 ms read by up to 1.9x"
        " from round to round",
    )
    args = parser.parse_args()
    a_name, b_name, c_name = (f"{args.db_prefix}_{letter}" for letter in "abc")
    result: dict[str, Any] = {"users": args.users, "answers": (args.sessions + args.busy_day) * 10}

    with psycopg.connect(server_url(), autocommit=True) as admin:
        a = recreate(admin, a_name)
        try:
            with psycopg.connect(a, autocommit=True) as conn:
                migrations.apply_stand_in(conn)
                list(migrations.migrate(conn, to_version=UNPARTITIONED))
                migrations.seed(conn)
                started = time.perf_counter()
                for statement in migrations.split_statements(
                    LOAD_SQL
                    % {
                        "users": args.users,
                        "sessions": args.sessions,
                        "busy": args.busy_day,
                        "retired": args.retired_month_sessions * 3,
                        "questions": args.questions,
                    }
                ):
                    conn.execute(statement)  # type: ignore[arg-type]
                conn.execute("vacuum analyze")
                console.print(f"loaded A (unpartitioned) in {time.perf_counter() - started:.0f} s")
            b = recreate(admin, b_name, template=a_name)
            with psycopg.connect(b, autocommit=True) as conn:
                started = time.perf_counter()
                list(migrations.migrate(conn))
                converted = time.perf_counter() - started
                conn.execute("vacuum analyze")
                counts = conn.execute(
                    "select (select count(*) from public.session_questions), (select count(*) from public.responses),"
                    " (select count(*) from public.ai_usage)"
                ).fetchone()
            result["conversion"] = {"seconds": round(converted, 1), "rows": sum(counts), "tables": counts}
            console.print(f"converted B in {converted:.1f} s ({sum(counts)} rows; counts and checksums compared)")
            c = recreate(admin, c_name, template=b_name)
            keep_last_month(c)

            busy_day = (datetime.now(UTC) - timedelta(days=1)).date().isoformat()
            result["explain"] = explain(b, busy_day)
            twelve, one = [], []
            for _ in range(args.rounds):
                twelve.append(platform_day(b, busy_day))
                one.append(platform_day(c, busy_day))
            result["busy_day_analytics"] = {
                "twelve_months_s": [round(t, 3) for t in twelve],
                "one_month_s": [round(t, 3) for t in one],
                "ratio_median": round(statistics.median(twelve) / statistics.median(one), 3),
                "target": 1.2,
            }
            console.print(f"busy-day analytics: {result['busy_day_analytics']}")
            drop(admin, c_name)

            with psycopg.connect(b, autocommit=True) as stats:  # B has pg_stat_statements' view (migration 18)
                servers = {"unpartitioned": postgrest.ServerTimes(stats, a_name),
                           "partitioned": postgrest.ServerTimes(stats, b_name)}  # fmt: skip
                for server_times in servers.values():
                    server_times.enable()
                old, new = Probe(a, args.users), Probe(b, args.users)
                if args.pin_cores:
                    os.sched_setaffinity(0, {0})
                    old.pin(1)
                    new.pin(1)
                result["pinned_cores"] = args.pin_cores
                for name in ("selection", "answer_inserts"):
                    result[name] = side_by_side(name, old, new, args.rounds, args.per_round)
                for server_times in servers.values():
                    server_times.reset()
                for name in READS:
                    result[name] = side_by_side(name, old, new, args.rounds, args.per_round)
                result["rls_read_server"] = read_server_times(servers)
                console.print(
                    "RLS reads, target <= 1.1: PostgREST sends them prepared on long-lived connections, so their"
                    f" plans are cached: rls_read_prepared ({result['rls_read_prepared']['ratio_median']:.2f}) answers"
                    f" it; rls_read ({result['rls_read']['ratio_median']:.2f}) is what planning every request costs."
                )
                old.close()
                new.close()
                os.sched_setaffinity(0, range(os.cpu_count() or 1))
            result["generic_plans"] = generic_plans(b)
            result["retention"] = retention_against_row_moves(a, b, min(args.rounds, 3))
            console.print(f"retention: {result['retention']}")
        finally:
            for name in (a_name, b_name, c_name):
                drop(admin, name)
        result["simulated_year"] = simulated_year(admin, args.db_prefix, args.year_per_month, keep=3)

    result["targets"] = {
        "busy_day_ratio": "<= 1.2",
        "selection_ratio": "<= 1.1",
        "rls_read_ratio": "<= 1.1",
        "insert_throughput": ">= 0.9 (1 / answer_inserts ratio)",
        "retention_speedup": ">= 50",
    }
    OUT.parent.mkdir(exist_ok=True)
    OUT.write_text(json.dumps(result, indent=2, default=str) + "\n")
    console.print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
