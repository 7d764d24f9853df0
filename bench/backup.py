"""Backups of a 1 GB database: RPO (how many seconds of writes the WAL archive may lack) and RTO (how long a restore
takes: logical, and point-in-time), on a cluster of its own with WAL archiving as `prep db up` runs it.

    .venv/bin/python -m bench.backup [--rounds 2] [--rpo-samples 3]

The cluster lives in .local/bench-backup/ (its data, WAL archive, base backups, restores; about 6 GB while it runs)
and listens on a free port, whatever DATABASE_URL says. Its database is filled once by bench.generate_volume
(8,000 users, 80,000 questions, 800,000 answers: about 1 GB with indexes) and reused by later runs.

RPO, two cases: a quiet server, whose last commit waits for archive_timeout to close its WAL segment (the worst
case, measured: commit, then wait for that segment in the archive without forcing it); and a busy one (a writer
filling segments), where the lag is the time from a commit to the archiving of its segment.
RTO: `take_backup` + `restore_backup` onto a new database (with its ANALYZE), and `restore_to_time` (copy of the
newest base backup, replay of the archived WAL to the target, promotion), each checked for the rows it must hold.
"""

from __future__ import annotations

import argparse
import json
import shutil
import socket
import statistics
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
from psycopg.conninfo import make_conninfo
from rich.console import Console
from rich.table import Table

from bench import generate_volume
from bench.database import dbname
from functions.backup import logical
from prep import migrations, pitr
from prep.localdb import LOCAL_DIR, EmbeddedPostgres, drop_database

OUT = Path(__file__).parent / "out" / "backup.json"
ROOT = LOCAL_DIR / "bench-backup"
DATABASE = "prep_backup_bench"
VOLUME = ["--users", "8000", "--questions", "80000", "--responses", "800000"]
console = Console()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def cluster() -> EmbeddedPostgres:
    """The benchmark's cluster, started on a free port (or found on its port if a run left it running)."""
    pid_file = ROOT / "postgres" / "postmaster.pid"
    port = int(pid_file.read_text().splitlines()[3]) if pid_file.exists() else free_port()
    server = EmbeddedPostgres(data_dir=ROOT / "postgres", port=port)
    server.start()
    return server


def archived_segment(conn: psycopg.Connection) -> str | None:
    row = conn.execute("select last_archived_wal from pg_stat_archiver").fetchone()
    name = row[0] if row else None
    return name if name is not None and len(name) == 24 else None


def seconds_until_archived(conn: psycopg.Connection, lsn: str, timeout: float = 200) -> float:
    """Seconds from now until the WAL segment holding `lsn` is in the archive (inf: not within `timeout`)."""
    segment = str(conn.execute("select pg_walfile_name(%s::pg_lsn)", (lsn,)).fetchone()[0])  # type: ignore[index]
    started = time.perf_counter()
    while time.perf_counter() - started < timeout:
        archived = archived_segment(conn)
        if archived is not None and archived[8:] >= segment[8:]:
            return time.perf_counter() - started
        time.sleep(0.05)
    console.print(f"[yellow]segment {segment} not archived within {timeout:.0f} s[/yellow]")
    return float("inf")


def rpo_quiet(url: str, samples: int) -> list[float]:
    """A single commit on an idle server: seconds until its segment is archived (bounded by archive_timeout)."""
    lags = []
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("create table if not exists bench_rpo (at timestamptz default clock_timestamp())")
        for _ in range(samples):
            conn.execute("select pg_switch_wal()")  # start from a fresh segment, as after a quiet period
            time.sleep(1)
            conn.execute("insert into bench_rpo default values")
            lsn = str(conn.execute("select pg_current_wal_insert_lsn()").fetchone()[0])  # type: ignore[index]
            lags.append(seconds_until_archived(conn, lsn))
    return lags


