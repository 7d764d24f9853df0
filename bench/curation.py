"""Question curation (migration 23): does the bank clean itself, and what does the scheduled step cost on a busy day.

    .venv/bin/python -m bench.curation [--questions 2000 --users 3000 --answers-per-day 4000 --days 30
                                        --busy-answers 1000000 --busy-ratings 10000 --busy-questions 10000]

Setup (not timed): a fresh scratch database `prep_bench_curation` (stand-in, migrations; the seed's questions
removed), USERS users whose overall mean score (progress_totals, what the step reads as ability) is their
ability, drawn N(60, 12), plus noise N(0, 3). It is kept afterwards for inspection and dropped by the next run.

Part 1, quality. A bank of QUESTIONS questions, 5% planted bad, a quarter of each kind:
- mislabelled difficulty: labelled easy but as hard as a hard one, or labelled hard but as easy as an easy one;
- unanswerable: scores N(8, 6) whoever answers;
- near-duplicates: a good question's text with one word changed, added after it;
- offensive: 10% of those served it report it offensive, and they rate it 1-2.
Every question's text is ten words drawn from 3,000 made-up ones, so only the planted copies are near-duplicates.
Then DAYS simulated days of traffic, ANSWERS_PER_DAY answers a day (a user answers a question once), starting
tomorrow (UTC): each answer's question drawn from the active bank weighted by its rank_score (the engine's order,
with its exploration bonus for questions with few ratings); score = ability + the true difficulty's offset
(easy +15, medium 0, hard -15) + N(0, 12), clipped to 0-100; 30% of answers rated (good questions N(3.9, 0.9),
offensive ones 1-2, unanswerable N(2.6, 1)); reports: 0.5% of answers to good questions (wrong or unclear, the
noise every bank gets), 3% of those to unanswerable ones, 2% duplicate reports of copies, 10% offensive. The rows
are loaded with COPY with triggers off (session_replication_role = replica: it is the traffic, not the code under
test), as the live tables would hold them. After each day the schedule's two question steps run as deployed:
service.rollup_question_stats(), then service.curate_questions(end of day + 6 minutes).
Targets: >= 90% of the planted bad questions leave the active bank (under review or retired), <= 2% of the good.

Part 2, cost. The bank grown to BUSY_QUESTIONS (the added questions dated as old ones: a near-duplicate check of
thousands of new questions at once is a first run's cost, not a day's), BUSY_ANSWERS / 20 new users, one more day
with BUSY_ANSWERS answers (each user 20 distinct questions) and BUSY_RATINGS ratings; then the rollup and the
curation step over that day, each timed. Target: the curation step <= 30 s. Figures: seconds, answers per second,
the load's time.
"""

from __future__ import annotations

import argparse
import random
import string
import time
import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg

from bench.database import fresh_scratch_database, write_marker
from bench.questions_common import console, machine, now_iso, revision, write_report

BENCH_DB = "prep_bench_curation"
CATEGORIES = ("behavioral", "technical", "situational", "leadership", "problem_solving", "culture_fit")
DIFFICULTIES = ("easy", "medium", "hard")
OFFSET = {"easy": 15.0, "medium": 0.0, "hard": -15.0}
BAD_KINDS = ("mislabelled", "unanswerable", "duplicate", "offensive")
REPORT_RATE = {"good": 0.005, "mislabelled": 0.005, "unanswerable": 0.03, "duplicate": 0.02, "offensive": 0.10}


@dataclass
class Question:
    id: uuid.UUID
    category: str
    label: str  # the difficulty it is labelled with
    truth: str  # the difficulty it really has
    kind: str = "good"


@dataclass
class Bank:
    questions: dict[uuid.UUID, Question] = field(default_factory=dict)
    abilities: dict[uuid.UUID, float] = field(default_factory=dict)
    served: dict[uuid.UUID, set[uuid.UUID]] = field(default_factory=lambda: defaultdict(set))


def words(rng: random.Random, count: int) -> list[str]:
    return ["".join(rng.choices(string.ascii_lowercase, k=rng.randint(5, 9))) for _ in range(count)]


def copy_rows(conn: psycopg.Connection, table: str, columns: tuple[str, ...], rows: list[tuple[Any, ...]]) -> None:
    with conn.cursor().copy(f"copy {table} ({', '.join(columns)}) from stdin") as copy:  # type: ignore[arg-type]
        for row in rows:
            copy.write_row(row)


