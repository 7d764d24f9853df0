"""Fill the benchmark database with a realistic volume: users, the question bank, sessions and answers.

    .venv/bin/python -m bench.generate_volume [--users 100000 --questions 1000000 --responses 10000000]

Everything is generated server-side with set-based SQL (insert ... select from generate_series), chunk by
chunk. Ids and values derive from each row's ordinal (md5, hashes), so rows reference each other without
lookups; timestamps are relative to the start of the run. The schema is exactly what the migrations make.

Layout follows how production writes the data, because read cost depends on it: sessions arrive in time
order from all users at once (a user's sessions are scattered over the heap); a session's questions are
served together when it starts; answers arrive in time order, interleaved with those of the other sessions
open at the time; progress rows are written by a periodic job, one period for all users at a time.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, LiteralString

import psycopg
from psycopg import sql
from rich.console import Console
from rich.progress import (
    BarColumn,
    Progress,
    SpinnerColumn,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table

from bench.database import (
    bench_url,
    dbname,
    describe,
    maintenance_url,
    read_marker,
    schema_files,
    schema_state,
    write_marker,
)
from prep import migrations

QUESTIONS_PER_SESSION = 10
HISTORY_DAYS = 180
IN_PROGRESS_HOURS = 6  # sessions started this recently are still open
PROGRESS_WEEKS = 4

console = Console()

QUESTION_TEMPLATES = [
    "Tell me about a time you disagreed with a teammate and how you resolved it.",
    "Describe a project that failed and what you learned from it.",
    "How would you design a rate limiter for a public API?",
    "Walk me through how you prioritise competing deadlines.",
    "Explain the trade-offs between consistency and availability in a distributed store.",
    "Tell me about a time you had to deliver difficult feedback.",
    "How would you onboard a new engineer onto a large legacy codebase?",
    "Describe a decision you made with incomplete information.",
    "What would you do in your first ninety days in this role?",
    "How do you decide when a piece of work is good enough to ship?",
    "Tell me about the most complex bug you have tracked down.",
    "How would you handle a stakeholder who keeps changing the requirements?",
    "Describe how you would reduce the latency of a slow web page.",
    "Tell me about a time you influenced a decision without formal authority.",
    "How would you split a monolith into services, and when would you not?",
    "Describe a time you went beyond what was asked of you.",
    "How do you keep a team motivated through a long, difficult project?",
    "What does a healthy code review culture look like to you?",
    "Tell me about a process you improved and how you measured the result.",
    "How would you estimate the number of requests a new feature will add?",
    "Describe how you handled a production incident from detection to postmortem.",
    "How do you balance technical debt against new features?",
    "Tell me about a time you had to learn a new domain quickly.",
    "What kind of culture helps you do your best work, and how do you contribute to it?",
]
ROLES = [
    "software engineer",
    "product manager",
    "data scientist",
    "engineering manager",
    "designer",
    "site reliability engineer",
    "data engineer",
    "solutions architect",
]
TAGS = [
    "communication", "conflict", "ownership", "leadership", "prioritisation", "system-design", "scalability",
    "databases", "caching", "api-design", "debugging", "testing", "incidents", "mentoring", "feedback",
    "stakeholders", "estimation", "strategy", "metrics", "hiring", "teamwork", "ambiguity", "failure",
    "learning", "performance", "security", "architecture", "process", "culture", "negotiation", "delivery",
    "customer-focus",
]  # fmt: skip
ANSWER_SENTENCES = [
    "In my last role I was responsible for the billing service used by every product team.",
    "The situation was that our release cadence had slowed to once a month.",
    "I started by talking to each person involved to understand their constraints.",
    "We agreed on a small experiment with a clear success metric before committing.",
    "I wrote a short proposal that laid out the options and their trade-offs.",
    "The hardest part was keeping everyone aligned while priorities kept shifting.",
    "I set up a weekly check-in so that problems surfaced early instead of late.",
    "We measured the error rate before and after the change to confirm the impact.",
    "Looking back, I would involve the support team much earlier next time.",
    "The result was a forty percent reduction in the time it took to ship a fix.",
    "I made sure the decision and its reasoning were written down for the team.",
    "My manager pushed back at first, so I brought data from the previous quarter.",
    "We split the work into milestones that each delivered something usable.",
    "I paired with a junior engineer on the riskiest part of the migration.",
    "Customers noticed the improvement within a week and churn went down.",
    "I learned that saying no early is kinder than saying yes and missing the date.",
    "The root cause turned out to be a race condition in the retry logic.",
    "We added monitoring so the same class of problem would page us immediately.",
    "I asked for feedback after the project and changed how I run planning.",
    "The team was sceptical, so I proposed a two week trial with an easy rollback.",
    "I focused on the outcome for the user rather than on the technical elegance.",
    "We cut scope deliberately and shipped the core workflow first.",
    "I documented the incident timeline and ran a blameless postmortem.",
    "Throughout, I kept stakeholders updated with a short written summary.",
    "The key trade-off was between consistency for reports and availability for checkout.",
    "I built a prototype over a weekend to show what the new flow could feel like.",
    "We negotiated a phased rollout with the compliance team.",
    "I realised the real problem was unclear ownership rather than the code itself.",
    "After the change, on-call pages dropped from ten a week to one or two.",
    "I would now start with the metric we want to move and work backwards.",
    "We reviewed the estimates every sprint and adjusted the plan openly.",
    "That experience taught me to test my assumptions with real users early.",
]
FEEDBACK_SENTENCES = [
    "Clear structure; quantify the outcome to make the impact more convincing.",
    "Good use of a concrete example; say more about your own contribution.",
    "Strong reflection on lessons learned; tighten the situation description.",
    "The trade-offs are well explained; mention how you validated the decision.",
    "Relevant answer, but the result is vague; add a measurable outcome.",
    "Well paced and specific; consider addressing the stakeholder perspective.",
    "Solid technical reasoning; explain how you would monitor it in production.",
    "Good ownership shown; the answer would benefit from a clearer conclusion.",
]
TIMEZONES = [
    "UTC", "Europe/London", "Europe/Berlin", "Europe/Madrid", "America/New_York", "America/Chicago",
    "America/Denver", "America/Los_Angeles", "America/Sao_Paulo", "Asia/Kolkata", "Asia/Singapore",
    "Asia/Tokyo", "Australia/Sydney", "Africa/Lagos",
]  # fmt: skip
PROGRESS_METRICS = ["sessions_completed", "questions_answered", "average_score", "minutes_practised", "streak_days"]


@dataclass(frozen=True)
class Volume:
    users: int
    questions: int
    responses: int

    @property
    def sessions(self) -> int:
        return self.responses // QUESTIONS_PER_SESSION


# Rows that pile up over time (sessions, served questions, answers) get ids shaped like UUIDv7: a millisecond
# time prefix, then md5 bits. Their id-keyed indexes then grow at the right edge. With random ids (the
# schema's gen_random_uuid()), every index insert lands on a random page, most of them logged in full after
# each checkpoint: session_questions took 10.5 minutes for 9.5M rows instead of 4 for 10M, and several times the WAL.
UUID7_SQL: LiteralString = """
create function pg_temp.uuid7(at timestamptz, seed text) returns uuid
language sql stable
as $$
  select overlay(overlay(overlay(md5(seed)
    placing lpad(to_hex(floor(extract(epoch from at) * 1000)::bigint), 12, '0') from 1 for 12)
    placing '7' from 13 for 1) placing '8' from 17 for 1)::uuid
