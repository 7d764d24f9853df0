"""Read replicas: how far a real streaming replica lags under the webhook and answer load, and whether analytics
running on it slows the primary's writes.

Setup (not timed): a primary and its streaming replica of their own (prep/localdb.py's replicated_pair: the code of
`prep db up` and `prep db replica up`, durable settings), under a temporary directory, deleted at the end. On the
primary: the schema; USERS users whose subscription events (checkout, trial end, renewal; each delivered twice, as
Stripe redelivers) are signed by the Stripe stand-in; WRITERS users with a session of served questions to answer;
one heavy account (SESSIONS sessions of 10 answers, archived answers, ratings) for the exports.

Load on the primary, always on, from two processes of their own (so neither's Python work holds a GIL the other's
timed calls wait for): WEBHOOK_SENDERS threads each posting the next signed delivery to the webhook app every
WEBHOOK_INTERVAL ms, and WRITERS threads each writing an answer and a rating (one transaction, as the user under
RLS) every INTERVAL ms. Fixed schedules, not closed loops: a closed loop on a small machine measures only its share
of the CPU.

Measured, ROUNDS rounds of three phases (their order rotated each round), PHASE seconds each, short and
interleaved so that the machine's drifts (autovacuum, checkpoints, other work) fall on every phase alike:
- "none": the load alone;
- "replica": the load, and analytics on the replica: the operator report (service.dashboard over 366 days and
  service.operator_alerts, Freshness.RECENT) then the heavy account's export (Freshness.AT_REQUEST), a round
  every ANALYTICS_EVERY ms (a fixed schedule: both phases do the same work), through
  shared.db.replica.ReplicaReads as `prep analytics report` and GET /account/export run them, in a process of
  its own;
- "primary": the same analytics on the primary (the control: what the replica spares the primary).
Figures: others' write p95 (the answers; the webhook deliveries beside) in each window, its ratio to "none" in the
same round, and the quartiles of those ratios; target: replica / none <= 1.1 (the median); the p95 of all windows
of each phase together beside. What the primary does meanwhile: its processes' CPU seconds in each phase (/proc:
where the analytics' work lands), and what the writers wait on inside it (pg_stat_activity sampled every 20 ms: a
replica that held the primary back would show as new waits). Replica lag, sampled every SAMPLE ms throughout: the
time from taking the primary's WAL insert position until the replica has replayed it (what an export on the
replica waits for), and pg_stat_replication's replay_lag and unreplayed bytes; p50 / p95 / max printed.

On Supabase a replica is a machine of its own; here it runs on the primary's machine. With --pin-cores each server
has a CPU of its own (the primary and the load on CPU 0; the replica, the analytics client and the lag sampler on
CPU 1): the nearest this machine comes to two, and the run the target is for. Unpinned, the replica shares the
primary's CPUs and can spare it nothing: that run is a reference for a replica on the same host.

Run: .venv/bin/python -m bench.replica [--users 500] [--writers 3] [--interval-ms 20] [--webhook-senders 2]
     [--webhook-interval-ms 40] [--sessions 300] [--rounds 15] [--phase-seconds 3] [--analytics-every-ms 1500]
     [--pin-cores]   # the primary and the load on CPU 0, the replica and the analytics on CPU 1: a machine each
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import multiprocessing
import os
import random
import statistics
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
from fastapi.testclient import TestClient
from rich.console import Console
from rich.table import Table

from bench.account_deletion import VICTIM_SQL, WRITER_APP, Waits, add_questions, make_writer, sign_up
from bench.database import answer_and_rate
from bench.webhook_throughput import SECRET, subscription_events
from functions.billing.settings import WebhookSettings
from functions.billing.webhook import build_app
from prep import localdb, migrations
from prep.stripe_stand_in import StripeStandIn, event_payload, sign_payload
from shared.config import DatabaseSettings
from shared.db import Database, Freshness, connect_reads
from shared.db.psycopg_transport import PsycopgDatabase

OUT = Path(__file__).parent / "out" / "replica.json"
TARGET_RATIO = 1.1
PER_SESSION = 10
PHASES = ("none", "replica", "primary")
SETTLE_SECONDS = 0.5  # after the analytics start or stop, before a phase's window
WAITS_EVERY_SECONDS = 0.02  # the writers' waits sampled this often: more often, the sampling loads the primary
console = Console(width=140)


def percentile(values: list[float], q: int) -> float:
    """The q-th percentile (q in 1..99); the largest value when there are too few for quantiles."""
    return statistics.quantiles(values, n=100)[q - 1] if len(values) >= 20 else max(values)


class Paced:
    """Threads each running their own `work()` on a fixed schedule, every `interval` s (a late one starts at once),
    recording (started, seconds) for each run that succeeded, and the first line of each error."""

    def __init__(self, workers: list[Callable[[], None]], interval: float) -> None:
        self.workers, self.interval = workers, interval
        self.samples: list[tuple[float, float]] = []
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []

    def start(self) -> None:
        self._threads = [threading.Thread(target=self._run, args=(w,), daemon=True) for w in self.workers]
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join()

    def _run(self, work: Callable[[], None]) -> None:
        due = time.perf_counter()
        while not self._stop.is_set():
            due += self.interval
            time.sleep(max(0.0, due - time.perf_counter()))
            started = time.perf_counter()
            try:
                work()
            except Exception as error:  # a failed write is counted, never hidden
                with self._lock:
                    self.errors.append(str(error).splitlines()[0] if str(error) else type(error).__name__)
                continue
            with self._lock:
                self.samples.append((started, time.perf_counter() - started))


Load = Callable[..., list[Callable[[], None]]]  # makes a process's workers from picklable arguments


def paced_loop(
    make: Load, arguments: tuple[Any, ...], interval: float, cpu: int | None, stop: Any, results: Any
) -> None:
    """Paced(make(*arguments), interval) until `stop`, in a process of its own; puts "ready" on `results` once
    running, then (samples, errors) at the end."""
    if cpu is not None:
        os.sched_setaffinity(0, {cpu})
    paced = Paced(make(*arguments), interval)
    paced.start()
    results.put("ready")
    stop.wait()
    paced.stop()
    results.put((paced.samples, paced.errors))


class PacedProcess:
    """paced_loop in a spawned process: each kind of load in its own, so that one's Python work never holds the GIL
    the other's timed calls wait for. Running from construction until `stop()`; then `latencies()` and `errors`."""

    def __init__(self, make: Load, arguments: tuple[Any, ...], interval: float, cpu: int | None) -> None:
        context = multiprocessing.get_context("spawn")
        self._stop = context.Event()
        self._results = context.Queue()
        self._process = context.Process(
            target=paced_loop, args=(make, arguments, interval, cpu, self._stop, self._results), daemon=True
        )
        self._process.start()
        if self._results.get(timeout=300) != "ready":
            raise RuntimeError(f"the load process {make.__name__} did not start")
        self.samples: list[tuple[float, float]] = []
        self.errors: list[str] = []

    def stop(self) -> None:
        self._stop.set()
        self.samples, self.errors = self._results.get(timeout=120)
        self._process.join()

    def latencies(self, start: float, end: float) -> list[float]:
        """Seconds of the calls that began and ended within [start, end] (CLOCK_MONOTONIC: the same in every
        process)."""
        return [seconds for began, seconds in self.samples if start <= began and began + seconds <= end]