def rpo_busy(url: str, samples: int) -> tuple[list[float], float]:
    """Commits while a writer fills segments: seconds from a commit until its segment is archived; and the WAL rate."""
    stop = threading.Event()

    def writer() -> None:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("create table if not exists bench_rpo_load (payload text)")
            while not stop.is_set():
                conn.execute(
                    "insert into bench_rpo_load select repeat(md5(random()::text), 32) from generate_series(1, 2000)"
                )

    thread = threading.Thread(target=writer, daemon=True)
    lags = []
    with psycopg.connect(url, autocommit=True) as conn:
        start_lsn = str(conn.execute("select pg_current_wal_insert_lsn()").fetchone()[0])  # type: ignore[index]
        started = time.perf_counter()
        thread.start()
        try:
            for _ in range(samples):
                time.sleep(2)
                conn.execute("insert into bench_rpo default values")
                lsn = str(conn.execute("select pg_current_wal_insert_lsn()").fetchone()[0])  # type: ignore[index]
                lags.append(seconds_until_archived(conn, lsn))
        finally:
            stop.set()
            thread.join()
        written = conn.execute("select pg_current_wal_insert_lsn() - %s::pg_lsn", (start_lsn,)).fetchone()[0]  # type: ignore[index]
        rate = float(written) / (time.perf_counter() - started) / 1e6
        conn.execute("drop table bench_rpo_load")
    return lags, rate


def logical_round(server: EmbeddedPostgres, url: str, work: Path, users: int) -> dict[str, float]:
    path = work / "logical.tar"
    started = time.perf_counter()
    logical.take_backup(url, path)
    backup_seconds = time.perf_counter() - started
    target = f"{DATABASE}_restored"
    drop_database(server.url(), target)
    with psycopg.connect(server.url(), autocommit=True) as admin:
        admin.execute(f'create database "{target}"')  # type: ignore[arg-type]
    target_url = make_conninfo(server.url(), dbname=target)
    started = time.perf_counter()
    report = logical.restore_backup(path, target_url, prepare=migrations.apply_stand_in)
    restore_seconds = time.perf_counter() - started
    with psycopg.connect(target_url) as conn:
        restored_users = conn.execute("select count(*) from public.users").fetchone()[0]  # type: ignore[index]
    if restored_users != users or report.schema_differences:
        raise SystemExit(
            f"logical restore is wrong: {restored_users} users of {users}, {report.schema_differences[:5]}"
        )
    size = path.stat().st_size
    path.unlink()
    drop_database(server.url(), target)
    return {"backup_seconds": backup_seconds, "restore_seconds": restore_seconds, "file_mb": size / 1e6}