$$
"""

# Users sign up between a year and HISTORY_DAYS ago, so every session starts after its user exists.
AUTH_USERS_SQL: LiteralString = """
insert into auth.users (id, aud, role, email, raw_app_meta_data, raw_user_meta_data, created_at, updated_at)
select md5('user:' || u)::uuid, 'authenticated', 'authenticated', 'user' || u || '@bench.example',
       '{"provider": "email", "providers": ["email"]}', '{}', t, t
from generate_series(%(lo)s::bigint, %(hi)s - 1) u
cross join lateral (
  select %(anchor)s - interval '365 days' + u * ((interval '364 days' - %(history)s) / %(users)s) as t
) ts
"""

PROFILES_SQL: LiteralString = """
insert into public.user_profiles (user_id, target_role, experience_level, skills, timezone, preferences)
select md5('user:' || u)::uuid,
       (%(roles)s::text[])[1 + u %% cardinality(%(roles)s::text[])],
       (enum_range(null::public.experience_level))[1 + u / 7 %% 5],
       array[(%(tags)s::text[])[1 + u %% 32], (%(tags)s::text[])[1 + (u + 1 + u / 32 %% 31) %% 32]],
       (%(timezones)s::text[])[1 + u %% cardinality(%(timezones)s::text[])],
       '{"daily_goal": 3, "email_reminders": true}'
