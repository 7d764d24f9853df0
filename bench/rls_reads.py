"""RLS overhead on a user's typical reads: as `authenticated` through RLS versus `service_role` filtering itself.

    .venv/bin/python -m bench.rls_reads [--runs 300]

Each read runs the way PostgREST runs it: one transaction per request, with the JWT's role and claims set
transaction-locally (shared.db.rls.acting_as). The authenticated side has no user filter (the policies do the
filtering); the service side, which bypasses RLS, filters explicitly. Runs pick a random user and one of
their sessions, alternate which side goes first, and use one warm connection (after an unmeasured pass over
the same picks), so cache state and machine noise hit both sides alike. Both sides must return the same rows.

Then, in a transaction that is rolled back, the three select policies are recreated in the naive form
`auth.uid() = user_id` (not wrapped in a select) and the authenticated side is measured again.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, LiteralString

import psycopg
from psycopg import sql
from rich.console import Console
from rich.panel import Panel
from rich.table import Table

from bench.database import bench_url, dbname, describe, maintenance_url, read_marker, schema_state
from shared.db.rls import acting_as

TARGET_RATIO = 1.3
OUT_FILE = Path(__file__).resolve().parent / "out" / "rls_reads.json"
SERVICE_CLAIMS: dict[str, Any] = {"role": "service_role", "iss": "supabase-local"}
# The select policies of the tables read, and the naive form of their filter.
POLICIES = {
    "practice_sessions": "practice_sessions: read own",
    "responses": "responses: read own",
    "user_progress": "user_progress: read own",
}
NAIVE_USING = "auth.uid() = user_id"

console = Console()


@dataclass(frozen=True)
class Read:
    name: str
    authenticated: LiteralString  # no user filter: RLS does it
    service: LiteralString  # the same read, filtered explicitly


READS = [
    Read(
        "my recent sessions",
        "select * from public.practice_sessions order by started_at desc limit 20",
        "select * from public.practice_sessions where user_id = %(user_id)s order by started_at desc limit 20",
    ),
    Read(
        "a session's responses",
        "select * from public.responses where session_id = %(session_id)s order by created_at",
        "select * from public.responses where user_id = %(user_id)s and session_id = %(session_id)s"
        " order by created_at",
    ),
    Read(
        "my progress",
        "select * from public.user_progress",
        "select * from public.user_progress where user_id = %(user_id)s",
    ),
]


@dataclass(frozen=True)
class Pick:
    user_id: uuid.UUID
    session_id: uuid.UUID
    claims: dict[str, Any]

    @property
    def params(self) -> dict[str, uuid.UUID]:
        return {"user_id": self.user_id, "session_id": self.session_id}


def user_claims(user_id: uuid.UUID, email: str) -> dict[str, Any]:
    """A Supabase access token's claims: auth.uid() parses all of this, so its size is part of the cost."""
    now = int(time.time())
    return {
        "aud": "authenticated",
        "exp": now + 3600,
        "iat": now,
        "iss": "http://127.0.0.1:54321/auth/v1",
        "sub": str(user_id),
        "email": email,
        "phone": "",
        "app_metadata": {"provider": "email", "providers": ["email"]},
        "user_metadata": {"email": email, "email_verified": True, "phone_verified": False, "sub": str(user_id)},
        "role": "authenticated",
        "aal": "aal1",
        "amr": [{"method": "password", "timestamp": now - 600}],
        "session_id": str(uuid.uuid4()),
        "is_anonymous": False,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=300, help="measured runs per policy form (default 300)")
    parser.add_argument("--seed", type=float, default=0.42, help="setseed() for the user picks, in [-1, 1]")
    parser.add_argument("--database-url", help="the generated database (default: prep_bench on the server)")
    args = parser.parse_args(argv)

    url = bench_url(args.database_url)
    with psycopg.connect(maintenance_url(url), autocommit=True) as admin:
        volume = read_marker(admin, dbname(url))
    if not volume or volume.get("state") != "complete":
        raise SystemExit(f"{describe(url)} holds no generated data: run `python -m bench.generate_volume` first")
    schema_current = schema_state(volume) == "current"
    if not schema_current:
        console.print(
            "[yellow]warning:[/yellow] the data was generated from an older schema (migrations, stand-in or seeds "
            "changed since): these figures measure that schema. `python -m bench.generate_volume` brings it up to "
            "date."
        )

    with psycopg.connect(url, autocommit=True) as conn:
        picks = pick_users(conn, args.runs, args.seed)
        console.print(f"{describe(url)}: {args.runs} random users, one warm-up pass then one measured pass per form")
        results: dict[str, Any] = {}
        results["wrapped"] = measure_form(conn, picks)
        # DDL inside a transaction is invisible to other sessions and undone by the rollback.
        with conn.transaction(force_rollback=True):
            for table, policy in POLICIES.items():
                names = {"policy": sql.Identifier(policy), "table": sql.Identifier("public", table)}
                conn.execute(sql.SQL("drop policy {policy} on {table}").format(**names))
                conn.execute(
                    sql.SQL("create policy {policy} on {table} for select to authenticated using ({using})").format(
                        **names, using=sql.SQL(NAIVE_USING)
                    )
                )
            results["naive"] = measure_form(conn, picks)
        report = build_report(conn, url, volume, schema_current, args, results)

    print_report(report)
    OUT_FILE.parent.mkdir(exist_ok=True)
    OUT_FILE.write_text(json.dumps(report, indent=2, default=str) + "\n", encoding="utf-8")
    console.print(f"Figures written to {OUT_FILE}")
    return 0