def answer_writers(url: str, writers: list[tuple[str, str, list[str], list[str]]]) -> list[Callable[[], None]]:
    return [answer_writer(url, writer) for writer in writers]


def answer_writer(url: str, writer: tuple[str, str, list[str], list[str]]) -> Callable[[], None]:
    """An answer and a rating per call, in one transaction as the user (RLS), as PostgREST runs them."""
    user, session, served, questions = writer
    claims = json.dumps({"sub": user, "role": "authenticated", "aud": "authenticated"})
    conn = psycopg.connect(url, autocommit=True, application_name=WRITER_APP)

    def write() -> None:
        served_id, question = served.pop(), questions.pop()
        answer_and_rate(conn, claims, session, served_id, user, question)

    return write


def webhook_senders(url: str, senders: int, deliveries: list[bytes]) -> list[Callable[[], None]]:
    """`senders` clients of one webhook app (a pool connection each), taking the deliveries in turn."""
    webhook = build_app(
        WebhookSettings(
            database_url=url, db_pool_size=senders, stripe_secret_key="sk_test_bench", stripe_webhook_secret=SECRET
        )
    )
    queue, lock = itertools.cycle(deliveries), threading.Lock()
    return [webhook_sender(TestClient(webhook), queue, lock) for _ in range(senders)]


