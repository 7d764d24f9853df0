"""What the question-engine benchmarks share: the machine they ran on, latency summaries, and the JSON output."""

from __future__ import annotations

import json
import os
import statistics
import subprocess
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
from rich.console import Console

OUT_DIR = Path(__file__).resolve().parent / "out"
SERVICE_CLAIMS: dict[str, Any] = {"role": "service_role", "iss": "supabase-local"}

console = Console()


def machine(conn: psycopg.Connection) -> dict[str, Any]:
    """CPUs, PostgreSQL version and the settings that move these figures (durability, memory, JIT)."""
    names = ["server_version", "shared_buffers", "work_mem", "jit", "fsync", "synchronous_commit", "max_connections"]
    settings = dict(
        conn.execute("select name, current_setting(name) from pg_settings where name = any(%s)", (names,)).fetchall()
    )
    version = conn.execute("select version()").fetchone()
    return {
        "nproc": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "postgresql": version[0] if version else None,
        "settings": settings,
    }


def revision(conn: psycopg.Connection) -> dict[str, Any]:
    """What was measured: the checkout (others edit it concurrently) and the migrations the database holds."""
    repo = str(Path(__file__).resolve().parent.parent)
    git = ["git", "-C", repo]
    head = subprocess.run([*git, "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False)
    changed = subprocess.run(
        [*git, "status", "--porcelain", "--", "supabase", "functions", "shared"],
        capture_output=True,
        text=True,
        check=False,
    )
    versions = conn.execute("select version from supabase_migrations.schema_migrations order by version").fetchall()
    return {
        "git_head": head.stdout.strip(),
        "uncommitted_changes": changed.stdout.splitlines(),
        "migrations_applied": [v for (v,) in versions],
    }


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def latency(seconds: list[float]) -> dict[str, float]:
    """Median, p95, p99 and max in milliseconds (percentiles inclusive, so never above the max)."""
    ms = sorted(s * 1000 for s in seconds)
    percentiles = statistics.quantiles(ms, n=100, method="inclusive") if len(ms) > 1 else [ms[0]] * 99
    return {
        "runs": len(ms),
        "median_ms": statistics.median(ms),
        "p95_ms": percentiles[94],
        "p99_ms": percentiles[98],
        "max_ms": ms[-1],
    }


def write_report(name: str, report: dict[str, Any]) -> Path:
    OUT_DIR.mkdir(exist_ok=True)
    path = OUT_DIR / f"{name}.json"
    path.write_text(json.dumps(report, indent=2, default=str) + "\n", encoding="utf-8")
    console.print(f"Figures written to {path}")
    return path


def caption(report: dict[str, Any]) -> str:
    machine_info = report["machine"]
    return f"{str(machine_info['postgresql']).split(' on ')[0]}, {machine_info['nproc']} CPUs, {report['date']}"