from generate_series(%(lo)s::bigint, %(hi)s - 1) u
"""

# The ordinal in the text keeps every normalized-text hash distinct; the enums cycle so each combination
# is as common.
QUESTIONS_SQL: LiteralString = """
with added as (
insert into public.questions (id, content, category, difficulty, experience_level, target_role, tags,
                              source, generation_metadata, created_at, updated_at)
select md5('question:' || q)::uuid,
       (%(templates)s::text[])[1 + q %% cardinality(%(templates)s::text[])] || ' (scenario ' || q || ')',
       (enum_range(null::public.question_category))[1 + q %% 6],
       (enum_range(null::public.difficulty))[1 + q / 6 %% 3],
       (enum_range(null::public.experience_level))[1 + q / 18 %% 5],
       case when q %% 4 <> 0 then (%(roles)s::text[])[1 + q / 90 %% cardinality(%(roles)s::text[])] end,
       (array[(%(tags)s::text[])[1 + q %% 32],
              (%(tags)s::text[])[1 + (q + 1 + (h & 7)) %% 32],
              (%(tags)s::text[])[1 + (q + 11 + (h >> 3 & 7)) %% 32],
              (%(tags)s::text[])[1 + (q + 21 + (h >> 6 & 7)) %% 32]])[1:2 + (h >> 9 & 1023) %% 3],
       'ai',
       '{"model": "bench-generator", "prompt_version": 1}',
       t, t
from generate_series(%(lo)s::bigint, %(hi)s - 1) q
cross join lateral (select hashint8extended(q, 11) as h) x
cross join lateral (
  select %(anchor)s - interval '400 days' + q * (interval '390 days' / %(questions)s) as t
) ts
returning id, created_at
)
insert into public.question_answer_keys (question_id, evaluation_criteria, key_points, created_at, updated_at)
select id,
       '[{"name": "structure", "weight": 0.3}, {"name": "relevance", "weight": 0.4},
         {"name": "impact", "weight": 0.3}]',
       array['Names a concrete situation', 'States a measurable outcome'],
       created_at, created_at
from added
"""

# Sessions in start-time order (k) up to an hour ago, each drawn for a random user: about sessions/users per
# user, Poisson-like. `ordinal` numbers a user's sessions, which makes the questions served to them distinct.
PLAN_SQL: LiteralString = """
create temp table session_plan as
select k,
       pg_temp.uuid7(started_at, 'session:' || k) as id,
       u,
       md5('user:' || u)::uuid as user_id,
       (row_number() over (partition by u order by k) - 1)::int as ordinal,
       started_at,
       case when started_at > %(anchor)s - %(open_window)s then 'in_progress'
            when (h >> 10 & 1023) < 72 then 'abandoned'
            else 'completed' end::public.session_status as status,
       case when (h >> 20 & 1023) < 410 then 'quick'
            when (h >> 20 & 1023) < 717 then 'full'
            when (h >> 20 & 1023) < 922 then 'custom'
            else 'mock_interview' end::public.session_type as session_type,
       (40 + (h >> 30 & 65535) %% 6001 / 100.0)::numeric(5, 2) as score
from (
  select k, h, (hashint8extended(k, 2) & 2147483647) %% %(users)s as u,
         %(anchor)s - %(history)s
           + (k + (h & 1023) / 1024.0)::float8 * ((%(history)s - interval '1 hour') / %(sessions)s) as started_at
  from generate_series(0::bigint, %(sessions)s - 1) k
  cross join lateral (select hashint8extended(k, 1) as h) x
) drawn
"""

SESSIONS_SQL: LiteralString = """
insert into public.practice_sessions (id, user_id, session_type, status, config, started_at, ended_at,
                                      time_limit_seconds, overall_score, created_at, updated_at)
select id, user_id, session_type, status, '{"question_count": 10}', started_at,
       case when status <> 'in_progress' then started_at + interval '35 minutes' end,
       case when session_type = 'mock_interview' then 2700 end,
       case when status = 'completed' then score end,
       started_at,
       case when status <> 'in_progress' then started_at + interval '35 minutes' else started_at end
