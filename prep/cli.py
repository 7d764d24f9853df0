"""`prep`: the platform's operator console (database, billing, analytics) and its local run (`serve`, `demo`)."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Annotated

import psycopg
import typer
from rich.console import Console
from rich.table import Table

from prep import migrations
from prep.analytics import app as analytics_app
from prep.billing import app as billing_app
from prep.localdb import EmbeddedPostgres, LocalDatabaseError, database_url
from prep.users import app as users_app
from shared.config import ConfigurationError

app = typer.Typer(no_args_is_help=True, help="Interview-prep platform operator console.")
db_app = typer.Typer(no_args_is_help=True, help="Local database, migrations and seed.")
app.add_typer(db_app, name="db")
app.add_typer(billing_app, name="billing")
app.add_typer(analytics_app, name="analytics")
app.add_typer(users_app, name="users")

console = Console(soft_wrap=True)
errors = Console(stderr=True)


@contextmanager
def connect() -> Iterator[psycopg.Connection]:
    try:
        url = database_url()
        with psycopg.connect(url, autocommit=True, connect_timeout=10) as conn:
            yield conn
    except (LocalDatabaseError, migrations.MigrationError) as error:
        errors.print(f"[red]error:[/red] {error}")
        raise typer.Exit(1) from error
    except psycopg.OperationalError as error:
        errors.print(
            f"[red]error:[/red] cannot reach the database: {str(error).strip()}\n"
            "Check DATABASE_URL, or unset it to use the embedded PostgreSQL."
        )
        raise typer.Exit(1) from error


def _migrate(conn: psycopg.Connection, to_version: str | None = None) -> None:
    if migrations.apply_stand_in(conn):
        console.print("Supabase stand-in (roles, auth, publication) is in place.")
    applied = 0
    for migration in migrations.migrate(conn, to_version=to_version):
        console.print(f"applied {migration.version} {migration.name}")
        applied += 1
    if not applied:
        console.print("Migrations are up to date.")
    for migration in migrations.changed_since_applied(conn):
        errors.print(
            f"[yellow]warning:[/yellow] {migration.version} {migration.name} changed since this database applied it,"
            " and the change is not applied. Rebuild a local database with `prep db reset`; a shared one needs the"
            " change as a new migration."
        )


@db_app.command()
def up() -> None:
    """Start the local database if needed, then migrate and seed it."""
    with connect() as conn:
        _migrate(conn)
        for path in migrations.seed(conn):
            console.print(f"seeded {path.name}")
    from prep.backup import ensure_base_backup

    ensure_base_backup(console)
    console.print(f"\nDatabase ready: [bold]{database_url(start=False)}[/bold]")


@db_app.command()
def migrate(
    to: Annotated[str | None, typer.Option(help="Stop after this version (default: apply all).")] = None,
) -> None:
    """Apply pending migrations (and the Supabase stand-in on a plain PostgreSQL)."""
    with connect() as conn:
        _migrate(conn, to)


@db_app.command()
def seed() -> None:
    """Load the seed files (idempotent)."""
    with connect() as conn:
        for path in migrations.seed(conn):
            console.print(f"seeded {path.name}")


@db_app.command()
def rollback(
    steps: Annotated[int | None, typer.Option(help="How many of the newest migrations to undo.")] = None,
    to: Annotated[str | None, typer.Option(help="Undo every migration newer than this version (0: all).")] = None,
) -> None:
    """Undo migrations with their rollback scripts, newest first."""
    if steps is None and to is None:
        steps = 1
    undone = 0
    with connect() as conn:
        for migration in migrations.rollback(conn, steps=steps, to_version=to):
            console.print(f"rolled back {migration.version} {migration.name}")
            undone += 1
    if not undone:
        console.print("Nothing to roll back.")


@db_app.command()
def status() -> None:
    """List migrations: which exist here and which the database has applied."""
    with connect() as conn:
        states = migrations.status(conn)
    table = Table("version", "name", "local", "applied")
    for state in states:
        table.add_row(
            state.version,
            state.name,
            "yes" if state.local else "[red]no[/red]",
            ("[yellow]yes, file edited since[/yellow]" if state.changed else "yes")
            if state.applied
            else "[yellow]pending[/yellow]",
        )
    console.print(table)


@db_app.command("test")
def run_tests(
    files: Annotated[
        list[Path] | None, typer.Argument(help="pgTAP files to run [default: every file in supabase/tests].")
    ] = None,
) -> None:
    """Run the pgTAP tests (supabase/tests) on a scratch database built from this checkout, then drop it."""
    from prep import dbtest

    try:
        source, results = dbtest.run(database_url(), files)
    except (LocalDatabaseError, migrations.MigrationError, psycopg.Error) as error:
        errors.print(f"[red]error:[/red] {error}")
        raise typer.Exit(1) from error
    console.print(f"pgTAP: {source}")
    for result in results:
        name = migrations.display(result.path)
        colour = "green" if result.ok else "red"
        console.print(f"{name} .. [{colour}]{result.summary()}[/{colour}]", highlight=False)
        for failed in result.failed:
            console.print(f"  not ok {failed}", highlight=False)
        if not result.ok:
            for line in result.diagnostics:
                console.print(f"  {line}", highlight=False, markup=False)
    tests = sum(result.ran for result in results)
    failed_files = [result for result in results if not result.ok]
    verdict = "[red]FAIL[/red]" if failed_files or not results else "[green]PASS[/green]"
    console.print(f"Files={len(results)}, Tests={tests}, Failed files={len(failed_files)}: {verdict}")
    if failed_files or not results:
        raise typer.Exit(1)


@db_app.command()
def reset(
    yes: Annotated[bool, typer.Option("--yes", help="Do not ask for confirmation.")] = False,
) -> None:
    """Drop and recreate the database, then migrate and seed it. Refused on a Supabase project."""
    with connect() as conn:
        if migrations.is_supabase_project(conn):
            errors.print("[red]error:[/red] refusing to reset a Supabase project; use `supabase db reset`.")
            raise typer.Exit(1)
        name = conn.info.dbname
    if not yes:
        typer.confirm(f"Drop every object in database {name!r}?", abort=True)
    with connect() as conn:
        migrations.drop_everything(conn)
    up()


@db_app.command()
def backup(
    out: Annotated[
        Path | None, typer.Option(help="The backup file [default: .local/backups/prep-backup-<time>.tar].")
    ] = None,
    base: Annotated[
        bool, typer.Option("--base", help="A base backup of the embedded server for point-in-time restore instead.")
    ] = False,
) -> None:
    """Back up the database: a logical dump of the app's schemas and data (or, --base, the embedded server's files)."""
    from functions.backup.logical import BackupError
    from prep import backup as backups

    try:
        if base:
            backups.base_backup(console)
        else:
            backups.logical_backup(out, console)
    except (BackupError, LocalDatabaseError, psycopg.Error) as error:
        errors.print(f"[red]error:[/red] {error}")
        raise typer.Exit(1) from error


@db_app.command()
def restore(
    source: Annotated[
        str | None, typer.Argument(help="A backup file, or s3://<bucket>/<key> (not with --to-time).")
    ] = None,
    force: Annotated[
        bool, typer.Option("--force", help="Restore over a non-empty database, after backing it up.")
    ] = False,
    to_time: Annotated[
        datetime | None,
        typer.Option(
            "--to-time",
            formats=["%Y-%m-%dT%H:%M:%S%z", "%Y-%m-%d %H:%M:%S%z", "%Y-%m-%dT%H:%M:%S.%f%z"],
            help="Point-in-time restore of the embedded server, e.g. 2026-12-04T17:30:00+00:00.",
        ),
    ] = None,
    port: Annotated[
        int | None, typer.Option(help="Port of the restored server (--to-time) [default: any free].")
    ] = None,
    replace: Annotated[
        bool, typer.Option("--replace", help="Then make it the embedded server's data (the old data is kept).")
    ] = False,
    yes: Annotated[bool, typer.Option("--yes", help="Do not ask before --replace.")] = False,
) -> None:
    """Restore a logical backup onto an empty database, or the embedded server to a point in time (--to-time)."""
    from functions.backup.logical import BackupError
    from prep import backup as backups

    if (source is None) == (to_time is None):
        raise typer.BadParameter("give either a backup file (or s3:// URL) or --to-time")
    try:
        if to_time is None:
            assert source is not None
            backups.restore_logical(source, force=force, console=console)
            return
        restored = backups.restore_to_time(to_time, port=port, console=console)
        if replace:
            if not yes:
                typer.confirm(
                    "Replace the embedded server's data with the restored copy (the old data is kept)?", abort=True
                )
            backups.replace_local_data(restored, console)
    except (BackupError, LocalDatabaseError, psycopg.Error) as error:
        errors.print(f"[red]error:[/red] {error}")
        raise typer.Exit(1) from error


@db_app.command()
def stop() -> None:
    """Stop the embedded PostgreSQL (its data is kept)."""
    if os.environ.get("DATABASE_URL"):
        console.print("DATABASE_URL is set: the embedded server is not in use.")
        return
    console.print("stopped" if EmbeddedPostgres().stop() else "not running")


@db_app.command()
def url() -> None:
    """Print the connection URL (starting the embedded server if needed)."""
    try:
        console.print(database_url(), highlight=False, soft_wrap=True)
    except LocalDatabaseError as error:
        errors.print(f"[red]error:[/red] {error}")
        raise typer.Exit(1) from error


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(envvar="PREP_API_PORT", help="Port of the API (0: any free port).")] = 8000,
    schedule_every: Annotated[
        str, typer.Option(help="How often the analytics schedule runs, e.g. 60s, 5m, 1h.")
    ] = "60s",
) -> None:
    """Serve every HTTP function, the evaluation worker and the analytics schedule on localhost, until Ctrl-C."""
    # Imported here: the functions' apps and their clients load only for the commands that run them.
    from prep.serve import ServeError, parse_interval
    from prep.serve import serve as run_platform

    try:
        interval = parse_interval(schedule_every)
    except ValueError as error:
        raise typer.BadParameter(str(error), param_hint="--schedule-every") from error
    try:
        run_platform(host=host, port=port, schedule_every=interval, console=console)
    except (ServeError, ConfigurationError, LocalDatabaseError) as error:
        errors.print(f"[red]error:[/red] {error}")
        raise typer.Exit(1) from error


@app.command()
def demo(
    api_url: Annotated[
        str | None, typer.Option(help="The running platform [default: http://127.0.0.1:$PREP_API_PORT, or :8000]")
    ] = None,
    email: Annotated[
        str | None, typer.Option(help="The new user's email [default: demo-<random>@example.test]")
    ] = None,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for the evaluations.")] = 60,
) -> None:
    """Walk one new user through the running platform (`make run`), over HTTP and SQL as its clients do."""
    import httpx

    from prep.demo import DemoError, run_demo

    try:
        run_demo(
            api_url=(api_url or f"http://127.0.0.1:{os.environ.get('PREP_API_PORT', '8000')}").rstrip("/"),
            database_url=database_url(start=False),
            email=email or f"demo-{uuid.uuid4().hex[:8]}@example.test",
            timeout=timeout,
            console=console,
        )
    except (DemoError, ConfigurationError, httpx.HTTPError, psycopg.Error) as error:
        errors.print(f"[red]error:[/red] {error}")
        raise typer.Exit(1) from error
