"""Read replicas: how far a real streaming replica lags under the webhook and answer load, and whether analytics
running on it slows the primary's writes.

Setup (not timed): a primary and its streaming replica of their own (prep/localdb.py's replicated_pair: the code of
`prep db up` and `prep db replica up`, durable settings), under a temporary directory, deleted at the end. On the
primary: the schema; USERS users whose subscription events (checkout, trial end, renewal; each delivered twice, as
Stripe redelivers) are signed by the Stripe stand-in; WRITERS users with a session of served questions to answer;
one heavy account (SESSIONS sessions of 10 answers, archived answers, ratings) for the exports.

Load on the primary, always on: WEBHOOK_SENDERS threads each posting the next signed delivery to the webhook app
every WEBHOOK_INTERVAL ms, and WRITERS threads each writing an answer and a rating (one transaction, as the user
under RLS) every INTERVAL ms. Fixed schedules, not closed loops: a closed loop on a small machine measures only
its share of the CPU.

Measured, ROUNDS rounds of three phases (their order rotated each round), PHASE seconds each:
- "none": the load alone;
- "replica": the load, and analytics on the replica: the operator report (service.dashboard over 366 days and
  service.operator_alerts, Freshness.RECENT) then the heavy account's export (Freshness.AT_REQUEST), a round
  every ANALYTICS_EVERY ms (a fixed schedule: both phases do the same work), through
  shared.db.replica.ReplicaReads as `prep analytics report` and GET /account/export run them, in a process of
  its own;
- "primary": the same analytics on the primary (the control: what the replica spares the primary).
Figures: others' write p95 (the answers; the webhook deliveries beside) in each phase, and the ratio to "none" in
the same round; target: replica / none <= 1.1 (median of rounds). Replica lag, sampled every SAMPLE ms throughout:
the time from taking the primary's WAL insert position until the replica has replayed it (what an export on the
replica waits for), and pg_stat_replication's replay_lag and unreplayed bytes; p50 / p95 / max printed. And the CPU
seconds each server's processes used in each phase (/proc): where the analytics' work lands.

The replica runs on the same machine as the primary here, so analytics on it still takes CPU from the primary's
writes; on Supabase a replica is a machine of its own. The "primary" phase shows what the same work costs there.

Run: .venv/bin/python -m bench.replica [--users 500] [--writers 3] [--interval-ms 20] [--webhook-senders 2]
     [--webhook-interval-ms 40] [--sessions 300] [--rounds 5] [--phase-seconds 8] [--analytics-every-ms 1500]
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
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
from fastapi.testclient import TestClient
from rich.console import Console
from rich.table import Table

from bench.account_deletion import VICTIM_SQL, add_questions, make_writer, sign_up
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

    def latencies(self, start: float, end: float) -> list[float]:
        with self._lock:
            return [seconds for began, seconds in self.samples if start <= began and began + seconds <= end]


def answer_writer(url: str, writer: tuple[str, str, list[str], list[str]]) -> Callable[[], None]:
    """An answer and a rating per call, in one transaction as the user (RLS), as PostgREST runs them."""
    user, session, served, questions = writer
    claims = json.dumps({"sub": user, "role": "authenticated", "aud": "authenticated"})
    conn = psycopg.connect(url, autocommit=True)

    def write() -> None:
        served_id, question = served.pop(), questions.pop()
        answer_and_rate(conn, claims, session, served_id, user, question)

    return write


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
    results: Any,
) -> None:
    """The analytics, a round every `every` seconds while `running` is set, in a process of their own: the report
    and the export parse megabytes of JSON, and in the load's process the GIL they hold would slow the writes. Puts
    "ready" on `results`, then after each run of phases (seconds of each round, reads that fell back to the
    primary). A None on `results`' side (the process is a daemon) ends it with the benchmark."""
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
        while running.is_set():
            started = time.perf_counter()
            job()
            seconds.append(time.perf_counter() - started)
            time.sleep(max(0.0, every - seconds[-1]))
        results.put((seconds, fallbacks.count))


