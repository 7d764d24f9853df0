"""Deleting a heavy account: how long the whole deletion takes, and whether it slows other users' writes.

Setup (not timed): a scratch database of its own (created here, dropped at the end). For each round a victim with
SESSIONS sessions of 10 answers (10k answers), ARCHIVED archived answers, a rating per bank question, an AI usage
row per answer, a live subscription (in the Stripe stand-in) and RECORDINGS recordings in a local recordings
directory; bulk-loaded with the live-request triggers off, then analyzed. WRITERS other users each hold a session
with enough served questions to answer.

Measured, ROUNDS times:
1. the deletion as DELETE /account runs it (functions/account/deletion.py: record, Stripe, recordings, the answers
   in transactions of 1,000 rows, then the auth user whose cascade and triggers remove every other row, in one
   transaction), end to end, and the final transaction alone. Target: <= 5 s.
2. other users' writes (each an answer insert and a rating upsert, one transaction, as PostgREST runs them; WRITERS
   threads, each starting a write every INTERVAL ms, a busy platform's pace that leaves the machine CPU to spare:
   writers in a closed loop would saturate a small machine and measure only the share of CPU the deletion takes,
   not whether it blocks anyone) during the deletion against the same writes with no deletion running (the same
   length of time just before): the ratio of p95 latencies. Target: <= 1.2.
3. the control, in the same run: the same writers while one query that touches no table (counting a series)
   keeps one CPU busy for as long as the median deletion took. The share of the ratio that any query of that
   length causes on this machine, with no lock and no write.

With --pin-cores (the embedded or another local server), the same rounds with the other users (their threads and
their backends) on CPU 0 and the deletion (its thread and its backends) on CPU 1: a server with a core to spare, as
any production database has, where what is left of the ratio is what the deletion itself makes others wait for
(locks, I/O, WAL), not the CPU share any query takes on a two-core machine. Writes account_deletion_pinned.json.

Run: .venv/bin/python -m bench.account_deletion [--sessions 1000] [--archived 2000] [--writers 3] [--interval-ms 20]
     [--rounds 5] [--pin-cores]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import psycopg
import stripe
from psycopg import sql
from rich.console import Console
from rich.table import Table

from bench.database import answer_and_rate, fresh_scratch_database, maintenance_url
from functions.account.deletion import Deleter
from functions.account.storage import LocalRecordings
from prep.stripe_stand_in import MONTHLY_PRICE_ID, StripeStandIn
from shared.config import DatabaseSettings
from shared.db import Caller
from shared.db.psycopg_transport import PsycopgDatabase
from shared.stripe_client import StripeSettings, stripe_client

DATABASE = "prep_bench_account"
WRITER_APP = "bench-other-user"  # application_name of the other users' connections
OUT = Path(__file__).parent / "out" / "account_deletion.json"
TARGET_SECONDS = 5.0
TARGET_RATIO = 1.2
PER_SESSION = 10
RECORDINGS = 50
console = Console()

VICTIM_SQL = """
select private.create_month_partition(parent, (now() - make_interval(hours => %(sessions)s))::date)
from unnest(private.partitioned_parents()) parent;

insert into public.practice_sessions (id, user_id, session_type, status, started_at, ended_at)
select gen_random_uuid(), %(user)s, 'quick', 'completed', at, at
from generate_series(1, %(sessions)s) k, lateral (select now() - make_interval(hours => k) as at) t;

insert into public.session_questions (id, session_id, user_id, question_id, position, served_at)
select gen_random_uuid(), s.id, s.user_id, q.id, (q.m - 1) %% %(per_session)s + 1, s.started_at
from (select id, user_id, started_at, row_number() over (order by started_at) as n from public.practice_sessions
      where user_id = %(user)s) s
join (select id, row_number() over (order by id) as m from public.questions where content like 'Benchmark %%') q
  on (q.m - 1) / %(per_session)s + 1 = s.n;

insert into public.responses (id, session_id, session_question_id, user_id, category, answer_text, created_at,
                              evaluation_status, ai_score, feedback)
select gen_random_uuid(), sq.session_id, sq.id, sq.user_id, q.category,
       repeat('I would first clarify the requirements, then ', 20), sq.served_at, 'completed', 72.5,
       'Clear structure; quantify the outcome.'
from public.session_questions sq join public.questions q on q.id = sq.question_id
where sq.user_id = %(user)s;