def add_users(conn: psycopg.Connection, rng: random.Random, bank: Bank, count: int) -> None:
    """Users as the auth server makes them (the signup trigger runs), with their overall mean score."""
    ids = [uuid.uuid4() for _ in range(count)]
    with conn.transaction():
        conn.execute(
            "insert into auth.users (instance_id, id, aud, role, email, raw_app_meta_data, raw_user_meta_data,"
            " email_confirmed_at, created_at, updated_at)"
            " select '00000000-0000-0000-0000-000000000000', u, 'authenticated', 'authenticated',"
            " 'bench-' || u || '@example.test', '{\"provider\": \"email\", \"providers\": [\"email\"]}', '{}',"
            " now(), now(), now() from unnest(%s::uuid[]) u",
            (ids,),
        )
        rows = []
        for user in ids:
            ability = min(95.0, max(5.0, rng.gauss(60, 12)))
            bank.abilities[user] = ability
            rows.append((user, 20, 20 * min(100.0, max(0.0, ability + rng.gauss(0, 3)))))
        copy_rows(conn, "public.progress_totals", ("user_id", "scored_answers", "score_sum"), rows)


def add_questions(
    conn: psycopg.Connection, rng: random.Random, bank: Bank, vocabulary: list[str], count: int, bad: int
) -> None:
    """`count` questions, the first `bad` of them planted bad (a quarter of each kind); copies added last."""
    planned: list[tuple[str, Question]] = []
    copies: list[tuple[str, Question]] = []
    for n in range(count):
        kind = BAD_KINDS[n % 4] if n < bad else "good"
        category, label = rng.choice(CATEGORIES), rng.choice(DIFFICULTIES)
        truth = label
        if kind == "mislabelled":
            label, truth = ("easy", "hard") if n % 8 < 4 else ("hard", "easy")
        text = " ".join(rng.choices(vocabulary, k=10)).capitalize() + "?"
        question = Question(uuid.uuid4(), category, label, truth, kind)
        (copies if kind == "duplicate" else planned).append((text, question))
    good = [(t, q) for t, q in planned if q.kind == "good"]
    for index, (_, copy) in enumerate(copies):
        text, original = good[index]
        changed = text.split()
        changed[3] = rng.choice(vocabulary)
        copy.category, copy.label, copy.truth = original.category, original.label, original.truth
        copies[index] = (" ".join(changed), copy)
    for batch in (planned, copies):  # the copies in a later statement: they are the newer questions
        conn.execute(
            "insert into public.questions (id, content, category, difficulty, experience_level, source)"
            " select i, c, cat::public.question_category, d::public.difficulty, 'mid', 'curated'"
            " from unnest(%s::uuid[], %s::text[], %s::text[], %s::text[]) as t(i, c, cat, d)",
            ([q.id for _, q in batch], [t for t, _ in batch], [q.category for _, q in batch],
             [q.label for _, q in batch]),
        )  # fmt: skip
        bank.questions.update({q.id: q for _, q in batch})


def score(rng: random.Random, question: Question, ability: float) -> float:
    unanswerable = question.kind == "unanswerable"
    value = rng.gauss(8, 6) if unanswerable else ability + OFFSET[question.truth] + rng.gauss(0, 12)
    return round(min(100.0, max(0.0, value)), 2)


def stars(rng: random.Random, question: Question) -> int:
    if question.kind == "offensive":
        return rng.choice((1, 1, 2))
    mean = 2.6 if question.kind == "unanswerable" else 3.9
    return int(min(5, max(1, round(rng.gauss(mean, 1.0 if question.kind == "unanswerable" else 0.9)))))


def report_reason(rng: random.Random, question: Question) -> str:
    return {"offensive": "offensive", "duplicate": "duplicate", "unanswerable": "unclear"}.get(
        question.kind, rng.choice(("wrong", "unclear"))
    )