class AnalyticsProcess:
    """analytics_loop in a spawned process of its own, idle until `start()`; `stop()` returns what it did."""

    def __init__(
        self, where: str, primary_url: str, replica_url: str, exported_user: str, every: float, cpu: int | None
    ) -> None:
        context = multiprocessing.get_context("spawn")
        self._running = context.Event()
        self._results = context.Queue()
        self._process = context.Process(
            target=analytics_loop,
            args=(primary_url, replica_url, exported_user, where, every, cpu, self._running, self._results),
            daemon=True,
        )
        self._process.start()
        if self._results.get(timeout=300) != "ready":
            raise RuntimeError("the analytics process did not start")

    def start(self) -> None:
        self._running.set()

    def stop(self) -> tuple[list[float], int]:
        self._running.clear()
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
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--phase-seconds", type=float, default=8.0)
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

    phase_seconds = args.phase_seconds + 1.0  # a second to settle before each phase's window
    writes_per_writer = int(args.rounds * len(PHASES) * phase_seconds / (args.interval_ms / 1000) * 1.2) + 100
    with psycopg.connect(url, autocommit=True) as conn:
        add_questions(conn, max(writes_per_writer, args.sessions * PER_SESSION))
        writers = [make_writer(conn, writes_per_writer) for _ in range(args.writers)]
        exported_user = heavy_account(conn, args.sessions)
        conn.execute("vacuum analyze")

    webhook = build_app(
        WebhookSettings(
            database_url=url,
            db_pool_size=args.webhook_senders,
            stripe_secret_key="sk_test_bench",
            stripe_webhook_secret=SECRET,
        )
    )
    queue, lock = itertools.cycle(deliveries), threading.Lock()
    answers = Paced([answer_writer(url, w) for w in writers], args.interval_ms / 1000)
    hooks = Paced(
        [webhook_sender(TestClient(webhook), queue, lock) for _ in range(args.webhook_senders)],
        args.webhook_interval_ms / 1000,
    )
    lag = LagSampler(url, replica_url, args.sample_ms / 1000, 1 if args.pin_cores else None)
    rounds: list[dict[str, Any]] = []
    analytics_runs: dict[str, list[float]] = {"replica": [], "primary": []}
    fallbacks = 0
    windows: list[tuple[dict[str, Any], str, float, float]] = []  # (round's figures, phase, start, end)

    processes = {
        where: AnalyticsProcess(
            where, url, replica_url, exported_user, args.analytics_every_ms / 1000, 1 if args.pin_cores else None
        )
        for where in ("replica", "primary")
    }
    answers.start()
    hooks.start()
    time.sleep(2.0)  # connections open, caches warm
    try:
        for number in range(args.rounds):
            order = PHASES[number % 3 :] + PHASES[: number % 3]
            measured: dict[str, Any] = {"order": list(order)}
            for phase in order:
                background = processes.get(phase)
                if background:
                    background.start()
                time.sleep(1.0)
                cpu = (server_cpu_seconds(primary), server_cpu_seconds(replica))
                start = time.perf_counter()
                time.sleep(args.phase_seconds)
                end = time.perf_counter()
                cpu = (server_cpu_seconds(primary) - cpu[0], server_cpu_seconds(replica) - cpu[1])
                if background:
                    seconds, fell_back = background.stop()
                    analytics_runs[phase] += seconds
                    fallbacks += fell_back
                written, delivered = answers.latencies(start, end), hooks.latencies(start, end)
                windows.append((measured, phase, start, end))
                measured[phase] = {
                    "writes": len(written),
                    "write_p95_ms": round(percentile(written, 95) * 1000, 2),
                    "webhooks": len(delivered),
                    "webhook_p95_ms": round(percentile(delivered, 95) * 1000, 2),
                    "primary_cpu_seconds": round(cpu[0], 2),
                    "replica_cpu_seconds": round(cpu[1], 2),
                }
            for phase in ("replica", "primary"):
                measured[f"{phase}_ratio"] = round(
                    measured[phase]["write_p95_ms"] / measured["none"]["write_p95_ms"], 3
                )
                measured[f"{phase}_webhook_ratio"] = round(
                    measured[phase]["webhook_p95_ms"] / measured["none"]["webhook_p95_ms"], 3
                )
            rounds.append(measured)
            console.print(
                f"round {number + 1}: write p95 none {measured['none']['write_p95_ms']} ms, replica"
                f" {measured['replica']['write_p95_ms']} ms ({measured['replica_ratio']}x), primary"
                f" {measured['primary']['write_p95_ms']} ms ({measured['primary_ratio']}x)"
            )
    finally:
        samples = lag.stop()
        hooks.stop()
        answers.stop()

    lag_in_phase: dict[str, list[Sample]] = {phase: [] for phase in PHASES}
    for measured, phase, start, end in windows:
        measured[phase]["lag"] = lag_figures(between(samples, start, end))
        lag_in_phase[phase] += between(samples, start, end)
    with psycopg.connect(url, autocommit=True) as conn:
        exported_answers = conn.execute(
            "select count(*) from public.responses where user_id = %s", (exported_user,)
        ).fetchone()[0]  # type: ignore[index]
    return {
        "rounds": rounds,
        "median_replica_ratio": statistics.median(r["replica_ratio"] for r in rounds),
        "median_primary_ratio": statistics.median(r["primary_ratio"] for r in rounds),
        "median_replica_webhook_ratio": statistics.median(r["replica_webhook_ratio"] for r in rounds),
        "median_primary_webhook_ratio": statistics.median(r["primary_webhook_ratio"] for r in rounds),
        "median_write_p95_ms": {p: statistics.median(r[p]["write_p95_ms"] for r in rounds) for p in PHASES},
        "median_webhook_p95_ms": {p: statistics.median(r[p]["webhook_p95_ms"] for r in rounds) for p in PHASES},
        "median_cpu_seconds": {
            p: {
                "primary": statistics.median(r[p]["primary_cpu_seconds"] for r in rounds),
                "replica": statistics.median(r[p]["replica_cpu_seconds"] for r in rounds),
            }
            for p in PHASES
        },
        "lag_under_load": lag_figures(samples),
        "lag_by_phase": {phase: lag_figures(in_phase) for phase, in_phase in lag_in_phase.items()},
        "analytics_round_seconds": {
            phase: round(statistics.median(runs), 3) if runs else None for phase, runs in analytics_runs.items()
        },
        "analytics_reads_fallen_back_to_primary": fallbacks,
        "exported_account_answers": exported_answers,
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


def show(result: dict[str, Any], args: argparse.Namespace) -> None:
    pinned = ", each server on a CPU of its own" if result["pinned_cores"] else ""
    table = Table(title=f"Read replica (median of {len(result['rounds'])} rounds{pinned})")
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
    p95s = result["median_write_p95_ms"]
    table.add_row(
        f"others' write p95 ({args.writers} writers x 1 / {args.interval_ms:g} ms): none / analytics on replica /"
        " on primary",
        f"{p95s['none']:.1f} / {p95s['replica']:.1f} / {p95s['primary']:.1f} ms",
        "",
    )
    table.add_row(
        "  ratio, analytics on the replica / none", f"{result['median_replica_ratio']:.2f}", f"<= {TARGET_RATIO}"
    )
    table.add_row("  ratio, analytics on the primary / none (control)", f"{result['median_primary_ratio']:.2f}", "")
    hooks = result["median_webhook_p95_ms"]
    table.add_row(
        "webhook p95: none / replica / primary",
        f"{hooks['none']:.1f} / {hooks['replica']:.1f} / {hooks['primary']:.1f} ms",
        "",
    )
    cpu = result["median_cpu_seconds"]
    table.add_row(
        f"servers' CPU seconds per {args.phase_seconds:g} s phase, primary + replica: none / analytics on replica /"
        " on primary",
        " / ".join(f"{cpu[p]['primary']:.1f} + {cpu[p]['replica']:.1f}" for p in PHASES),
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