def pick_users(conn: psycopg.Connection, count: int, seed: float) -> list[Pick]:
    """Random users who have practised, each with one of their sessions; reproducible for a given seed."""
    conn.execute("select setseed(%s)", (seed,))
    rows = conn.execute(
        """
        select u.id, u.email, s.id
        from (select id, email from public.users order by random() limit %s) u
        cross join lateral (
          select id from public.practice_sessions s where s.user_id = u.id order by random() limit 1
        ) s
        """,
        (count * 2,),
    ).fetchall()
    if len(rows) < count:
        raise SystemExit(f"only {len(rows)} users with sessions; need {count}")
    return [Pick(user_id, session_id, user_claims(user_id, email)) for user_id, email, session_id in rows[:count]]


def measure_form(conn: psycopg.Connection, picks: list[Pick]) -> dict[str, Any]:
    """Time every read on both sides for each pick; also record the plans and the policies in force.

    An unmeasured pass goes first, so every pick's rows are cached and the statements prepared: both policy
    forms then see the same warm cache, whichever runs first.
    """
    times: dict[str, dict[str, list[float]]] = {r.name: {"authenticated": [], "service": []} for r in READS}
    for measured in (False, True):
        for index, pick in enumerate(picks):
            for read in READS:
                sides = [("authenticated", pick.claims, read.authenticated), ("service", SERVICE_CLAIMS, read.service)]
                if index % 2:
                    sides.reverse()
                rows: dict[str, list[tuple[Any, ...]]] = {}
                for side, claims, query in sides:
                    elapsed, rows[side] = timed(conn, claims, query, pick.params)
                    if measured:
                        times[read.name][side].append(elapsed)
                if rows["authenticated"] != rows["service"]:
                    raise SystemExit(f"{read.name}: RLS and the explicit filter disagree for user {pick.user_id}")
    sample = picks[-1]
    return {
        "policies": policy_definitions(conn),
        "reads": {
            read.name: {
                "authenticated_sql": read.authenticated,
                "service_sql": read.service,
                "rows_in_sample": len(timed(conn, sample.claims, read.authenticated, sample.params)[1]),
                "authenticated": summary(times[read.name]["authenticated"]),
                "service": summary(times[read.name]["service"]),
                "ratio_median": statistics.median(times[read.name]["authenticated"])
                / statistics.median(times[read.name]["service"]),
                "explain_authenticated": explain(conn, sample.claims, read.authenticated, sample.params),
                "explain_service": explain(conn, SERVICE_CLAIMS, read.service, sample.params),
            }
            for read in READS
        },
    }


