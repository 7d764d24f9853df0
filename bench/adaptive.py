"""Adaptive practice: calibration accuracy and cost, recommend_next's latency at volume, and what recommended
practice does for simulated learners against uniformly random questions.

    .venv/bin/python -m bench.adaptive [--users 100000 --answers 1000000 --learners 150 --days 12 --repeats 3 --seed 19]

Setup (timed and reported, not a target): a fresh scratch database `prep_bench_adaptive` (stand-in, migrations,
seed), EXTRA_QUESTIONS questions beside the 360 curated, USERS users with profiles, and ANSWERS scored answers
over HISTORY_DAYS days, written in bulk (sessions, served questions, the ledger, answers; insert triggers off).
Every question has a hidden true difficulty (its label's prior -1/0/+1 plus N(0, 0.8): labels are right on
average, wrong for many questions); every user a hidden ability per category, N(0, 1). An answer's score is
100 * clip(p + N(0, 0.1)) with p = 1 / (1 + exp(difficulty - ability)), the Rasch model the calibration fits.

Measured, in order:
1. calibration accuracy: service.calibrate_answers day by day (as the schedule would, one call per day) until at
   least 100,000 answers are in; Spearman between the fitted and the hidden difficulty of every question that
   had an answer (target >= 0.8); then the rest of the history but its last day in one call;
2. the incremental run over the last day's answers (target <= 30 s), and the daily peer percentiles;
3. recommend_next as PostgREST runs it (role authenticated, the user's claims, one transaction each) for
   random users of the volume (target p95 <= 20 ms);
4. learners: LEARNERS new users per arm with hidden abilities N(-0.5, 1), a 5-question session a day for DAYS
   days; arm `recommended` starts `{"mode": "recommended"}` sessions through public.start_session, arm `random`
   gets 5 unserved questions of its level drawn uniformly. Both arms' answers are scored as above and
   calibrated daily. The learner model (an assumption, stated so the figure can be judged): an answer raises the
   hidden ability in its category by RATE * 4p(1 - p) * 2 / (1 + exp(ability)): most when success is uncertain
   (a question neither trivial nor hopeless) and more for a weak category than a strong one; nothing is forgotten,
   so spacing earns nothing here. Target: mean ability gain (over learners and categories) recommended >= 1.3x
   random. The comparison is repeated REPEATS times with fresh learners (seeds SEED, SEED+1, ...; each trial's
   answers are removed afterwards and the calibration's watermark put back, so every trial practises the same
   days on the same bank); the figure is the median of the trials' ratios. A limit of this simulation besides
   the missing forgetting: the learners' days lie in the past while the picks read the clock (now()), so every
   category practised is as due for review as a new one and the SM-2 term of the ranking barely matters here.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import statistics
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
from psycopg.types.json import Jsonb
from rich.table import Table

from bench.database import fresh_scratch_database, write_marker
from bench.questions_common import caption, console, latency, machine, now_iso, revision, write_report
from prep.localdb import database_url

DB_NAME = "prep_bench_adaptive"
MARKER = {"benchmark": "adaptive"}
EXTRA_QUESTIONS = 2_000
HISTORY_DAYS = 30
ANSWERS_PER_SESSION = 5
RATE = 0.08  # the learners' learning rate (logits per answer at p = 0.5 and ability 0)
CALIBRATION_ANSWERS = 100_000
TARGETS = {"gain_ratio": 1.3, "spearman": 0.8, "recommend_p95_ms": 20.0, "incremental_seconds": 30.0}

NORMAL = "(sqrt(-2 * ln(1 - random())) * cos(2 * pi() * random()))"

LOAD_SQL = [
    "set session_replication_role = replica",
    "set synchronous_commit = off",
    "set work_mem = '256MB'",
    "create schema bench",
    "create table bench.true_difficulty (question_id uuid primary key, difficulty double precision not null)",
    "create table bench.true_ability (user_id uuid, category public.question_category, ability double precision,"
    " primary key (user_id, category))",
    """insert into public.questions (content, category, difficulty, experience_level, source)
       select format('Bench question %%s (%%s): walk me through how you would handle it.', g, md5(g::text)),
              (enum_range(null::public.question_category))[1 + g %% 6],
              (enum_range(null::public.difficulty))[1 + (g / 6) %% 3],
              (enum_range(null::public.experience_level))[1 + (g / 18) %% 5], 'ai'
       from generate_series(1, %(questions)s) g""",
    f"""insert into bench.true_difficulty
        select id, case difficulty when 'easy' then -1 when 'medium' then 0 else 1 end + 0.8 * {NORMAL}
        from public.questions""",
    """create table bench.users as
       select gen_random_uuid() as id, g,
              (array['software engineer', 'product manager', 'data scientist', 'engineering manager', 'designer',
                     'data engineer', 'site reliability engineer', 'solutions architect'])[1 + g %% 8] as role,
              (enum_range(null::public.experience_level))[1 + (g / 8) %% 5] as level
       from generate_series(1, %(users)s) g""",
    """insert into auth.users (instance_id, id, aud, role, email, raw_app_meta_data, raw_user_meta_data,
                               created_at, updated_at)
       select '00000000-0000-0000-0000-000000000000', id, 'authenticated', 'authenticated',
              'adaptive-' || g || '@bench.example', '{}', '{}', now(), now() from bench.users""",
    "insert into public.users (id, email) select id, 'adaptive-' || g || '@bench.example' from bench.users",
    """insert into public.user_profiles (user_id, target_role, experience_level)
       select id, role, level from bench.users""",
    f"""insert into bench.true_ability select u.id, c, {NORMAL}
        from bench.users u cross join unnest(enum_range(null::public.question_category)) c""",
    # Each user answers `per_user` distinct questions of their level, spread evenly over the history.
    """create table bench.pool as
       select id as question_id, category, experience_level as level,
              row_number() over (partition by experience_level order by id) - 1 as n,
              count(*) over (partition by experience_level) as size
       from public.questions where is_active""",
    "create index on bench.pool (level, n)",
    "create table bench.level_size as select level, max(size) as size from bench.pool group by level",
    # A prime stride from a random start: a user's questions are distinct while per_user < a level's size.
    """create table bench.plan as
       select u.id as user_id, k, p.question_id, p.category,
              %(start)s::timestamptz + (k - 1 + random()) * %(span)s::interval / %(per_user)s as at,
              gen_random_uuid() as served_id, gen_random_uuid() as answer_id
       from bench.users u
       join bench.level_size z on z.level = u.level
       cross join generate_series(1, %(per_user)s) k
       join bench.pool p on p.level = u.level and p.n = ((hashtext(u.id::text) & 65535) + k * 7919) %% z.size""",
    """create table bench.sessions as
       select user_id, (k - 1) / 5 as number, gen_random_uuid() as id, min(at) as started_at, max(at) as ended_at
       from bench.plan group by user_id, (k - 1) / 5""",
    """insert into public.practice_sessions (id, user_id, session_type, status, config, started_at, ended_at)
       select id, user_id, 'custom', 'completed', '{}', started_at, ended_at from bench.sessions""",
    """insert into public.session_questions (id, session_id, user_id, question_id, position, widening, served_at)
       select p.served_id, s.id, p.user_id, p.question_id, (p.k - 1) %% 5 + 1, 'exact', p.at - interval '2 minutes'
       from bench.plan p join bench.sessions s on s.user_id = p.user_id and s.number = (p.k - 1) / 5""",
    """insert into public.served_questions (user_id, question_id, session_question_id, response_id)
       select user_id, question_id, served_id, answer_id from bench.plan""",
    f"""insert into public.responses (id, session_id, session_question_id, user_id, category, answer_text,
                                      created_at, evaluation_status, ai_score, evaluated_at)
        select p.answer_id, s.id, p.served_id, p.user_id, p.category, 'A bench answer.', p.at, 'completed',
               round((100 * least(greatest(1 / (1 + exp(d.difficulty - a.ability)) + 0.1 * {NORMAL}, 0), 1))::numeric,
                     2),
               p.at + interval '1 minute'
        from bench.plan p
        join bench.sessions s on s.user_id = p.user_id and s.number = (p.k - 1) / 5
        join bench.true_difficulty d on d.question_id = p.question_id
        join bench.true_ability a on a.user_id = p.user_id and a.category = p.category""",
    "update public.plans set usage_limits.practice_sessions = 1000000",
    "reset session_replication_role",
]


def load(conn: psycopg.Connection, users: int, answers: int, start: datetime, seed: int) -> dict[str, float]:
    """The volume, in bulk; seconds per statement group."""
    conn.execute("select setseed(%s)", (seed / 1000,))
    months = {start.replace(day=1) + timedelta(days=31 * m) for m in range(3)}
    for month in sorted(months):
        for parent in ("public.session_questions", "public.responses"):
            conn.execute("select private.create_month_partition(%s, %s)", (parent, month.replace(day=1).date()))
    params = {
        "questions": EXTRA_QUESTIONS,
        "users": users,
        "per_user": max(1, answers // users),
        "start": start,
        "span": timedelta(days=HISTORY_DAYS),
    }
    started = time.perf_counter()
    for statement in LOAD_SQL:
        conn.execute(statement, params)  # type: ignore[arg-type]
    loaded = time.perf_counter() - started
    started = time.perf_counter()
    conn.execute("vacuum analyze")
    return {"load_seconds": loaded, "vacuum_analyze_seconds": time.perf_counter() - started}


def spearman(xs: list[float], ys: list[float]) -> float:
    def ranks(values: list[float]) -> list[float]:
        order = sorted(range(len(values)), key=values.__getitem__)
        result = [0.0] * len(values)
        i = 0
        while i < len(order):
            j = i
            while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
                j += 1
            for k in range(i, j + 1):
                result[order[k]] = (i + j) / 2
            i = j + 1
        return result

    return statistics.correlation(ranks(xs), ranks(ys))


def calibrate(conn: psycopg.Connection, as_of: datetime) -> tuple[dict[str, Any], float]:
    started = time.perf_counter()
    result = conn.execute("select service.calibrate_answers(%s)", (as_of,)).fetchone()[0]
    return result, time.perf_counter() - started


def calibration_accuracy(conn: psycopg.Connection, start: datetime) -> dict[str, Any]:
    """Daily runs from the start of the history until CALIBRATION_ANSWERS answers are in; the fit then."""
    runs, answered, day = [], 0, 0
    while answered < CALIBRATION_ANSWERS and day < HISTORY_DAYS:
        day += 1
        result, seconds = calibrate(conn, start + timedelta(days=day, minutes=5))
        answered += result["answers_calibrated"]
        runs.append({"day": day, "answers": result["answers_calibrated"], "seconds": seconds})
    rows = conn.execute(
        """select q.calibrated_difficulty, t.difficulty, q.difficulty, q.label_disagrees
           from public.questions q join bench.true_difficulty t on t.question_id = q.id
           where q.calibrated_difficulty is not null"""
    ).fetchall()
    fitted, true = [r[0] for r in rows], [r[1] for r in rows]
    prior = {"easy": -1.0, "medium": 0.0, "hard": 1.0}
    return {
        "answers": answered,
        "daily_runs": runs,
        "questions_fitted": len(rows),
        "spearman_fitted_vs_true": spearman(fitted, true),
        "spearman_label_vs_true": spearman([prior[r[2]] for r in rows], true),
        "labels_flagged": sum(bool(r[3]) for r in rows),
    }


def recommend_latency(conn: psycopg.Connection, users: list[uuid.UUID], calls: int) -> dict[str, Any]:
    timings = []
    for user in random.sample(users, min(calls, len(users))):
        claims = json.dumps({"sub": str(user), "role": "authenticated"})
        with conn.transaction():
            conn.execute(
                "select set_config('role', 'authenticated', true), set_config('request.jwt.claims', %s, true)",
                (claims,),
            )
            started = time.perf_counter()
            rows = conn.execute("select * from public.recommend_next(5)").fetchall()
            timings.append(time.perf_counter() - started)
            assert rows, "no recommendation"
    return latency(timings)


class Learners:
    """Two arms of new learners practising a session a day; their hidden abilities in Python."""

    def __init__(self, conn: psycopg.Connection, per_arm: int, rng: random.Random) -> None:
        self.conn, self.rng = conn, rng
        self.arms: dict[str, list[uuid.UUID]] = {"recommended": [], "random": []}
        self.ability: dict[tuple[uuid.UUID, str], float] = {}
        self.initial: dict[tuple[uuid.UUID, str], float] = {}
        self.difficulty = dict(conn.execute("select question_id, difficulty from bench.true_difficulty").fetchall())
        categories = [c for (c,) in conn.execute("select unnest(enum_range(null::public.question_category))::text")]
        for arm in self.arms:
            for _ in range(per_arm):
                user = uuid.uuid4()
                conn.execute(
                    "insert into auth.users (instance_id, id, aud, role, email, raw_app_meta_data, raw_user_meta_data,"
                    " created_at, updated_at) values ('00000000-0000-0000-0000-000000000000', %s, 'authenticated',"
                    " 'authenticated', %s, '{}', '{}', now(), now())",
                    (user, f"learner-{user}@bench.example"),
                )
                conn.execute("insert into public.user_profiles (user_id, experience_level) values (%s, 'mid')", (user,))
                self.arms[arm].append(user)
                for category in categories:
                    self.ability[user, category] = self.initial[user, category] = rng.gauss(-0.5, 1)

    def day(self, at: datetime) -> None:
        for arm, users in self.arms.items():
            for user in users:
                served = self._recommended(user) if arm == "recommended" else self._random(user)
                self._answer(user, served, at)

    def _recommended(self, user: uuid.UUID) -> list[tuple[str, str, str]]:
        claims = json.dumps({"sub": str(user), "role": "authenticated"})
        with self.conn.transaction():
            self.conn.execute(
                "select set_config('role', 'authenticated', true), set_config('request.jwt.claims', %s, true)",
                (claims,),
            )
            session = self.conn.execute(
                "select to_jsonb(public.start_session('quick', %s))",
                (Jsonb({"mode": "recommended", "count": ANSWERS_PER_SESSION}),),
            ).fetchone()[0]
        return [(session["session_id"], q["session_question_id"], q["question_id"]) for q in session["questions"]]

    def _random(self, user: uuid.UUID) -> list[tuple[str, str, str]]:
        with self.conn.transaction():
            self.conn.execute("set local session_replication_role = replica")
            session = self.conn.execute(
                "insert into public.practice_sessions (user_id, session_type, config) values (%s, 'custom', '{}')"
                " returning id",
                (user,),
            ).fetchone()[0]
            rows = self.conn.execute(
                """with picked as (
                     select q.id as question_id, gen_random_uuid() as served_id,
                            row_number() over () as position
                     from public.questions q
                     where q.is_active and q.experience_level = 'mid' and q.provisional_for is null
                       and not exists (select from public.served_questions s
                                       where s.user_id = %(user)s and s.question_id = q.id)
                     order by random() limit %(count)s
                   ), ledger as (
                     insert into public.served_questions (user_id, question_id, session_question_id)
                     select %(user)s, question_id, served_id from picked
                   )
                   insert into public.session_questions (id, session_id, user_id, question_id, position, widening)
                   select served_id, %(session)s, %(user)s, question_id, position, 'random' from picked
                   returning id, question_id""",
                {"user": user, "session": session, "count": ANSWERS_PER_SESSION},
            ).fetchall()
        return [(str(session), str(served), str(question)) for served, question in rows]

    def _answer(self, user: uuid.UUID, served: list[tuple[str, str, str]], at: datetime) -> None:
        categories = dict(
            self.conn.execute(
                "select id::text, category::text from public.questions where id = any(%s::uuid[])",
                ([q for _, _, q in served],),
            ).fetchall()
        )
        with self.conn.transaction():
            self.conn.execute("set local session_replication_role = replica")
            for session, served_id, question in served:
                category = categories[question]
                ability = self.ability[user, category]
                p = 1 / (1 + math.exp(self.difficulty[uuid.UUID(question)] - ability))
                score = 100 * min(max(p + self.rng.gauss(0, 0.1), 0), 1)
                self.conn.execute(
                    "insert into public.responses (session_id, session_question_id, user_id, category, answer_text,"
                    " created_at, evaluation_status, ai_score, evaluated_at)"
                    " values (%s, %s, %s, %s, 'A learner answer.', %s, 'completed', %s, %s)",
                    (session, served_id, user, category, at, round(score, 2), at),
                )
                self.ability[user, category] = ability + RATE * 4 * p * (1 - p) * 2 / (1 + math.exp(ability))

    def gains(self) -> dict[str, float]:
        return {
            arm: statistics.mean(self.ability[key] - self.initial[key] for key in self.ability if key[0] in set(users))
            for arm, users in self.arms.items()
        }


def learner_trial(
    conn: psycopg.Connection, per_arm: int, days: int, start: datetime, rng: random.Random, watermark: datetime
) -> dict[str, float]:
    """Fresh learners of both arms practise a session a day for `days` days; their mean gains and the ratio.
    Their answers are then removed and the calibration's watermark put back to `watermark`, so that the next
    trial's answers, on the same days, are calibrated as these were."""
    learners = Learners(conn, per_arm, rng)
    for day in range(days):
        at = start + timedelta(days=day)
        learners.day(at)
        calibrate(conn, at + timedelta(hours=1))
    gains = learners.gains()
    with conn.transaction():
        conn.execute("set local session_replication_role = replica")
        conn.execute(
            "delete from public.responses where user_id = any(%s)",
            ([user for users in learners.arms.values() for user in users],),
        )
        conn.execute(
            "update private.rollup_watermarks set processed_until = %s where name = 'calibration'", (watermark,)
        )
    return {**gains, "ratio": gains["recommended"] / gains["random"]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--answers", type=int, default=1_000_000)
    parser.add_argument("--learners", type=int, default=150, help="learners per arm")
    parser.add_argument("--days", type=int, default=12, help="days (one session each) the learners practise")
    parser.add_argument("--calls", type=int, default=500, help="recommend_next calls timed")
    parser.add_argument("--repeats", type=int, default=3, help="learner trials; the median ratio is the figure")
    parser.add_argument("--seed", type=int, default=19)
    args = parser.parse_args(argv)
    random.seed(args.seed)

    now = datetime.now(UTC).replace(microsecond=0)
    learners_start = now - timedelta(days=args.days + 1)
    history_start = learners_start - timedelta(days=HISTORY_DAYS + 1)
    console.print(
        f"Scratch database {DB_NAME}: {args.users:,} users, {args.answers:,} answers over {HISTORY_DAYS} days"
    )
    url = fresh_scratch_database(DB_NAME, MARKER["benchmark"])
    with psycopg.connect(url, autocommit=True) as conn:
        measured = revision(conn)
        setup = load(conn, args.users, args.answers, history_start, args.seed)
        console.print(f"loaded in {setup['load_seconds']:.0f} s")
        accuracy = calibration_accuracy(conn, history_start)
        history_end = history_start + timedelta(days=HISTORY_DAYS)
        catch_up, catch_up_seconds = calibrate(conn, history_end - timedelta(days=1))
        last_day, last_day_seconds = calibrate(conn, history_end + timedelta(minutes=5))
        started = time.perf_counter()
        percentiles = conn.execute("select service.refresh_peer_percentiles(%s, true)", (now,)).fetchone()[0]
        percentile_seconds = time.perf_counter() - started
        conn.execute("vacuum analyze public.category_abilities")
        conn.execute("vacuum analyze public.questions")
        users = [u for (u,) in conn.execute("select id from bench.users")]
        recommend = recommend_latency(conn, users, args.calls)
        counts = conn.execute(
            "select (select count(*) from public.users), (select count(*) from public.responses),"
            " (select count(*) from public.questions), (select count(*) from public.category_abilities)"
        ).fetchone()

        watermark = conn.execute(
            "select processed_until from private.rollup_watermarks where name = 'calibration'"
        ).fetchone()[0]
        learning_started = time.perf_counter()
        trials = [
            learner_trial(conn, args.learners, args.days, learners_start, random.Random(args.seed + trial), watermark)
            for trial in range(args.repeats)
        ]
        learning_seconds = time.perf_counter() - learning_started
        machine_info = machine(conn)
        with psycopg.connect(database_url(), autocommit=True) as admin:
            write_marker(admin, DB_NAME, {**MARKER, "state": "complete", "date": now_iso()})

    report: dict[str, Any] = {
        "benchmark": "adaptive",
        "date": now_iso(),
        "machine": machine_info,
        "revision": measured,
        "database": DB_NAME,
        "parameters": {**vars(args), "extra_questions": EXTRA_QUESTIONS, "history_days": HISTORY_DAYS, "rate": RATE},
        "volume": dict(zip(("users", "answers", "questions", "category_abilities"), counts, strict=True)),
        "setup": setup,
        "calibration": accuracy,
        "catch_up": {**catch_up, "seconds": catch_up_seconds},
        "incremental_day": {**last_day, "seconds": last_day_seconds},
        "peer_percentiles": {**percentiles, "seconds": percentile_seconds},
        "recommend_next": recommend,
        "learners": {
            "per_arm": args.learners,
            "days": args.days,
            "questions_each": args.days * ANSWERS_PER_SESSION,
            "trials": trials,
            "mean_gain": {arm: statistics.median(t[arm] for t in trials) for arm in ("recommended", "random")},
            "gain_ratio": statistics.median(t["ratio"] for t in trials),
            "seconds": learning_seconds,
        },
        "targets": TARGETS,
    }
    print_report(report)
    write_report("adaptive", report)
    return 0


def print_report(report: dict[str, Any]) -> None:
    table = Table(title="Adaptive practice", caption=caption(report))
    for column in ("figure", "value", "target"):
        table.add_column(column)
    cal, day, rec, learn = (
        report["calibration"],
        report["incremental_day"],
        report["recommend_next"],
        report["learners"],
    )
    volume = report["volume"]
    rows = [
        ("volume (users / answers / questions)",
         f"{volume['users']:,} / {volume['answers']:,} / {volume['questions']:,}", ""),
        (f"Spearman fitted vs true difficulty ({cal['answers']:,} answers, {cal['questions_fitted']:,} questions)",
         f"{cal['spearman_fitted_vs_true']:.3f} (labels alone {cal['spearman_label_vs_true']:.3f})", ">= 0.8"),
        ("labels flagged as disagreeing", f"{cal['labels_flagged']:,}", ""),
        (f"incremental calibration, last day ({day['answers_calibrated']:,} answers)",
         f"{day['seconds']:.2f} s", "<= 30 s"),
        ("catch-up calibration (rest of the history, one call)",
         f"{report['catch_up']['seconds']:.1f} s ({report['catch_up']['answers_calibrated']:,} answers)", ""),
        ("peer percentiles (all users)", f"{report['peer_percentiles']['seconds']:.1f} s", ""),
        ("recommend_next median / p95", f"{rec['median_ms']:.1f} / {rec['p95_ms']:.1f} ms", "p95 <= 20 ms"),
        (f"mean ability gain recommended / random ({learn['per_arm']} per arm, {learn['questions_each']} questions;"
         f" median of {len(learn['trials'])} trials)",
         f"{learn['mean_gain']['recommended']:.3f} / {learn['mean_gain']['random']:.3f}: {learn['gain_ratio']:.2f}x"
         f" (trials {', '.join(format(t['ratio'], '.2f') for t in learn['trials'])})",
         ">= 1.3x"),
    ]  # fmt: skip
    for row in rows:
        table.add_row(*row)
    console.print(table)


if __name__ == "__main__":
    sys.exit(main())