from session_plan
where k >= %(lo)s and k < %(hi)s
order by k
"""

# A session's questions are picked and served together when it starts. The user's n-th served question is
# question (base + n) mod Q, so a user's questions are distinct while they have seen fewer than Q; the bases
# are spread evenly so every question gets used.
SESSION_QUESTIONS_SQL: LiteralString = """
insert into public.session_questions (id, session_id, user_id, question_id, position, served_at, created_at,
                                      updated_at)
select pg_temp.uuid7(p.started_at, 'sq:' || p.k || ':' || pos), p.id, p.user_id,
       md5('question:' || (p.u * %(questions)s / %(users)s + p.ordinal * 10 + pos - 1) %% %(questions)s)::uuid,
       pos, p.started_at, p.started_at, p.started_at
from session_plan p
cross join generate_series(1, 10) pos
where p.k >= %(lo)s and p.k < %(hi)s
order by p.k, pos
"""

# One answer per served question, 4 to 6 sentences (about 200-400 characters), evaluated shortly after. Written
# in answer-time order, so a session's answers interleave with those of the other sessions open meanwhile.
RESPONSES_SQL: LiteralString = """
insert into public.responses (id, session_id, session_question_id, user_id, category, answer_text,
                              time_taken_seconds, evaluation_status, ai_score, feedback, criterion_scores, evaluator,
                              evaluated_at, created_at, updated_at)
select pg_temp.uuid7(t, 'response:' || p.k || ':' || pos), p.id,
       pg_temp.uuid7(p.started_at, 'sq:' || p.k || ':' || pos), p.user_id,
       -- the served question's category (QUESTIONS_SQL), as the answer trigger would copy it
       (enum_range(null::public.question_category))
         [1 + (p.u * %(questions)s / %(users)s + p.ordinal * 10 + pos - 1) %% %(questions)s %% 6],
       concat_ws(' ', s[1 + (h & 31)], s[1 + (h >> 5 & 31)], s[1 + (h >> 10 & 31)], s[1 + (h >> 15 & 31)],
                 case when (h >> 20 & 3) > 0 then s[1 + (h >> 22 & 31)] end,
                 case when (h >> 20 & 3) > 1 then s[1 + (h >> 27 & 31)] end),
       30 + (h >> 32 & 1023) %% 270,
       'completed',
       40 + (h >> 42 & 65535) %% 6001 / 100.0,
       (%(feedback)s::text[])[1 + (h >> 58 & 7)],
       '{"structure": {"score": 4, "max": 5, "weight": 0.3}, "relevance": {"score": 3, "max": 5, "weight": 0.4},
         "impact": {"score": 4, "max": 5, "weight": 0.3}}',
       '{"model": "bench-evaluator", "rubric_version": 1}',
       t + interval '20 seconds', t, t + interval '20 seconds'
from session_plan p
cross join generate_series(1, 10) pos
cross join lateral (
  select hashint8extended(p.k * 10 + pos, 7) as h, %(sentences)s::text[] as s,
         p.started_at + (pos - 1) * interval '3 minutes'
           + (30 + (hashint8extended(p.k * 10 + pos, 8) & 127)) * interval '1 second' as t
) x
where p.k >= %(lo)s and p.k < %(hi)s
order by t
"""

# One period for every user per statement, as the aggregation job writes them.
PROGRESS_SQL: LiteralString = """
insert into public.user_progress (user_id, metric_name, period, period_start, metric_value, created_at,
                                  updated_at)
select md5('user:' || u)::uuid, m, %(period)s, %(period_start)s,
       (hashint8extended(u * 100 + i, %(seed)s) & 65535) / 655.36,
       %(written_at)s, %(written_at)s