def webhook_sender(client: TestClient, deliveries: Iterator[bytes], lock: threading.Lock) -> Callable[[], None]:
    def send() -> None:
        with lock:
            body = next(deliveries)
        response = client.post(
            "/stripe/webhook", content=body, headers={"stripe-signature": sign_payload(body, SECRET)}
        )
        if response.status_code != 200:
            raise RuntimeError(f"webhook answered {response.status_code}: {response.text[:200]}")

    return send


def heavy_account(conn: psycopg.Connection, sessions: int) -> str:
    """A user with `sessions` completed sessions of 10 answers, archived answers and ratings (the export's work)."""
    user = sign_up(conn, "exported")
    conn.execute("set session_replication_role = replica")
    try:
        params = {"user": user, "sessions": sessions, "per_session": PER_SESSION, "archived": sessions}
        for statement in VICTIM_SQL.split(";\n\n"):
            conn.execute(statement, params)  # type: ignore[arg-type]
    finally:
        conn.execute("reset session_replication_role")
    return user


def analytics(report: Database, exports: Database, exported_user: str) -> Callable[[], None]:
    """One round of the reads that may move to the replica: the operator report, then an account's export."""
    until = time.strftime("%Y-%m-%d", time.gmtime())

    def run() -> None:
        report.call("service.dashboard", {"days": 366, "until": until})
        report.call("service.operator_alerts", {})
        after = None
        while True:
            page = exports.call("service.export_account", {"user_id": exported_user, "answers_after": after})
            if (after := page["next"]) is None:
                break

    return run


def analytics_loop(
    primary_url: str,
    replica_url: str,
    exported_user: str,
    where: str,
    every: float,
    cpu: int | None,
    running: Any,
    stopped: Any,
    results: Any,
) -> None:
    """The analytics, a round every `every` seconds from `running` being set until `stopped` is, in a process of
    their own: the report and the export parse megabytes of JSON, and in the load's process the GIL they hold would
    slow the writes. Puts "ready" on `results`, then after each phase (seconds of each round, reads that fell back
    to the primary). The process is a daemon: it ends with the benchmark."""
    if cpu is not None:
        os.sched_setaffinity(0, {cpu})
    settings = DatabaseSettings(
        database_url=primary_url, database_read_url=replica_url, db_pool_size=2, db_statement_timeout_ms=60_000
    )
    primary = PsycopgDatabase(settings)
    if where == "replica":
        reads = (
            connect_reads(settings, primary, Freshness.RECENT),
            connect_reads(settings, primary, Freshness.AT_REQUEST),
        )
    else:
        reads = (primary, primary)
    job = analytics(*reads, exported_user)
    fallbacks = FallbackCounter()
    logging.getLogger("db.replica").addHandler(fallbacks)
    job()  # connections open, plans cached
    results.put("ready")
    while True:
        running.wait()
        seconds, fallbacks.count = [], 0
        while not stopped.is_set():
            started = time.perf_counter()
            job()
            seconds.append(time.perf_counter() - started)
            stopped.wait(max(0.0, every - seconds[-1]))
        results.put((seconds, fallbacks.count))


class AnalyticsProcess:
    """analytics_loop in a spawned process of its own, idle until `start()`; `stop()` returns what it did."""

    def __init__(
        self,
        where: str,
        primary_url: str,
        replica_url: str,
        exported_user: str,
        every: float,
        cpu: int | None,
    ) -> None:
        context = multiprocessing.get_context("spawn")
        self._running, self._stopped = context.Event(), context.Event()
        self._results = context.Queue()
        self._process = context.Process(
            target=analytics_loop,
            args=(
                primary_url,
                replica_url,
                exported_user,
                where,
                every,
                cpu,
                self._running,
                self._stopped,
                self._results,
            ),
            daemon=True,
        )
        self._process.start()
        if self._results.get(timeout=300) != "ready":
            raise RuntimeError("the analytics process did not start")

    def start(self) -> None:
        self._stopped.clear()
        self._running.set()

    def stop(self) -> tuple[list[float], int]:
        self._running.clear()
        self._stopped.set()
        seconds, fallbacks = self._results.get(timeout=300)
        return seconds, fallbacks


Sample = tuple[float, float, float | None, int | None]  # (taken at, replayed after s, replay_lag s, bytes behind)


