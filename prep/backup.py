"""`prep db backup` and `prep db restore`: logical backups of any database, point-in-time restore of the embedded one.

Logical backups (functions/backup/logical.py) work on DATABASE_URL's database (a Supabase project included) or the
embedded server's; point-in-time restore (prep/pitr.py) only on the embedded server, whose WAL this checkout
archives. Restoring never overwrites data silently: a logical restore needs an empty database (or --force, which
first backs the target up), and a point-in-time restore starts a separate server unless --replace is confirmed,
which keeps the old data directory.
"""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
from datetime import UTC, datetime
from pathlib import Path

import psycopg
from rich.console import Console

from functions.backup import logical
from functions.backup.offsite import download_backup, s3_client
from prep import migrations, pitr
from prep.localdb import LOCAL_DIR, EmbeddedPostgres, database_url

BACKUPS_DIR = LOCAL_DIR / "backups"


def default_backup_path(label: str = "prep-backup") -> Path:
    return BACKUPS_DIR / f"{label}-{datetime.now(UTC):%Y%m%dT%H%M%SZ}.tar"


def logical_backup(out: Path | None, console: Console) -> Path:
    url = database_url()
    path = out or default_backup_path()
    manifest = logical.take_backup(url, path)
    size = path.stat().st_size
    console.print(
        f"Backed up {manifest.source} ({len(manifest.migrations)} migrations, latest {manifest.latest_migration})"
        f" to {path} ({size / 1e6:.1f} MB)."
    )
    return path


def base_backup(console: Console) -> pitr.BaseBackup:
    server = _embedded_only("a base backup")
    backup = pitr.take_base_backup(server)
    console.print(f"Base backup {backup.path} (finished {backup.finished_at:%Y-%m-%d %H:%M:%S} UTC).")
    return backup


def ensure_base_backup(console: Console) -> None:
    """At `prep db up`: a base backup of the embedded server when it has none or only an old one (a day), so that
    point-in-time restore works from now, replays stay short and the WAL archive is pruned."""
    if os.environ.get("DATABASE_URL"):
        return
    server = EmbeddedPostgres()
    existing = pitr.base_backups(server)
    if existing and existing[-1].finished_at > datetime.now(UTC) - pitr.BASE_BACKUP_MAX_AGE:
        return
    try:
        backup = pitr.take_base_backup(server)
    except pitr.PitrError as error:
        console.print(f"[yellow]warning:[/yellow] no base backup for point-in-time restore: {error}")
        return
    console.print(f"Base backup for point-in-time restore: {backup.path}")


def restore_logical(source: str, *, force: bool, console: Console) -> logical.RestoreReport:
    """Restore a backup file (or s3://bucket/key) onto the database `prep` uses; it must be empty unless forced."""
    url = database_url()
    with tempfile.TemporaryDirectory(prefix="prep-restore-") as scratch:
        if source.startswith("s3://"):
            path = download_backup(source, Path(scratch) / "backup.tar", s3_client(os.environ.get("AWS_REGION")))
            console.print(f"Downloaded {source}.")
        else:
            path = Path(source)
            if not path.is_file():
                raise logical.BackupError(f"no backup file at {path}")
        with logical.opened(path):
            pass  # an unreadable or foreign file is refused before the target is touched
        with psycopg.connect(url, autocommit=True, connect_timeout=10) as conn:
            found = logical.app_objects(conn)
            supabase = migrations.is_supabase_project(conn)
        if found and not force:
            raise logical.BackupError(
                f"{logical.describe(url)} is not empty ({', '.join(found)}); nothing was restored. Restore onto an"
                " empty database (a new Supabase project), or pass --force to back this one up and replace it."
            )
        if found:
            if supabase:
                raise logical.BackupError("--force does not empty a Supabase project: restore onto a new project")
            safety = default_backup_path("before-restore")
            logical.take_backup(url, safety)
            console.print(f"The database's current content is backed up to {safety}.")
            with psycopg.connect(url, autocommit=True, connect_timeout=10) as conn:
                migrations.drop_everything(conn)
        report = logical.restore_backup(path, url, prepare=migrations.apply_stand_in)
    manifest = report.manifest
    console.print(
        f"Restored the backup of {manifest.source} taken {manifest.created_at}: {len(manifest.migrations)}"
        f" migrations (latest {manifest.latest_migration}), the data of {report.tables} tables."
    )
    if report.skipped_tables:
        console.print(
            "[yellow]Not restored[/yellow] (Supabase tables this server does not have): "
            + ", ".join(report.skipped_tables)
        )
    if report.schema_differences:
        console.print(
            f"[yellow]The restored schema differs from the backup's[/yellow] ({len(report.schema_differences)} lines):"
        )
        for line in report.schema_differences[:40]:
            console.print(f"  {line}", markup=False, highlight=False)
    else:
        console.print("The restored schema is identical to the backup's.")
    return report


def restore_to_time(target_time: datetime, *, port: int | None, console: Console) -> pitr.RestoredServer:
    server = _embedded_only("point-in-time restore")
    restored = pitr.restore_to_time(server, target_time, port=port or _free_port())
    console.print(
        f"Restored base backup {restored.base_backup.path.name} and the archived WAL up to"
        f" {target_time.isoformat()} into {restored.data_dir}.\n"
        f"  last transaction replayed: {restored.last_transaction or 'none after the base backup'}\n"
        f"  first transaction left out: {restored.stopped_before or 'none (the archive ends before the target)'}\n"
        f"Running on {restored.url}  (stop it: pg_ctl stop -D {restored.data_dir})"
    )
    return restored


def replace_local_data(restored: pitr.RestoredServer, console: Console) -> Path:
    """Make the restored copy the embedded server's data; the old data directory is kept beside it."""
    server = EmbeddedPostgres()
    server.stop(restored.data_dir)
    server.stop()
    kept = server.data_dir.with_name(f"{server.data_dir.name}.before-restore-{datetime.now(UTC):%Y%m%dT%H%M%SZ}")
    server.data_dir.rename(kept)
    shutil.move(restored.data_dir, server.data_dir)
    server.start()
    console.print(f"The embedded server now runs the restored data; the previous data directory is {kept}.")
    backup = pitr.take_base_backup(server)  # the restored server continues on a new timeline
    console.print(f"New base backup {backup.path}.")
    return kept


def _embedded_only(what: str) -> EmbeddedPostgres:
    if os.environ.get("DATABASE_URL"):
        raise pitr.PitrError(
            f"{what} is for the embedded server; a Supabase project has its own (docs/operations.md, "
            "'Backups and restore'). Unset DATABASE_URL to use the embedded server."
        )
    server = EmbeddedPostgres()
    server.start()
    return server


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])