def load_day(
    conn: psycopg.Connection,
    rng: random.Random,
    bank: Bank,
    day: datetime,
    answers: int,
    ratings: int | None,
    per_user: int | None = None,
) -> float:
    """One day of traffic, loaded with COPY (triggers off); returns the seconds the load took. `ratings`: how many
    answers are rated (None: 30%). `per_user`: each user answers that many (else users drawn at random)."""
    active = conn.execute("select id, rank_score from public.questions where status = 'active'").fetchall()
    ids, weights = [row[0] for row in active], [max(row[1], 0.01) for row in active]
    users = list(bank.abilities)
    sessions: dict[uuid.UUID, uuid.UUID] = {}
    positions: dict[uuid.UUID, int] = defaultdict(int)
    served_rows, response_rows, rating_rows, report_rows = [], [], [], []
    rated = set(rng.sample(range(answers), ratings)) if ratings is not None else None
    picks = iter(rng.choices(ids, weights=weights, k=answers * 3))
    for n in range(answers):
        user = users[n // per_user] if per_user else rng.choice(users)
        seen = bank.served[user]
        question_id = next(picks)
        while question_id in seen:
            question_id = rng.choice(ids)
        seen.add(question_id)
        question = bank.questions[question_id]
        session = sessions.setdefault(user, uuid.uuid4())
        positions[session] += 1
        served_at = day + timedelta(seconds=rng.uniform(0, 86_000))
        answered_at = served_at + timedelta(seconds=60)
        served_id = uuid.uuid4()
        served_rows.append((served_id, session, user, question_id, positions[session], served_at, served_at,
                            served_at, 1))  # fmt: skip
        response_rows.append((uuid.uuid4(), session, served_id, user, question.category, "An answer.", "completed",
                              score(rng, question, bank.abilities[user]), answered_at + timedelta(seconds=30),
                              answered_at, answered_at))  # fmt: skip
        if (rated is None and rng.random() < 0.3) or (rated is not None and n in rated):
            rating_rows.append((user, question_id, stars(rng, question), answered_at, answered_at))
        if rng.random() < REPORT_RATE[question.kind]:
            report_rows.append((uuid.uuid4(), user, question_id, 1, report_reason(rng, question), answered_at,
                                answered_at))  # fmt: skip
    started = time.perf_counter()
    with conn.transaction():
        conn.execute("set local session_replication_role = replica")
        copy_rows(
            conn, "public.practice_sessions",
            ("id", "user_id", "session_type", "status", "started_at", "ended_at", "created_at", "updated_at"),
            [(s, u, "quick", "completed", day, day + timedelta(days=1), day, day) for u, s in sessions.items()],
        )  # fmt: skip
        copy_rows(
            conn, "public.session_questions",
            ("id", "session_id", "user_id", "question_id", "position", "served_at", "created_at", "updated_at",
             "question_version"), served_rows,
        )  # fmt: skip
        copy_rows(
            conn, "public.responses",
            ("id", "session_id", "session_question_id", "user_id", "category", "answer_text", "evaluation_status",
             "ai_score", "evaluated_at", "created_at", "updated_at"), response_rows,
        )  # fmt: skip
        copy_rows(
            conn, "public.question_ratings", ("user_id", "question_id", "rating", "created_at", "updated_at"),
            rating_rows,
        )  # fmt: skip
        copy_rows(
            conn, "public.question_reports",
            ("id", "user_id", "question_id", "question_version", "reason", "created_at", "updated_at"), report_rows,
        )  # fmt: skip
    conn.execute("analyze public.session_questions, public.responses, public.question_ratings")
    return time.perf_counter() - started


def run_steps(conn: psycopg.Connection, day: datetime) -> tuple[float, float, dict[str, Any]]:
    """The schedule's question steps after `day`: (rollup seconds, curation seconds, the curation's counts)."""
    started = time.perf_counter()
    conn.execute("select service.rollup_question_stats()")
    rolled = time.perf_counter()
    counts = conn.execute("select service.curate_questions(%s)", (day + timedelta(days=1, minutes=6),)).fetchone()[0]
    return rolled - started, time.perf_counter() - rolled, counts


def quality(conn: psycopg.Connection, bank: Bank) -> dict[str, Any]:
    status = dict(conn.execute("select id, status::text from public.questions").fetchall())
    gone = {q: status[q] not in ("active", "provisional") for q in bank.questions}
    by_kind: dict[str, dict[str, int]] = {}
    for question in bank.questions.values():
        figures = by_kind.setdefault(question.kind, {"planted": 0, "left": 0})
        figures["planted"] += 1
        figures["left"] += gone[question.id]
    bad = [q for q in bank.questions.values() if q.kind != "good"]
    good = [q for q in bank.questions.values() if q.kind == "good"]
    reasons = dict(
        conn.execute(
            "select reason || ' (' || to_status || ')', count(*) from public.question_transitions"
            " where actor = 'curation' group by 1 order by 2 desc"
        ).fetchall()
    )
    return {
        "bad_left_share": sum(gone[q.id] for q in bad) / len(bad),
        "good_left_share": sum(gone[q.id] for q in good) / len(good),
        "by_kind": by_kind,
        "transitions_by_reason": reasons,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--questions", type=int, default=2000)
    parser.add_argument("--users", type=int, default=3000)
    parser.add_argument("--answers-per-day", type=int, default=4000)
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--busy-answers", type=int, default=1_000_000)
    parser.add_argument("--busy-ratings", type=int, default=10_000)
    parser.add_argument("--busy-questions", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=20)
    args = parser.parse_args()
    rng = random.Random(args.seed)

    url = fresh_scratch_database(BENCH_DB, "curation")
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("delete from public.questions")  # the seed's: this bank is the simulation's
        start = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0) + timedelta(days=1)
        conn.execute("select private.ensure_month_partitions(%s, 3)", (start,))
        bank = Bank()
        vocabulary = words(rng, 3000)
        add_users(conn, rng, bank, args.users)
        add_questions(conn, rng, bank, vocabulary, args.questions, bad=args.questions // 20)
        conn.execute("analyze")
        console.print(f"Bank of {len(bank.questions)} questions ({args.questions // 20} planted bad), "
                      f"{args.users} users; {args.days} days of {args.answers_per_day} answers.")  # fmt: skip

        daily: list[dict[str, Any]] = []
        for n in range(args.days):
            day = start + timedelta(days=n)
            load_day(conn, rng, bank, day, args.answers_per_day, None)
            rollup_s, curate_s, counts = run_steps(conn, day)
            daily.append({"day": n + 1, "rollup_seconds": round(rollup_s, 3), "curate_seconds": round(curate_s, 3),
                          **{k: counts[k] for k in ("answers_tallied", "questions_examined",
                                                    "questions_sent_to_review", "questions_retired")}})  # fmt: skip
            console.print(f"day {n + 1}: {daily[-1]}")
        month = quality(conn, bank)
        console.print(month)

        # Part 2: a busy day, on an established bank: the added questions' versions are dated before the month
        # (checked for near-duplicates long ago), and the day's users are new ones, 20 answers each.
        part_one_users = set(bank.abilities)
        add_users(conn, rng, bank, args.busy_answers // 20)
        added = set(bank.questions)
        add_questions(conn, rng, bank, vocabulary, max(0, args.busy_questions - len(bank.questions)), bad=0)
        conn.execute(
            "update public.question_versions set created_at = %s where question_id = any(%s)",
            (start - timedelta(days=1), list(set(bank.questions) - added)),
        )
        conn.execute("analyze")
        busy_day = start + timedelta(days=args.days)
        bank.abilities = {u: a for u, a in bank.abilities.items() if u not in part_one_users}
        answers = len(bank.abilities) * 20
        load_started = time.perf_counter()
        copy_seconds = load_day(conn, rng, bank, busy_day, answers, min(args.busy_ratings, answers), per_user=20)
        load_seconds = time.perf_counter() - load_started
        rollup_s, curate_s, counts = run_steps(conn, busy_day)
        busy = {
            "answers": answers,
            "ratings": min(args.busy_ratings, answers),
            "questions": len(bank.questions),
            "load_seconds": round(load_seconds, 1),
            "copy_seconds": round(copy_seconds, 1),
            "rollup_seconds": round(rollup_s, 2),
            "curate_seconds": round(curate_s, 2),
            "curate_answers_per_second": round(counts["answers_tallied"] / curate_s),
            "curation": counts,
        }
        console.print(busy)
        report = {
            "benchmark": "curation",
            "date": now_iso(),
            "machine": machine(conn),
            "revision": revision(conn),
            "parameters": vars(args),
            "month": {**month, "days": daily,
                      "curate_seconds_median": sorted(d["curate_seconds"] for d in daily)[len(daily) // 2]},
            "busy_day": busy,
            "targets": {"bad_left_share": 0.90, "good_left_share": 0.02, "curate_seconds": 30},
        }  # fmt: skip
        write_marker(conn, BENCH_DB, {"benchmark": "curation", "state": "done"})
    write_report("curation", report)


if __name__ == "__main__":
    main()