from generate_series(%(lo)s::bigint, %(hi)s - 1) u
cross join unnest(%(metrics)s::text[]) with ordinality as metric(m, i)
"""

COUNTED_TABLES = [
    "auth.users",
    "public.users",
    "public.user_profiles",
    "public.questions",
    "public.practice_sessions",
    "public.session_questions",
    "public.responses",
    "public.user_progress",
]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--questions", type=int, default=1_000_000)
    parser.add_argument("--responses", type=int, default=10_000_000, help="a multiple of 10 (10 per session)")
    parser.add_argument("--database-url", help="the database to fill (default: prep_bench on the server)")
    parser.add_argument("--regenerate", action="store_true", help="rebuild even if the volume is already there")
    args = parser.parse_args(argv)
    volume = Volume(args.users, args.questions, args.responses)
    if volume.users < 1 or volume.questions < QUESTIONS_PER_SESSION or volume.sessions < 1:
        parser.error("need at least 1 user, 10 questions and 10 responses")
    if volume.responses % QUESTIONS_PER_SESSION:
        parser.error("--responses must be a multiple of 10: every session serves 10 questions")

    url = bench_url(args.database_url)
    console.print(f"Target: [bold]{describe(url)}[/bold]  volume: {volume}")
    schema = schema_files()
    if not prepare_database(url, volume, schema, regenerate=args.regenerate):
        return 0
    started = time.perf_counter()
    with psycopg.connect(url, autocommit=True) as conn:
        migrations.build(conn)
        timings = generate(conn, volume)
        seconds = time.perf_counter() - started
        write_marker(
            conn,
            dbname(url),
            {
                "state": "complete",
                **asdict(volume),
                "schema_files": schema,
                "generated_at": datetime.now(UTC).isoformat(),
                "seconds": seconds,
            },
        )
        report(conn, timings, seconds)
    return 0


def prepare_database(url: str, volume: Volume, schema: dict[str, str], *, regenerate: bool) -> bool:
    """Create (or recreate) the database; False when it already holds the requested volume for this schema
    (migrated forward first when migrations were only added since)."""
    name = dbname(url)
    with psycopg.connect(maintenance_url(url), autocommit=True) as admin:
        marker = read_marker(admin, name)
        if marker == {}:
            raise SystemExit(f"database {name} exists and was not made by bench.generate_volume; refusing to touch it")
        if marker is not None:
            same_volume = all(marker.get(k) == v for k, v in asdict(volume).items())
            state = schema_state(marker)
            if marker.get("state") != "complete":
                reason = "an interrupted generation"
            elif not same_volume:
                reason = "another volume"
            elif state == "stale":
                reason = "data for an older schema (a migration, the stand-in or a seed changed since)"
            elif regenerate:
                reason = "this volume, regenerating as asked"
            else:
                if state == "behind":
                    migrate_forward(url, marker, schema)
                console.print(
                    f"{name} holds this volume for this schema (generated {marker['generated_at']} "
                    f"in {marker['seconds']:.0f}s); nothing to do."
                )
                return False
            console.print(f"{name} holds {reason}: dropping it and generating again.")
            admin.execute(sql.SQL("drop database {} with (force)").format(sql.Identifier(name)))
        admin.execute(sql.SQL("create database {}").format(sql.Identifier(name)))
        write_marker(admin, name, {"state": "building", **asdict(volume), "schema_files": schema})
    return True


def migrate_forward(url: str, marker: dict[str, Any], schema: dict[str, str]) -> None:
    """Apply the migrations added since generation, as a deployment would, and record the new schema."""
    with psycopg.connect(url, autocommit=True) as conn:
        for migration in migrations.migrate(conn):
            console.print(f"migrated forward: {migration.path.name}")
        write_marker(conn, dbname(url), {**marker, "schema_files": schema})


def generate(conn: psycopg.Connection, volume: Volume) -> list[tuple[str, int, float]]:
    """Run every step; return (step, rows, seconds) for each."""
    # A lost commit on a crash only means regenerating. The user-keyed indexes still take inserts on random
    # pages, logged in full after each checkpoint: compression shrinks those. The plan is a temp table.
    conn.execute("set synchronous_commit = off")
    conn.execute("set wal_compression = lz4")
    conn.execute("set work_mem = '512MB'")
    conn.execute("set maintenance_work_mem = '2GB'")
    conn.execute("set temp_buffers = '1GB'")
    conn.execute(UUID7_SQL)
    anchor = datetime.now(UTC).replace(microsecond=0)
    params: dict[str, Any] = {
        "anchor": anchor,
        "history": timedelta(days=HISTORY_DAYS),
        "open_window": timedelta(hours=IN_PROGRESS_HOURS),
        "users": volume.users,
        "questions": volume.questions,
        "sessions": volume.sessions,
        "roles": ROLES,
        "tags": TAGS,
        "templates": QUESTION_TEMPLATES,
        "timezones": TIMEZONES,
        "sentences": ANSWER_SENTENCES,
        "feedback": FEEDBACK_SENTENCES,
        "metrics": PROGRESS_METRICS,
    }
    columns = (
        SpinnerColumn(),
        TextColumn("{task.description:<18}"),
        BarColumn(bar_width=24),
        TextColumn("{task.completed:>11,.0f} / {task.total:<11,.0f}"),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=console) as progress:
        step = Stepper(conn, progress, params)
        step.chunks("users", AUTH_USERS_SQL, volume.users, 20_000)
        step.chunks("user_profiles", PROFILES_SQL, volume.users, 100_000)
        step.chunks("questions", QUESTIONS_SQL, volume.questions, 100_000)
        step.once("session plan", PLAN_SQL, volume.sessions)
        most = conn.execute("select coalesce(max(ordinal), 0) + 1 from session_plan").fetchone()
        if most and most[0] * QUESTIONS_PER_SESSION > volume.questions:
            raise SystemExit(f"a user gets {most[0]} sessions but only {volume.questions} questions exist")
        conn.execute("create index on session_plan (k)")
        conn.execute("analyze session_plan")
        # Back-filled history skips the insert triggers: the live-request rules (quota and question serving
        # when a session starts, answers only into an open session) do not apply to it, and the foreign key
        # checks cost as much as the inserts. Replica mode skips them all, as pg_dump --disable-triggers does;
        # verify_references then checks the same foreign keys set-based.
        step.once("month partitions", PARTITIONS_SQL, 3)
        conn.execute("set session_replication_role = replica")
        step.chunks("practice_sessions", SESSIONS_SQL, volume.sessions, 100_000)
        step.chunks("session_questions", SESSION_QUESTIONS_SQL, volume.sessions, 50_000, QUESTIONS_PER_SESSION)
        step.chunks("responses", RESPONSES_SQL, volume.sessions, 50_000, QUESTIONS_PER_SESSION)
        step.once("served_questions", SERVED_QUESTIONS_SQL, volume.sessions * QUESTIONS_PER_SESSION)
        conn.execute("reset session_replication_role")
        step.verify_references(["public.practice_sessions", "public.session_questions", "public.responses"])
        step.progress_periods(anchor, volume.users)
        step.vacuum()
    return step.timings


# The months of the history get their partitions before the load (migrations 17 and 33), or its rows would all
# land in the catch-all partition before the months; the maintenance makes the months ahead.
PARTITIONS_SQL: LiteralString = """
select private.create_month_partition(parent, m::date)
from unnest(private.partitioned_parents()) parent,
     generate_series(date_trunc('month', %(anchor)s - %(history)s, 'UTC'), %(anchor)s, interval '1 month') m
