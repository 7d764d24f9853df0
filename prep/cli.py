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
from prep.localdb import EmbeddedPostgres, EmbeddedReplica, LocalDatabaseError, database_read_url, database_url
from prep.questions import app as questions_app
from prep.tables import rows_display
from prep.users import app as users_app
from shared.config import ConfigurationError

app = typer.Typer(no_args_is_help=True, help="Interview-prep platform operator console.")
db_app = typer.Typer(no_args_is_help=True, help="Local database, migrations and seed.")
replica_app = typer.Typer(no_args_is_help=True, help="A local streaming replica of the embedded server.")
app.add_typer(db_app, name="db")
db_app.add_typer(replica_app, name="replica")
app.add_typer(billing_app, name="billing")
app.add_typer(analytics_app, name="analytics")
app.add_typer(users_app, name="users")
app.add_typer(questions_app, name="questions")

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
    if read_url := database_read_url():
        console.print(f"Reads that may use a replica (DATABASE_READ_URL): [bold]{read_url}[/bold]")


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


@db_app.command("inspect")
def inspect_database(
    name: Annotated[
        str, typer.Argument(help="What to inspect (as `supabase inspect db <name>`); omit to list them.")
    ] = "",
    as_json: Annotated[bool, typer.Option("--json", help="Print the rows as JSON.")] = False,
) -> None:
    """Run one of `supabase inspect db`'s queries (the CLI's own text) without the CLI: outliers, calls, ..."""
    from prep import dbhealth

    if not name:
        listing = Table("name", "shows", box=None)
        for command in dbhealth.COMMANDS.values():
            listing.add_row(command.name, command.summary)
        console.print(listing)
        return
    if name not in dbhealth.COMMANDS:
        raise typer.BadParameter(f"one of {', '.join(dbhealth.COMMANDS)}", param_hint="NAME")
    with connect() as conn:
        try:
            result = dbhealth.inspect(conn, name)
        except dbhealth.StatementStatisticsError as error:
            errors.print(f"[red]error:[/red] {error}")
            raise typer.Exit(1) from error
    if as_json:
        console.print_json(data=result.records(), default=str)
        return
    console.print(rows_display(result.columns, result.rows, console.width))


@db_app.command()
def types(
    check: Annotated[
        bool, typer.Option("--check", help="Write nothing; fail with a diff when clients/ differs from the schema.")
    ] = False,
) -> None:
    """Regenerate the client kit's types (clients/) from the migrations, on a scratch database then dropped."""
    from prep import clienttypes

    try:
        texts = clienttypes.generate(database_url())
    except (clienttypes.ClientTypesError, LocalDatabaseError, migrations.MigrationError, psycopg.Error) as error:
        errors.print(f"[red]error:[/red] {error}")
        raise typer.Exit(1) from error
    if check:
        if diff := clienttypes.drift(texts):
            console.print(diff, highlight=False, markup=False)
            errors.print("[red]clients/ differs from the migrations:[/red] run `prep db types` and commit the result.")
            raise typer.Exit(1)
        console.print("clients/ matches the migrations.")
        return
    changed = clienttypes.write(texts)
    for path in changed:
        console.print(f"wrote {path.relative_to(clienttypes.ROOT)}")
    if not changed:
        console.print("clients/ already matches the migrations.")


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
    """Stop the embedded PostgreSQL, its replica and the scratch cluster of tests and benchmarks, those that run
    (their data is kept)."""
    if os.environ.get("DATABASE_URL"):
        console.print("DATABASE_URL is set: the embedded server is not in use.")
        return
    if EmbeddedReplica().stop():
        console.print("replica stopped (`prep db replica up` starts it again)")
    if EmbeddedPostgres.scratch().stop():
        console.print("scratch cluster (tests, benchmarks) stopped")
    console.print("stopped" if EmbeddedPostgres().stop() else "not running")


def _embedded_replica() -> EmbeddedReplica:
    if os.environ.get("DATABASE_URL"):
        errors.print(
            "[red]error:[/red] DATABASE_URL is set: the local replica follows the embedded server only. Point"
            " DATABASE_READ_URL at a replica of DATABASE_URL's server instead."
        )
        raise typer.Exit(1)
    return EmbeddedReplica()


@replica_app.command("up")
def replica_up() -> None:
    """Start a streaming replica of the embedded server (a pg_basebackup -R copy under .local/replica)."""
    replica = _embedded_replica()
    try:
        replica.primary.start()
        read_url = replica.start()
    except LocalDatabaseError as error:
        errors.print(f"[red]error:[/red] {error}")
        raise typer.Exit(1) from error
    console.print(f"Replica streaming from port {replica.primary.port}: [bold]{read_url}[/bold]", highlight=False)
    console.print(
        "While it runs, `prep serve`, `prep analytics report` and `prep users export` send their replica reads to it"
        " (DATABASE_READ_URL overrides)."
    )


@replica_app.command("down")
def replica_down() -> None:
    """Stop the replica and delete its copy (`up` takes a new one); the primary keeps running."""
    replica = _embedded_replica()
    try:
        removed = replica.remove()
    except LocalDatabaseError as error:
        errors.print(f"[red]error:[/red] {error}")
        raise typer.Exit(1) from error
    console.print("replica stopped and removed" if removed else "no replica")


@replica_app.command("status")
def replica_status() -> None:
    """Whether the replica runs, and how far behind the primary it is (bytes of WAL, seconds)."""
    replica = _embedded_replica()
    state = replica.status()
    if not state.running:
        console.print(f"no replica running on port {replica.port} (`prep db replica up` starts one)")
        raise typer.Exit(1)

    def shown(value: float | int | None, unit: str) -> str:
        return "-" if value is None else f"{value:,.3f} {unit}" if isinstance(value, float) else f"{value:,} {unit}"

    table = Table("figure", "value", show_header=False)
    table.add_row("replica", replica.url())
    table.add_row("state (pg_stat_replication)", state.state or "[red]not streaming[/red]")
    table.add_row("WAL not yet replayed", shown(state.lag_bytes, "bytes"))
    table.add_row("replay lag (pg_stat_replication)", shown(state.replay_lag_seconds, "s"))
    table.add_row("age of the last replayed commit", shown(state.last_replayed_commit_age_seconds, "s"))
    console.print(table)


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