def timed(
    conn: psycopg.Connection, claims: Mapping[str, Any], query: LiteralString, params: Mapping[str, Any]
) -> tuple[float, list[tuple[Any, ...]]]:
    """One request: its own transaction as the caller; only the query's execution and fetch are timed."""
    with acting_as(conn, claims):
        started = time.perf_counter()
        rows = conn.execute(query, params).fetchall()
        return time.perf_counter() - started, rows


def explain(
    conn: psycopg.Connection, claims: Mapping[str, Any], query: LiteralString, params: Mapping[str, Any]
) -> str:
    with acting_as(conn, claims):
        plan = conn.execute("explain (analyze, buffers) " + query, params).fetchall()
    return "\n".join(line for (line,) in plan)


def policy_definitions(conn: psycopg.Connection) -> dict[str, str]:
    rows = conn.execute(
        "select tablename, qual from pg_policies where schemaname = 'public' and policyname = any(%s)",
        (list(POLICIES.values()),),
    ).fetchall()
    return dict(rows)


def summary(seconds: list[float]) -> dict[str, float]:
    ms = sorted(s * 1000 for s in seconds)
    return {
        "median_ms": statistics.median(ms),
        "p95_ms": statistics.quantiles(ms, n=20, method="inclusive")[18],
        "min_ms": ms[0],
        "runs": len(ms),
    }


def build_report(
    conn: psycopg.Connection,
    url: str,
    volume: dict[str, Any],
    schema_current: bool,
    args: argparse.Namespace,
    results: dict[str, Any],
) -> dict[str, Any]:
    settings = dict(
        conn.execute(
            "select name, current_setting(name) from pg_settings where name = any(%s)",
            (["server_version", "shared_buffers", "work_mem", "effective_cache_size", "jit"],),
        ).fetchall()
    )
    version = conn.execute("select version()").fetchone()
    applied = conn.execute(
        "select array_agg(version order by version) from supabase_migrations.schema_migrations"
    ).fetchone()
    return {
        "benchmark": "rls_reads",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {
            "nproc": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
            "postgresql": version[0] if version else None,
            "settings": settings,
        },
        "database": {
            "target": describe(url),
            "volume": volume,
            "migrations": applied[0] if applied else [],
            "schema_current": schema_current,
        },
        "runs": args.runs,
        "seed": args.seed,
        "target_ratio": TARGET_RATIO,
        "forms": results,
    }


def print_report(report: dict[str, Any]) -> None:
    forms = report["forms"]
    for form in ("wrapped", "naive"):
        for name, read in forms[form]["reads"].items():
            console.print(Panel(read["explain_authenticated"], title=f"{name} — authenticated, {form} policy"))
    machine = report["machine"]
    table = Table(
        title=f"RLS overhead: {report['runs']} runs per read, times in ms",
        caption=f"{machine['postgresql'].split(' on ')[0]}, {machine['nproc']} CPUs, {report['date']}",
    )
    for column in ("read", "policy", "rows", "svc med", "svc p95", "auth med", "auth p95", "ratio"):
        table.add_column(column, justify="left" if column in ("read", "policy") else "right")
    for name in forms["wrapped"]["reads"]:
        for form in ("wrapped", "naive"):
            read = forms[form]["reads"][name]
            ratio = read["ratio_median"]
            colour = "green" if ratio <= report["target_ratio"] else "red"
            table.add_row(
                name,
                form,
                str(read["rows_in_sample"]),
                f"{read['service']['median_ms']:.3f}",
                f"{read['service']['p95_ms']:.3f}",
                f"{read['authenticated']['median_ms']:.3f}",
                f"{read['authenticated']['p95_ms']:.3f}",
                f"[{colour}]{ratio:.2f}[/{colour}]",
            )
    console.print(table)
    console.print(
        f"ratio = auth med / svc med, target ≤ {report['target_ratio']}. Policies: wrapped = "
        f"{forms['wrapped']['policies']['responses']}, naive = {forms['naive']['policies']['responses']}"
    )


if __name__ == "__main__":
    sys.exit(main())