def pitr_round(server: EmbeddedPostgres, url: str) -> dict[str, Any]:
    started = time.perf_counter()
    base = pitr.take_base_backup(server)
    base_seconds = time.perf_counter() - started
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("create table if not exists bench_pitr (n int)")
        conn.execute("truncate bench_pitr")
        # Writes after the base backup, for the restore to replay: a few segments' worth.
        conn.execute("insert into bench_pitr select generate_series(1, 500000)")
        target = conn.execute("select clock_timestamp()").fetchone()[0]  # type: ignore[index]
        time.sleep(0.05)
        conn.execute("insert into bench_pitr select generate_series(500001, 600000)")
        replayed_mb = (
            float(
                conn.execute(
                    "select pg_current_wal_insert_lsn() - (select redo_lsn from pg_control_checkpoint())"
                ).fetchone()[0]  # type: ignore[index]
            )
            / 1e6
        )
    started = time.perf_counter()
    restored = pitr.restore_to_time(server, target, port=free_port())
    restore_seconds = time.perf_counter() - started
    try:
        with psycopg.connect(make_conninfo(restored.url, dbname=dbname(url))) as conn:
            rows = conn.execute("select count(*) from bench_pitr").fetchone()[0]  # type: ignore[index]
            size = conn.execute("select pg_database_size(%s)", (DATABASE,)).fetchone()[0]  # type: ignore[index]
    finally:
        server.stop(restored.data_dir)
        shutil.rmtree(restored.data_dir, ignore_errors=True)
    shutil.rmtree(base.path, ignore_errors=True)
    base.path.with_suffix(".json").unlink(missing_ok=True)
    if rows != 500_000:
        raise SystemExit(f"point-in-time restore is wrong: {rows} rows, expected 500000")
    return {
        "base_backup_seconds": base_seconds,
        "restore_seconds": restore_seconds,
        "restored_database_mb": size / 1e6,
        "wal_since_checkpoint_mb": replayed_mb,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2, help="restores of each kind")
    parser.add_argument("--rpo-samples", type=int, default=2)
    args = parser.parse_args(argv)

    server = cluster()
    url = make_conninfo(server.url(), dbname=DATABASE)
    console.print(f"Cluster {server.data_dir} on port {server.port}; filling {DATABASE} if needed")
    generate_volume.main([*VOLUME, "--database-url", url])
    with psycopg.connect(url) as conn:
        database_mb = conn.execute("select pg_database_size(current_database())").fetchone()[0] / 1e6  # type: ignore[index]
        users = conn.execute("select count(*) from public.users").fetchone()[0]  # type: ignore[index]
        archive_timeout = conn.execute("show archive_timeout").fetchone()[0]  # type: ignore[index]
    console.print(f"{DATABASE}: {database_mb:,.0f} MB, {users:,} users")

    try:
        # Generating the data left a backlog of WAL to archive: measure from an archive that has caught up.
        pitr.archive_current_wal(server, timeout=1800)
        # The benchmark's own writes go to another database of the cluster (the WAL is the cluster's): the app
        # database keeps only what its migrations make, as a restore requires.
        scratch_url = server.url()
        work = ROOT / "work"
        work.mkdir(parents=True, exist_ok=True)
        logical_rounds = [logical_round(server, url, work, users) for _ in range(args.rounds)]
        pitr_rounds = [pitr_round(server, scratch_url) for _ in range(args.rounds)]
        busy, wal_rate = rpo_busy(scratch_url, args.rpo_samples)
        quiet = rpo_quiet(scratch_url, args.rpo_samples)
    finally:
        server.stop()

    def median(rounds: list[dict[str, Any]], key: str) -> float:
        return statistics.median(r[key] for r in rounds)

    result = {
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "database_mb": database_mb,
        "archive_timeout": archive_timeout,
        "rpo_quiet_seconds": quiet,
        "rpo_quiet_median_seconds": statistics.median(quiet),
        "rpo_busy_seconds": busy,
        "rpo_busy_median_seconds": statistics.median(busy),
        "busy_wal_mb_per_second": wal_rate,
        "logical": logical_rounds,
        "logical_backup_median_seconds": median(logical_rounds, "backup_seconds"),
        "logical_restore_median_seconds": median(logical_rounds, "restore_seconds"),
        "pitr": pitr_rounds,
        "pitr_restore_median_seconds": median(pitr_rounds, "restore_seconds"),
        "base_backup_median_seconds": median(pitr_rounds, "base_backup_seconds"),
    }
    OUT.parent.mkdir(exist_ok=True)
    OUT.write_text(json.dumps(result, indent=2) + "\n")

    table = Table("figure", "median", "samples")
    table.add_row("database size", f"{database_mb:,.0f} MB", "")
    table.add_row(
        f"RPO, quiet server (archive_timeout {archive_timeout})",
        f"{result['rpo_quiet_median_seconds']:.1f} s",
        ", ".join(f"{s:.1f}" for s in quiet),
    )
    table.add_row(
        f"RPO, busy server ({wal_rate:.0f} MB/s of WAL)",
        f"{result['rpo_busy_median_seconds']:.2f} s",
        ", ".join(f"{s:.2f}" for s in busy),
    )
    table.add_row(
        "logical backup (pg_dump)",
        f"{result['logical_backup_median_seconds']:.0f} s",
        _list(logical_rounds, "backup_seconds"),
    )
    table.add_row(
        f"RTO, logical restore ({logical_rounds[0]['file_mb']:.0f} MB file)",
        f"{result['logical_restore_median_seconds']:.0f} s",
        _list(logical_rounds, "restore_seconds"),
    )
    table.add_row(
        "base backup", f"{result['base_backup_median_seconds']:.0f} s", _list(pitr_rounds, "base_backup_seconds")
    )
    table.add_row(
        "RTO, point-in-time restore",
        f"{result['pitr_restore_median_seconds']:.0f} s",
        _list(pitr_rounds, "restore_seconds"),
    )
    console.print(table)
    console.print(f"wrote {OUT}")
    return 0


def _list(rounds: list[dict[str, Any]], key: str) -> str:
    return ", ".join(f"{r[key]:.1f}" for r in rounds)


if __name__ == "__main__":
    raise SystemExit(main())