def sample_lag(primary_url: str, replica_url: str, interval: float, cpu: int | None, stop: Any, results: Any) -> None:
    """Every `interval` s until `stop`: the primary's WAL insert position, then how long until the replica has
    replayed it; and pg_stat_replication's replay_lag and unreplayed bytes. In a process of its own (its polling
    would otherwise share the writers' GIL); puts the samples on `results` at the end."""
    if cpu is not None:
        os.sched_setaffinity(0, {cpu})
    samples: list[Sample] = []
    with (
        psycopg.connect(primary_url, autocommit=True) as primary,
        psycopg.connect(replica_url, autocommit=True) as replica,
    ):
        results.put("ready")
        while not stop.is_set():
            at = time.perf_counter()  # CLOCK_MONOTONIC: comparable with the load's process
            position, lag, behind = primary.execute(
                "select pg_current_wal_insert_lsn(),"
                " (select extract(epoch from replay_lag)::float8 from pg_stat_replication limit 1),"
                " (select pg_wal_lsn_diff(pg_current_wal_insert_lsn(), replay_lsn)::bigint"
                "  from pg_stat_replication limit 1)"
            ).fetchone()  # type: ignore[misc]
            while not replica.execute("select pg_last_wal_replay_lsn() >= %s", (position,)).fetchone()[0]:  # type: ignore[index]
                time.sleep(0.002)
            samples.append((at, time.perf_counter() - at, lag, behind))
            time.sleep(max(0.0, at + interval - time.perf_counter()))
    results.put(samples)


class LagSampler:
    """sample_lag in a spawned process, sampling from construction until `stop()`, which returns the samples."""

    def __init__(self, primary_url: str, replica_url: str, interval: float, cpu: int | None) -> None:
        context = multiprocessing.get_context("spawn")
        self._stop = context.Event()
        self._results = context.Queue()
        self._process = context.Process(
            target=sample_lag,
            args=(primary_url, replica_url, interval, cpu, self._stop, self._results),
            daemon=True,
        )
        self._process.start()
        if self._results.get(timeout=300) != "ready":
            raise RuntimeError("the lag sampler did not start")

    def stop(self) -> list[Sample]:
        self._stop.set()
        samples: list[Sample] = self._results.get(timeout=60)
        self._process.join()
        return samples


def between(samples: list[Sample], start: float, end: float) -> list[Sample]:
    return [sample for sample in samples if start <= sample[0] <= end]


def server_processes(server: localdb.EmbeddedPostgres) -> dict[int, list[str]]:
    """A server's postmaster and its live children (backends, WAL sender or receiver, startup process...): pid ->
    the fields of /proc/<pid>/stat after the command name (Linux)."""
    postmaster = (server.data_dir / "postmaster.pid").read_text().split()[0]
    found = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue  # the process exited meanwhile
        if stat.parent.name == postmaster or fields[1] == postmaster:
            found[int(stat.parent.name)] = fields
    return found


def server_cpu_seconds(server: localdb.EmbeddedPostgres) -> float:
    """CPU seconds a server's processes have used: the postmaster's own and those of the children it reaped, and
    the live children's."""
    postmaster = int((server.data_dir / "postmaster.pid").read_text().split()[0])
    ticks = 0
    for pid, fields in server_processes(server).items():
        own = int(fields[11]) + int(fields[12])  # utime, stime
        ticks += own + (int(fields[13]) + int(fields[14]) if pid == postmaster else 0)  # cutime, cstime
    return ticks / os.sysconf("SC_CLK_TCK")


def pin(server: localdb.EmbeddedPostgres, cpu: int) -> None:
    """Keep a server on one CPU: its processes now, and (inherited from the postmaster) every one it starts."""
    for pid in server_processes(server):
        os.sched_setaffinity(pid, {cpu})


