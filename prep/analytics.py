"""`prep analytics`: backfill the scheduled aggregation over a range of days, and the operator dashboard."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated

import psycopg
import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from functions.analytics.schedule import aggregate_day
from functions.analytics.settings import AnalyticsSettings
from prep import dbhealth
from prep.dashboard import DashboardData, OperatorAlert, render_dashboard
from prep.localdb import database_read_url, database_url
from shared.config import ConfigurationError, load_settings
from shared.db import DatabaseError, Freshness, connect, connect_reads

app = typer.Typer(no_args_is_help=True, help="Analytics: backfills and the operator dashboard.")
console = Console(soft_wrap=True)
errors = Console(stderr=True)


def analytics_settings() -> AnalyticsSettings:
    try:
        # Backfilling a busy day takes longer than a request's statement timeout allows.
        return load_settings(
            AnalyticsSettings,
            database_url=database_url(),
            database_read_url=database_read_url(),
            db_statement_timeout_ms=300_000,
        )
    except ConfigurationError as error:
        errors.print(f"[red]error:[/red] {error}")
        raise typer.Exit(1) from error


@app.command()
def aggregate(
    start: Annotated[datetime, typer.Option("--from", formats=["%Y-%m-%d"], help="First UTC day.")],
    end: Annotated[datetime, typer.Option("--to", formats=["%Y-%m-%d"], help="Last UTC day (included).")],
) -> None:
    """Aggregate every UTC day from --from to --to: platform metrics, users' progress and achievements."""
    first, last = start.date(), end.date()
    if last < first:
        raise typer.BadParameter("--to is before --from")
    days = [first + timedelta(days=n) for n in range((last - first).days + 1)]
    settings = analytics_settings()
    db = connect(settings)
    failures = []
    with Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=console
    ) as progress:
        task = progress.add_task("aggregating", total=len(days))
        for day in days:
            progress.update(task, description=f"aggregating {day}")
            steps = aggregate_day(db, day, shards=settings.analytics_user_shards, connections=settings.db_pool_size)
            failures += [step for step in steps if step.error]
            progress.advance(task)
    if failures:
        for step in failures:
            errors.print(f"[red]failed:[/red] {step.label}: {step.error}")
        errors.print("Every step is idempotent: run the same range again once the cause is fixed.")
        raise typer.Exit(1)
    console.print(f"Aggregated {len(days)} day(s), {first} to {last}.")


@app.command()
def report(
    days: Annotated[int, typer.Option(min=1, max=366, help="How many UTC days, up to --until.")] = 30,
    until: Annotated[
        datetime | None, typer.Option(formats=["%Y-%m-%d"], help="Last UTC day shown (default: today).")
    ] = None,
    out: Annotated[Path, typer.Option(help="Where to write the HTML page.")] = Path("dashboard.html"),
) -> None:
    """Write the platform dashboard (open billing alerts; signups, active users, sessions, scores, MRR, cache hit
    ratio, AI cost; the database's health)."""
    last = until.date() if until else datetime.now(UTC).date()
    settings = analytics_settings()
    # Only reads, and a report may be seconds old: the read replica while it is no more than
    # DB_READ_MAX_LAG_SECONDS behind.
    database = connect_reads(settings, connect(settings), Freshness.RECENT)
    try:
        data = DashboardData.model_validate(
            database.call("service.dashboard", {"days": days, "until": last.isoformat()})
        )
        alerts = [OperatorAlert.model_validate(a) for a in database.call("service.operator_alerts", {})]
    except DatabaseError as error:
        errors.print(f"[red]error:[/red] {error}")
        raise typer.Exit(1) from error
    with psycopg.connect(database_url(), autocommit=True, connect_timeout=10) as conn:
        health = dbhealth.gather(conn)
    generated_at = datetime.now(UTC).isoformat(timespec="seconds")
    out.write_text(render_dashboard(data, alerts=alerts, generated_at=generated_at, health=health))
    console.print(f"Wrote {out} ({days} days to {last}); open it in a browser.")