"""

# The ledger of served questions and their answers (migration 17), which the insert triggers fill live.
SERVED_QUESTIONS_SQL: LiteralString = """
insert into public.served_questions (user_id, question_id, session_question_id, response_id, created_at,
                                     updated_at)
select sq.user_id, sq.question_id, sq.id, r.id, sq.served_at, sq.served_at
from public.session_questions sq
left join public.responses r on r.session_question_id = sq.id
"""

FOREIGN_KEYS_SQL: LiteralString = """
select c.conname, c.conrelid::regclass::text, c.confrelid::regclass::text,
       array(select a.attname from unnest(c.conkey) with ordinality as k(attnum, i)
             join pg_attribute a on a.attrelid = c.conrelid and a.attnum = k.attnum order by k.i),
       array(select a.attname from unnest(c.confkey) with ordinality as k(attnum, i)
             join pg_attribute a on a.attrelid = c.confrelid and a.attnum = k.attnum order by k.i)
from pg_constraint c
where c.contype = 'f' and c.conrelid = any(%s::regclass[])
order by c.conname
"""


class Stepper:
    """Runs each generation step in chunks (one transaction each), with a progress bar, and times it."""

    def __init__(self, conn: psycopg.Connection, progress: Progress, params: dict[str, Any]) -> None:
        self.conn = conn
        self.progress = progress
        self.params = params
        self.timings: list[tuple[str, int, float]] = []

    def chunks(self, label: str, query: LiteralString, units: int, chunk: int, rows_per_unit: int = 1) -> None:
        task, started = self._start(label, units * rows_per_unit)
        for lo in range(0, units, chunk):
            hi = min(lo + chunk, units)
            self.conn.execute(query, {**self.params, "lo": lo, "hi": hi})
            self.progress.advance(task, (hi - lo) * rows_per_unit)
        self._done(task, label, started)

    def once(self, label: str, query: LiteralString, rows: int) -> None:
        task, started = self._start(label, rows)
        self.conn.execute(query, self.params)
        self.progress.advance(task, rows)
        self._done(task, label, started)

    def verify_references(self, tables: list[str]) -> None:
        """Every foreign key of `tables` holds (their columns are not null, so no MATCH SIMPLE exemption)."""
        keys = self.conn.execute(FOREIGN_KEYS_SQL, (tables,)).fetchall()
        task, started = self._start("check references", len(keys))
        for name, child, parent, columns, referenced in keys:
            matches = sql.SQL(" and ").join(
                sql.SQL("p.{} = c.{}").format(sql.Identifier(r), sql.Identifier(col))
                for col, r in zip(columns, referenced, strict=True)
            )
            query = sql.SQL("select count(*) from {} c where not exists (select from {} p where {})").format(
                sql.SQL(child), sql.SQL(parent), matches
            )
            row = self.conn.execute(query).fetchone()
            if row and row[0]:
                raise SystemExit(f"generator bug: {row[0]:,} rows of {child} violate {name}")
            self.progress.advance(task)
        self._done(task, "check references", started)

    def progress_periods(self, anchor: datetime, users: int) -> None:
        """The last weeks, then all-time: each period written for all users at once, like the aggregation job."""
        this_week = anchor.date().toordinal() - anchor.weekday()
        periods = [("week", datetime.fromordinal(this_week - 7 * w).date()) for w in range(PROGRESS_WEEKS - 1, -1, -1)]
        periods.append(("all_time", datetime.fromordinal(anchor.date().toordinal() - 365).date()))
        task, started = self._start("user_progress", users * len(PROGRESS_METRICS) * len(periods))
        for seed, (period, period_start) in enumerate(periods):
            for lo in range(0, users, 100_000):
                hi = min(lo + 100_000, users)
                values = {"period": period, "period_start": period_start, "seed": seed, "lo": lo, "hi": hi}
                self.conn.execute(PROGRESS_SQL, {**self.params, **values, "written_at": anchor})
                self.progress.advance(task, (hi - lo) * len(PROGRESS_METRICS))
        self._done(task, "user_progress", started)

    def vacuum(self) -> None:
        """Sets hint bits and the visibility map (index-only scans) and gives the planner statistics."""
        task, started = self._start("vacuum analyze", len(COUNTED_TABLES))
        for name in COUNTED_TABLES:
            self.conn.execute(sql.SQL("vacuum (analyze) {}").format(sql.SQL(name)))
            self.progress.advance(task)
        self._done(task, "vacuum analyze", started)

    def _start(self, label: str, total: int) -> tuple[TaskID, float]:
        return self.progress.add_task(label, total=total), time.perf_counter()

    def _done(self, task: TaskID, label: str, started: float) -> None:
        total = self.progress.tasks[task].total or 0
        self.timings.append((label, int(total), time.perf_counter() - started))


def report(conn: psycopg.Connection, timings: list[tuple[str, int, float]], seconds: float) -> None:
    steps = Table(title="steps")
    steps.add_column("step")
    steps.add_column("rows", justify="right")
    steps.add_column("seconds", justify="right")
    for label, rows, elapsed in timings:
        steps.add_row(label, f"{rows:,}", f"{elapsed:.1f}")
    console.print(steps)
    tables = Table(title=f"generated in {seconds / 60:.1f} min")
    tables.add_column("table")
    tables.add_column("rows", justify="right")
    tables.add_column("size with indexes", justify="right")
    for name in COUNTED_TABLES:
        count = conn.execute(sql.SQL("select count(*) from {}").format(sql.SQL(name))).fetchone()
        size = conn.execute(  # a partitioned table's size is its partitions' (its own is 0)
            "select pg_size_pretty(coalesce((select sum(pg_total_relation_size(relid))"
            " from pg_partition_tree(%s::regclass)), pg_total_relation_size(%s::regclass)))",
            (name, name),
        ).fetchone()
        tables.add_row(name, f"{count[0] if count else 0:,}", size[0] if size else "?")
    database_size = conn.execute("select pg_size_pretty(pg_database_size(current_database()))").fetchone()
    tables.caption = f"database size: {database_size[0] if database_size else '?'}"
    console.print(tables)


if __name__ == "__main__":
    sys.exit(main())