insert into archive.responses
select (jsonb_populate_record(null::archive.responses, to_jsonb(r) || jsonb_build_object(
         'id', gen_random_uuid(), 'created_at', r.created_at - interval '400 days'))).*
from public.responses r where r.user_id = %(user)s limit %(archived)s;

insert into public.question_ratings (user_id, question_id, rating)
select %(user)s, q.id, 4 from public.questions q where q.source = 'curated';

insert into public.ai_usage (user_id, purpose, model, latency_ms, succeeded, response_id, cost_usd)
select r.user_id, 'evaluation', 'gpt-4o-mini', 900, true, r.id, 0.0002
from public.responses r where r.user_id = %(user)s;

insert into public.achievements (user_id, achievement_type) values (%(user)s, 'first_session');
"""


def add_questions(conn: psycopg.Connection, count: int) -> None:
    """`count` questions beyond the bank: a user is served each question at most once."""
    conn.execute(
        """insert into public.questions (content, category, difficulty, experience_level, source)
           select format('Benchmark %%s: describe a time you had to decide with incomplete data?', g),
                  (enum_range(null::public.question_category))[1 + g %% 3], 'medium', 'mid', 'ai'
           from generate_series(1, %s) g""",
        (count,),
    )


def sign_up(conn: psycopg.Connection, label: str) -> str:
    user_id = str(uuid.uuid4())
    conn.execute(
        "insert into auth.users (id, aud, role, email, raw_app_meta_data, raw_user_meta_data, created_at)"
        " values (%s, 'authenticated', 'authenticated', %s, '{\"provider\": \"email\"}', '{}', now())",
        (user_id, f"{label}-{user_id[:8]}@bench.test"),
    )
    return user_id


def make_victim(
    conn: psycopg.Connection, client: stripe.StripeClient, stand_in: StripeStandIn, recordings: Path, args: Any
) -> str:
    user = sign_up(conn, "victim")
    conn.execute("set session_replication_role = replica")
    try:
        params = {"user": user, "sessions": args.sessions, "per_session": PER_SESSION, "archived": args.archived}
        for statement in VICTIM_SQL.split(";\n\n"):
            conn.execute(statement, params)  # type: ignore[arg-type]
    finally:
        conn.execute("reset session_replication_role")
    customer = client.v1.customers.create({"metadata": {"user_id": user}}).id
    session = client.v1.checkout.sessions.create(
        {
            "mode": "subscription",
            "customer": customer,
            "line_items": [{"price": MONTHLY_PRICE_ID, "quantity": 1}],
            "success_url": "http://bench.test/ok",
            "cancel_url": "http://bench.test/cancel",
        }
    )
    stand_in.complete_checkout(session.id)
    subscription = stand_in.get(session.id)["subscription"]
    conn.execute("insert into public.billing_customers (user_id, stripe_customer_id) values (%s, %s)", (user, customer))
    conn.execute(
        "insert into public.subscriptions (user_id, plan_id, status, stripe_customer_id, stripe_subscription_id)"
        " select %s, id, 'active', %s, %s from public.plans where code = 'monthly'",
        (user, customer, subscription),
    )
    folder = recordings / "answers" / user / "2026"
    folder.mkdir(parents=True)
    for n in range(RECORDINGS):
        (folder / f"answer-{n}.webm").write_bytes(b"\0" * 2048)
    return user


def make_writer(conn: psycopg.Connection, answers: int) -> tuple[str, str, list[str], list[str]]:
    """A user with a session in progress and `answers` served questions; (user, session, served ids, question ids)."""
    user = sign_up(conn, "writer")
    conn.execute("set session_replication_role = replica")
    try:
        session = conn.execute(
            "insert into public.practice_sessions (user_id, session_type, status) values (%s, 'custom', 'in_progress')"
            " returning id",
            (user,),
        ).fetchone()[0]
        rows = conn.execute(
            """insert into public.session_questions (session_id, user_id, question_id, position)
               select %s, %s, q.id, row_number() over () from
               (select id from public.questions order by random() limit %s) q
               returning id, question_id""",
            (session, user, answers),
        ).fetchall()
    finally:
        conn.execute("reset session_replication_role")
    return user, str(session), [str(r[0]) for r in rows], [str(r[1]) for r in rows]


class Waits:
    """Samples, every `interval` s (5 ms), what the other users' backends are waiting on (pg_stat_activity): a deletion
    that blocked other users' writes would show as lock waits, whatever the machine's load; the other waits
    (WAL writes and flushes, I/O, lightweight locks) say what else it makes them wait for."""

    def __init__(self, url: str, interval: float = 0.005) -> None:
        self.url, self.interval = url, interval
        self.samples: list[tuple[float, int]] = []  # (at, backends waiting on a lock)
        self.waits: list[tuple[float, str]] = []  # (at, "type:event") of each other backend waiting, each sample
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        with psycopg.connect(self.url, autocommit=True) as conn:
            while not self._stop.is_set():
                waiting = conn.execute(
                    "select wait_event_type || ':' || wait_event from pg_stat_activity"
                    " where datname = current_database() and application_name = %s and state = 'active'"
                    " and wait_event_type is not null",
                    (WRITER_APP,),
                ).fetchall()
                at = time.perf_counter()
                self.samples.append((at, sum(1 for (event,) in waiting if event.startswith("Lock:"))))
                self.waits.extend((at, event) for (event,) in waiting)
                time.sleep(self.interval)

    def most(self, start: float, end: float) -> int:
        return max((waiting for at, waiting in self.samples if start <= at <= end), default=0)

    def events(self, start: float, end: float) -> dict[str, int]:
        """How many times each wait was seen between start and end, most seen first."""
        seen = Counter(event for at, event in self.waits if start <= at <= end)
        return dict(seen.most_common())


class TimedDatabase(PsycopgDatabase):
    """The database gateway, remembering how long the last call of each SQL function took, and when it ran."""

    def __init__(self, settings: DatabaseSettings) -> None:
        super().__init__(settings)
        self.seconds: dict[str, float] = {}
        self.spans: dict[str, tuple[float, float]] = {}

    def pin(self, cpu: int) -> None:
        """This thread and every connection the pool holds (all opened now) on one CPU."""
        with self.connection() as first, self.connection() as second:
            for conn in (first, second):
                pin_session(conn, cpu)

    def call(self, function: str, args: Mapping[str, Any] | None = None, *, caller: Caller | None = None) -> Any:
        started = time.perf_counter()
        try:
            return super().call(function, args, caller=caller)
        finally:
            ended = time.perf_counter()
            self.seconds[function] = ended - started
            self.spans[function] = (started, ended)


def pin_session(conn: psycopg.Connection, cpu: int | None) -> None:
    """Keep this thread and the backend serving `conn` on one CPU (nothing when `cpu` is None)."""
    if cpu is not None:
        os.sched_setaffinity(0, {cpu})
        os.sched_setaffinity(conn.info.backend_pid, {cpu})


class Writers:
    """WRITERS threads, one user each, writing an answer and a rating per transaction as that user (RLS)."""

    def __init__(
        self, url: str, writers: list[tuple[str, str, list[str], list[str]]], interval: float, cpu: int | None
    ) -> None:
        self.url, self.writers, self.interval, self.cpu = url, writers, interval, cpu
        self.samples: list[tuple[float, float]] = []  # (finished at, seconds)
        self._stop = threading.Event()
        self.lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self.errors: list[str] = []

    def start(self) -> None:
        self._stop.clear()
        self._threads = [threading.Thread(target=self._run, args=(w,), daemon=True) for w in self.writers]
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join()

    def _run(self, writer: tuple[str, str, list[str], list[str]]) -> None:
        user, session, served, questions = writer
        claims = json.dumps({"sub": user, "role": "authenticated", "aud": "authenticated"})
        with psycopg.connect(self.url, autocommit=True, application_name=WRITER_APP) as conn:
            pin_session(conn, self.cpu)
            due = time.perf_counter()
            while not self._stop.is_set() and served:
                # Writes start on a fixed schedule (a late one starts at once), not as soon as the last finished.
                due += self.interval
                time.sleep(max(0.0, due - time.perf_counter()))
                served_id, question = served.pop(), questions.pop()
                started = time.perf_counter()
                try:
                    answer_and_rate(conn, claims, session, served_id, user, question)
                except psycopg.Error as error:
                    self.errors.append(str(error).splitlines()[0])
                    continue
                finished = time.perf_counter()
                with self.lock:
                    self.samples.append((finished, finished - started))

    def latencies(self, start: float, end: float) -> list[float]:
        return [seconds for finished, seconds in self.samples if start <= finished - seconds and finished <= end]


def p95(values: list[float]) -> float:
    return statistics.quantiles(values, n=20)[18] if len(values) >= 20 else max(values)


def measure_control(url: str, writers: Writers, seconds: float, rounds: int, cpu: int | None) -> dict[str, Any]:
    """Writers' p95 while one CPU-bound query that touches no table runs for `seconds`, against just before it."""
    with psycopg.connect(url, autocommit=True) as conn:
        pin_session(conn, cpu)
        started = time.perf_counter()
        conn.execute("select count(*) from generate_series(1, 1000000)")
        per_million = time.perf_counter() - started
        series = max(int(seconds / per_million * 1_000_000), 1)
        ratios = []
        for _ in range(rounds):
            locks = Waits(url)  # sampling as in the deletion rounds, for the same load
            writers.start()
            locks.start()
            time.sleep(4.0)
            started = time.perf_counter()
            conn.execute("select count(*) from generate_series(1, %s)", (series,))
            ended = time.perf_counter()
            time.sleep(0.2)
            writers.stop()
            locks.stop()
            window = max(ended - started, 1.0)
            before = writers.latencies(max(started - window, 0.0), started)
            during = writers.latencies(started, started + window)
            ratios.append(p95(during) / p95(before))
    return {"seconds": round(seconds, 3), "median_p95_ratio": round(statistics.median(ratios), 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sessions", type=int, default=1000)
    parser.add_argument("--archived", type=int, default=2000)
    parser.add_argument("--writers", type=int, default=3)
    parser.add_argument("--interval-ms", type=float, default=20.0)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument(
        "--pin-cores",
        action="store_true",
        help="other users on CPU 0, the deletion on CPU 1 (writes account_deletion_pinned.json)",
    )
    args = parser.parse_args()
    out = OUT.with_name("account_deletion_pinned.json") if args.pin_cores else OUT
    others_cpu, deletion_cpu = (0, 1) if args.pin_cores else (None, None)
    os.environ["LOG_LEVEL"] = "WARNING"

    url = fresh_scratch_database(DATABASE, "account_deletion")
    rounds: list[dict[str, Any]] = []
    try:
        with (
            StripeStandIn() as stand_in,
            tempfile.TemporaryDirectory() as recordings_dir,
            psycopg.connect(url, autocommit=True) as conn,
        ):
            recordings = Path(recordings_dir)
            client = stripe_client(StripeSettings(stripe_secret_key="sk_test_bench", stripe_api_base=stand_in.base_url))
            database = TimedDatabase(DatabaseSettings(database_url=url, db_pool_size=2))
            if args.pin_cores:
                # The deletion runs on this thread through the gateway's pool: both of its connections, opened now.
                database.pin(deletion_cpu)
            deleter = Deleter(database, client, LocalRecordings(recordings))
            add_questions(conn, args.sessions * PER_SESSION)
            victims = [make_victim(conn, client, stand_in, recordings, args) for _ in range(args.rounds)]
            writers = Writers(
                url,
                [make_writer(conn, args.sessions * PER_SESSION) for _ in range(args.writers)],
                args.interval_ms / 1000,
                others_cpu,
            )
            conn.execute("vacuum analyze")
            for victim in victims:
                counts = conn.execute(
                    "select (select count(*) from public.practice_sessions where user_id = %(u)s),"
                    " (select count(*) from public.responses where user_id = %(u)s),"
                    " (select count(*) from archive.responses where user_id = %(u)s)",
                    {"u": victim},
                ).fetchone()
                locks = Waits(url)
                writers.start()
                locks.start()
                time.sleep(1.0)  # connections open, caches warm
                baseline_start = time.perf_counter()
                time.sleep(3.0)
                started = time.perf_counter()
                state = deleter.request(victim, requested_by="operator")
                ended = time.perf_counter()
                time.sleep(0.2)
                writers.stop()
                locks.stop()
                assert state.status == "deleted", state
                # The same length of time just before the deletion, and never less than a second of writes.
                window = max(ended - started, 1.0)
                before = writers.latencies(max(baseline_start, started - window), started)
                during = writers.latencies(started, started + window)
                final = database.seconds["service.complete_account_deletion"]
                final_start, final_end = database.spans["service.complete_account_deletion"]
                with writers.lock:
                    overlapping_final = [
                        seconds for at, seconds in writers.samples if at - seconds < final_end and at > final_start
                    ]
                purging = writers.latencies(started, final_start)
                left = conn.execute("select count(*) from public.responses where user_id = %s", (victim,)).fetchone()[0]
                rounds.append(
                    {
                        "sessions": counts[0],
                        "answers": counts[1],
                        "archived_answers": counts[2],
                        "seconds": round(ended - started, 3),
                        "final_transaction_seconds": round(float(final), 3),
                        "rows_left": left,
                        "writes_before": len(before),
                        "writes_during": len(during),
                        "p95_before_ms": round(p95(before) * 1000, 2),
                        "p95_during_ms": round(p95(during) * 1000, 2),
                        "p95_ratio": round(p95(during) / p95(before), 3),
                        "most_backends_waiting_on_a_lock": locks.most(started, ended),
                        "lock_samples": sum(1 for at, _ in locks.samples if started <= at <= ended),
                        "p95_during_purges_ms": round(p95(purging) * 1000, 2) if purging else None,
                        "writes_overlapping_final": len(overlapping_final),
                        "max_overlapping_final_ms": round(max(overlapping_final, default=0.0) * 1000, 2),
                        "waits_during": locks.events(started, ended),
                        "waits_before": locks.events(started - (ended - started), started),
                    }
                )
            control = measure_control(
                url, writers, statistics.median(r["seconds"] for r in rounds), args.rounds, deletion_cpu
            )
            database.close()
            writer_errors = sorted(set(writers.errors))
    finally:
        with psycopg.connect(maintenance_url(url), autocommit=True) as admin:
            admin.execute(sql.SQL("drop database if exists {} with (force)").format(sql.Identifier(DATABASE)))

    result = {
        "rounds": rounds,
        "median_seconds": statistics.median(r["seconds"] for r in rounds),
        "median_final_transaction_seconds": statistics.median(r["final_transaction_seconds"] for r in rounds),
        "median_p95_before_ms": statistics.median(r["p95_before_ms"] for r in rounds),
        "median_p95_during_ms": statistics.median(r["p95_during_ms"] for r in rounds),
        "median_p95_ratio": statistics.median(r["p95_ratio"] for r in rounds),
        "most_backends_waiting_on_a_lock": max(r["most_backends_waiting_on_a_lock"] for r in rounds),
        "control": control,
        "writers": args.writers,
        "write_interval_ms": args.interval_ms,
        "writer_errors": writer_errors,
        "target_seconds": TARGET_SECONDS,
        "target_ratio": TARGET_RATIO,
        "pinned_cores": args.pin_cores,
    }
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")

    pinned = ", other users on CPU 0 and the deletion on CPU 1" if args.pin_cores else ""
    table = Table(title=f"Deleting an account (median of rounds{pinned})")
    for column in ("figure", "value", "target"):
        table.add_column(column)
    first = rounds[0]
    table.add_row(
        f"deletion of {first['sessions']:,} sessions, {first['answers']:,} answers, {first['archived_answers']:,}"
        " archived (end to end)",
        f"{result['median_seconds']:.2f} s",
        f"<= {TARGET_SECONDS:.0f} s",
    )
    table.add_row("  of which the final transaction", f"{result['median_final_transaction_seconds']:.2f} s", "")
    table.add_row(
        f"other users' write p95, {args.writers} writers x 1 / {args.interval_ms:g} ms: before / during",
        f"{result['median_p95_before_ms']:.1f} / {result['median_p95_during_ms']:.1f} ms",
        "",
    )
    table.add_row("  ratio during / before", f"{result['median_p95_ratio']:.2f}", f"<= {TARGET_RATIO}")
    table.add_row(
        "  p95 while the answers are purged / slowest write overlapping the final transaction (rounds)",
        "; ".join(f"{r['p95_during_purges_ms']} / {r['max_overlapping_final_ms']} ms" for r in rounds),
        "",
    )
    table.add_row(
        f"  control: a {control['seconds']:.2f} s query touching no table, same writers: ratio",
        f"{control['median_p95_ratio']:.2f}",
        "",
    )
    table.add_row(
        "backends waiting on a lock during the deletion (most, sampled every 5 ms)",
        str(result["most_backends_waiting_on_a_lock"]),
        "0",
    )
    for when in ("before", "during"):
        seen: Counter[str] = Counter()
        for r in rounds:
            seen.update(r[f"waits_{when}"])
        table.add_row(
            f"  others' waits seen {when} the deletion (samples, all rounds)",
            ", ".join(f"{event} {count}" for event, count in seen.most_common(4)) or "none",
            "",
        )
    console.print(table)
    if writer_errors:
        console.print(f"[red]writes refused:[/red] {writer_errors}")
    console.print(f"wrote {out}")


if __name__ == "__main__":
    main()