class FallbackCounter(logging.Handler):
    """Counts the routing's warnings: analytics meant for the replica that ran on the primary instead."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.count = 0

    def emit(self, record: logging.LogRecord) -> None:
        self.count += 1


def lag_figures(samples: list[Sample]) -> dict[str, Any]:
    visible = [s[1] * 1000 for s in samples]
    replay = [s[2] * 1000 for s in samples if s[2] is not None]
    behind = [float(s[3]) for s in samples if s[3] is not None]
    return {
        "samples": len(samples),
        "visible_after_ms": {k: round(v, 2) for k, v in _spread(visible).items()},
        "replay_lag_ms": {k: round(v, 2) for k, v in _spread(replay).items()} if replay else None,
        "unreplayed_bytes": {k: round(v) for k, v in _spread(behind).items()} if behind else None,
    }


def _spread(values: list[float]) -> dict[str, float]:
    return {"p50": statistics.median(values), "p95": percentile(values, 95), "max": max(values)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, default=500)
    parser.add_argument("--writers", type=int, default=3)
    parser.add_argument("--interval-ms", type=float, default=20.0)
    parser.add_argument("--webhook-senders", type=int, default=2)
    parser.add_argument("--webhook-interval-ms", type=float, default=40.0)
    parser.add_argument("--sessions", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--phase-seconds", type=float, default=3.0)
    parser.add_argument("--sample-ms", type=float, default=50.0)
    parser.add_argument(
        "--analytics-every-ms",
        type=float,
        default=1500.0,
        help="an analytics round starts this often (at once if the last one took longer; 0: back to back): a fixed"
        " schedule, so the replica and the primary phases do the same work (back to back, the replica, faster at"
        " them, did 1.7x more)",
    )
    parser.add_argument(
        "--pin-cores",
        action="store_true",
        help="the primary and the load on CPU 0, the replica and the analytics on CPU 1 (writes replica_pinned.json)",
    )
    args = parser.parse_args()
    os.environ["LOG_LEVEL"] = "WARNING"

    with (
        tempfile.TemporaryDirectory(prefix="prep-bench-replica-") as directory,
        localdb.replicated_pair(Path(directory), throwaway=False) as (primary, replica),
    ):
        result = run(args, primary, replica)
    out = OUT.with_name("replica_pinned.json") if args.pin_cores else OUT
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    show(result, args)
    console.print(f"wrote {out}")


def run(
    args: argparse.Namespace, primary: localdb.EmbeddedPostgres, replica: localdb.EmbeddedReplica
) -> dict[str, Any]:
    if args.pin_cores:
        # Each server a CPU of its own, as each is a machine of its own on Supabase: the primary and the load on
        # CPU 0, the replica and the analytics client on CPU 1 (threads started from here on inherit it).
        pin(primary, 0)
        pin(replica, 1)
        os.sched_setaffinity(0, {0})
    url = localdb.create_database(primary.url(), "bench")
    replica_url = replica.url("bench")
    with psycopg.connect(url, autocommit=True) as conn:
        migrations.build(conn)
    with StripeStandIn() as stand_in:
        events, _ = subscription_events(stand_in, url, args.users)
    deliveries = [event_payload(e) for e in events] * 2
    random.Random(7).shuffle(deliveries)

    # a phase: settling, the window, then up to an analytics interval for the last round to end
    phase_seconds = SETTLE_SECONDS + args.phase_seconds + args.analytics_every_ms / 1000
    writes_per_writer = int(args.rounds * len(PHASES) * phase_seconds / (args.interval_ms / 1000) * 1.2) + 100
    with psycopg.connect(url, autocommit=True) as conn:
        add_questions(conn, max(writes_per_writer, args.sessions * PER_SESSION))
        writers = [make_writer(conn, writes_per_writer) for _ in range(args.writers)]
        exported_user = heavy_account(conn, args.sessions)
        conn.execute("vacuum analyze")

    load_cpu = 0 if args.pin_cores else None
    answers = PacedProcess(answer_writers, (url, writers), args.interval_ms / 1000, load_cpu)
    hooks = PacedProcess(
        webhook_senders, (url, args.webhook_senders, deliveries), args.webhook_interval_ms / 1000, load_cpu
    )
    lag = LagSampler(url, replica_url, args.sample_ms / 1000, 1 if args.pin_cores else None)
    analytics_runs: dict[str, list[float]] = {"replica": [], "primary": []}
    fallbacks = 0
    windows: list[Window] = []

    processes = {
        where: AnalyticsProcess(
            where,
            url,
            replica_url,
            exported_user,
            args.analytics_every_ms / 1000,
            1 if args.pin_cores else None,
        )
        for where in ("replica", "primary")
    }
    time.sleep(2.0)  # connections open, caches warm
    waits = Waits(url, WAITS_EVERY_SECONDS)
    waits.start()
    try:
        for number in range(args.rounds):
            order = PHASES[number % 3 :] + PHASES[: number % 3]
            for phase in order:
                background = processes.get(phase)
                if background:
                    background.start()
                time.sleep(SETTLE_SECONDS)
                cpu = (server_cpu_seconds(primary), server_cpu_seconds(replica))
                start = time.perf_counter()
                time.sleep(args.phase_seconds)
                end = time.perf_counter()
                cpu = (server_cpu_seconds(primary) - cpu[0], server_cpu_seconds(replica) - cpu[1])
                if background:
                    seconds, fell_back = background.stop()
                    analytics_runs[phase] += seconds
                    fallbacks += fell_back
                windows.append(Window(number, phase, start, end, *cpu))
            if (number + 1) % 5 == 0:
                console.print(f"{number + 1} of {args.rounds} rounds")
    finally:
        samples = lag.stop()
        waits.stop()
        hooks.stop()
        answers.stop()

    with psycopg.connect(url, autocommit=True) as conn:
        exported_answers = conn.execute(
            "select count(*) from public.responses where user_id = %s", (exported_user,)
        ).fetchone()[0]  # type: ignore[index]
    # each window's timed calls (seconds): the answers written, the webhooks delivered
    calls = {w: (answers.latencies(w.start, w.end), hooks.latencies(w.start, w.end)) for w in windows}
    rounds = [
        {
            w.phase: {"write_p95_ms": p95_ms(calls[w][0]), "webhook_p95_ms": p95_ms(calls[w][1])}
            for w in windows
            if w.round == number
        }
        for number in range(args.rounds)
    ]
    pooled = {phase: [w for w in windows if w.phase == phase] for phase in PHASES}
    writes = {phase: p95_ms([s for w in in_phase for s in calls[w][0]]) for phase, in_phase in pooled.items()}
    webhooks = {phase: p95_ms([s for w in in_phase for s in calls[w][1]]) for phase, in_phase in pooled.items()}
    return {
        "write_p95_ms": writes,
        "webhook_p95_ms": webhooks,
        # each round's phases side by side, then the median: a spike (autovacuum, a checkpoint) in one window
        # moves one round's ratio, where it would move a p95 of all windows together
        "round_ratio_quartiles": {
            phase: quartiles([r[phase]["write_p95_ms"] / r["none"]["write_p95_ms"] for r in rounds])
            for phase in ("replica", "primary")
        },
        "writes_per_phase": {phase: sum(len(calls[w][0]) for w in in_phase) for phase, in_phase in pooled.items()},
        "cpu_seconds_per_phase": {
            phase: {
                "primary": round(statistics.median(w.primary_cpu for w in in_phase), 2),
                "replica": round(statistics.median(w.replica_cpu for w in in_phase), 2),
            }
            for phase, in_phase in pooled.items()
        },
        "writers_waiting": {phase: writers_waiting(waits, in_phase) for phase, in_phase in pooled.items()},
        "lag_under_load": lag_figures(samples),
        "lag_by_phase": {
            phase: lag_figures([s for w in in_phase for s in between(samples, w.start, w.end)])
            for phase, in_phase in pooled.items()
        },
        "analytics_round_seconds": {
            phase: round(statistics.median(runs), 3) if runs else None for phase, runs in analytics_runs.items()
        },
        "analytics_reads_fallen_back_to_primary": fallbacks,
        "exported_account_answers": exported_answers,
        "rounds": rounds,
        "writers": args.writers,
        "write_interval_ms": args.interval_ms,
        "analytics_every_ms": args.analytics_every_ms,
        "webhook_senders": args.webhook_senders,
        "webhook_interval_ms": args.webhook_interval_ms,
        "phase_seconds": args.phase_seconds,
        "writer_errors": sorted(set(answers.errors)),
        "webhook_errors": sorted(set(hooks.errors)),
        "target_ratio": TARGET_RATIO,
        "cpus": os.cpu_count(),
        "pinned_cores": args.pin_cores,
    }


@dataclass(frozen=True)
class Window:
    """One phase of one round: when it was measured, and the CPU seconds each server used meanwhile."""

    round: int
    phase: str
    start: float
    end: float
    primary_cpu: float
    replica_cpu: float


def p95_ms(seconds: list[float]) -> float:
    return round(percentile(seconds, 95) * 1000, 2)


def writers_waiting(waits: Waits, windows: list[Window]) -> dict[str, float]:
    """How many writers were waiting on each wait event at a sampled moment of these windows, on average (the five
    most seen)."""
    seen: Counter[str] = Counter()
    taken = 0
    for window in windows:
        seen.update(waits.events(window.start, window.end))
        taken += sum(1 for at, _ in waits.samples if window.start <= at <= window.end)
    return {event: round(count / taken, 4) for event, count in seen.most_common(5)}


def quartiles(values: list[float]) -> list[float]:
    return [round(q, 3) for q in statistics.quantiles(values, n=4)]


def show(result: dict[str, Any], args: argparse.Namespace) -> None:
    placement = ", each server on a CPU of its own" if result["pinned_cores"] else ""
    table = Table(title=f"Read replica ({len(result['rounds'])} rounds of {args.phase_seconds:g} s phases{placement})")
    for column in ("figure", "value", "target"):
        table.add_column(column)
    lag = result["lag_under_load"]
    table.add_row(
        "replica lag under load: primary's position replayed after, p50 / p95 / max",
        "{p50:.1f} / {p95:.1f} / {max:.1f} ms".format(**lag["visible_after_ms"]),
        "p95 printed",
    )
    if lag["replay_lag_ms"]:
        table.add_row(
            "  pg_stat_replication.replay_lag p50 / p95 / max",
            "{p50:.1f} / {p95:.1f} / {max:.1f} ms".format(**lag["replay_lag_ms"]),
            "",
        )
    if lag["unreplayed_bytes"]:
        table.add_row(
            "  WAL not yet replayed p50 / p95 / max",
            "{p50:,} / {p95:,} / {max:,} bytes".format(**lag["unreplayed_bytes"]),
            "",
        )
    p95s, writes = result["write_p95_ms"], result["writes_per_phase"]
    table.add_row(
        f"others' write p95, all windows ({args.writers} writers x 1 / {args.interval_ms:g} ms, {writes['none']:,}"
        " writes a phase): none / analytics on replica / on primary",
        f"{p95s['none']:.1f} / {p95s['replica']:.1f} / {p95s['primary']:.1f} ms",
        "",
    )
    spread = result["round_ratio_quartiles"]
    table.add_row(
        "  a round's ratio, analytics on the replica / none: median (quartiles)",
        f"{spread['replica'][1]:.2f} ({spread['replica'][0]:.2f} - {spread['replica'][2]:.2f})",
        f"<= {TARGET_RATIO}" if result["pinned_cores"] else "(reference: CPUs shared)",
    )
    table.add_row(
        "  a round's ratio, analytics on the primary / none (control): median (quartiles)",
        f"{spread['primary'][1]:.2f} ({spread['primary'][0]:.2f} - {spread['primary'][2]:.2f})",
        "",
    )
    hooks = result["webhook_p95_ms"]
    table.add_row(
        "webhook p95: none / replica / primary",
        f"{hooks['none']:.1f} / {hooks['replica']:.1f} / {hooks['primary']:.1f} ms",
        "",
    )
    cpu = result["cpu_seconds_per_phase"]
    table.add_row(
        f"servers' CPU seconds per {args.phase_seconds:g} s phase, primary + replica: none / analytics on replica /"
        " on primary",
        " / ".join(f"{cpu[p]['primary']:.2f} + {cpu[p]['replica']:.2f}" for p in PHASES),
        "",
    )
    waiting = result["writers_waiting"]
    events = sorted(
        {e for seen in waiting.values() for e in seen}, key=lambda e: -sum(w.get(e, 0) for w in waiting.values())
    )
    for number, event in enumerate(events[:4]):
        table.add_row(
            "writers waiting at a moment, on average, by wait event: none / replica / primary" if number == 0 else "",
            f"{event} " + " / ".join(f"{waiting[p].get(event, 0):.3f}" for p in PHASES),
            "",
        )
    seconds = result["analytics_round_seconds"]
    table.add_row(
        f"one analytics round (report, export of {result['exported_account_answers']:,} answers): replica / primary",
        f"{seconds['replica']} / {seconds['primary']} s",
        "",
    )
    table.add_row(
        "analytics reads that fell back to the primary", str(result["analytics_reads_fallen_back_to_primary"]), "0"
    )
    console.print(table)
    for kind in ("writer_errors", "webhook_errors"):
        if result[kind]:
            console.print(f"[red]{kind}:[/red] {result[kind]}")


if __name__ == "__main__":
    main()
