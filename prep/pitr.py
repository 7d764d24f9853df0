"""Point-in-time restore of the embedded server: base backups plus the WAL archive, replayed up to a time.

The server archives every finished WAL segment into `.local/wal-archive` (EmbeddedPostgres.settings). A base
backup (`pg_basebackup`, plain format, with the WAL it needs) goes to `.local/base-backups/<label>/`, with
`<label>.json` beside it saying when it finished. Restoring to a time T copies the newest base backup finished
before T into a NEW data directory (`.local/restores/<label>/`), starts a server there in recovery
(`restore_command` reading the archive, `recovery_target_time = T`, promoted when reached, not archiving), and
reports what it recovered to. The developer's server and its data are not touched: the CLI swaps directories only
when asked, keeping the old one.
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg

from prep.localdb import EmbeddedPostgres, LocalDatabaseError, chown_tree, owned_directory

BASE_BACKUP_INFO = "prep-base-backup"
KEPT_BASE_BACKUPS = 2
# `prep db up` takes a new base backup when the newest is older than this, so replays stay short and pruning runs.
BASE_BACKUP_MAX_AGE = timedelta(days=1)
_START_SEGMENT = re.compile(r"^START WAL LOCATION: .* \(file ([0-9A-F]{24})\)$", re.MULTILINE)
_RECOVERY_STOP = re.compile(r"recovery stopping before (?:commit|abort) of transaction \d+, time (.+)$")
_LAST_TRANSACTION = re.compile(r"last completed transaction was at log time (.+)$")
_FATAL = re.compile(r"(FATAL|PANIC):\s+(.*)$")


class PitrError(LocalDatabaseError):
    """A base backup or a point-in-time restore failed; the running server is untouched."""


@dataclass(frozen=True)
class BaseBackup:
    path: Path
    finished_at: datetime


@dataclass(frozen=True)
class RestoredServer:
    data_dir: Path
    port: int
    base_backup: BaseBackup
    target_time: datetime
    stopped_before: str | None  # the first transaction not replayed (its commit time), from the server's log
    last_transaction: str | None  # the last transaction replayed (its commit time)
    log_file: Path

    @property
    def url(self) -> str:
        return EmbeddedPostgres(data_dir=self.data_dir, port=self.port).url()


def _label(at: datetime) -> str:
    return at.strftime("%Y%m%dT%H%M%S%fZ")


def base_backups(server: EmbeddedPostgres) -> list[BaseBackup]:
    """Finished base backups, oldest first (a backup without its info file did not finish)."""
    found = []
    for info in sorted(server.base_backups.glob("*.json")):
        data = json.loads(info.read_text(encoding="utf-8"))
        path = info.with_suffix("")
        if data.get("kind") == BASE_BACKUP_INFO and path.is_dir():
            found.append(BaseBackup(path, datetime.fromisoformat(data["finished_at"])))
    return found


def take_base_backup(server: EmbeddedPostgres) -> BaseBackup:
    """A base backup of the running server (fast checkpoint, streaming the WAL it needs into the copy)."""
    if not server.is_running():
        raise PitrError("the embedded server is not running: `prep db up` starts it")
    with psycopg.connect(server.url(), connect_timeout=5) as conn:
        if conn.execute("show archive_mode").fetchone() != ("on",):  # type: ignore[comparison-overlap]
            raise PitrError(
                "WAL archiving is off on the running server (started by an older prep): restart it "
                "(`prep db stop && prep db up`) so that base backups can be replayed to a point in time"
            )
    owned_directory(server.base_backups)
    started = datetime.now(UTC)
    target = server.base_backups / _label(started)
    result = server.run_tool(
        "pg_basebackup",
        f"--dbname={server.url()}",
        f"--pgdata={target}",
        "--format=plain",
        "--wal-method=stream",
        "--checkpoint=fast",
        "--no-sync",
    )
    if result.returncode != 0:
        shutil.rmtree(target, ignore_errors=True)
        raise PitrError(f"pg_basebackup failed: {result.stderr.strip()}")
    finished = datetime.now(UTC)
    info = {"kind": BASE_BACKUP_INFO, "started_at": started.isoformat(), "finished_at": finished.isoformat()}
    target.with_suffix(".json").write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
    prune(server)
    return BaseBackup(target, finished)


def prune(server: EmbeddedPostgres, keep: int = KEPT_BASE_BACKUPS) -> None:
    """Keep the `keep` newest base backups and the archived WAL they need; delete the rest.

    Every write is archived (creating a scratch database from a template copies it into the WAL), so without this
    the archive grows with every test run; restores reach back to the oldest base backup kept.
    """
    backups = base_backups(server)
    for old in backups[:-keep]:
        shutil.rmtree(old.path)
        old.path.with_suffix(".json").unlink()
    kept = backups[-keep:]
    if not kept:
        return
    label = (kept[0].path / "backup_label").read_text(encoding="utf-8")
    match = _START_SEGMENT.search(label)
    if match:  # pg_archivecleanup leaves timeline history files, which later restores need
        server.run_tool("pg_archivecleanup", str(server.wal_archive), match[1])


def archive_current_wal(server: EmbeddedPostgres, timeout: float = 30) -> None:
    """Close the current WAL segment and wait until the archive has it: writes up to now become restorable."""
    with psycopg.connect(server.url(), autocommit=True, connect_timeout=5) as conn:
        # A commit stamped now: recovery to a time T stops at the first commit after T, and ends in an error if the
        # WAL runs out before one (a target after the last write).
        conn.execute("select pg_current_xact_id()")
        # With nothing written since the last switch this names the segment already closed, which is fine.
        segment = str(conn.execute("select pg_walfile_name(pg_switch_wal())").fetchone()[0])  # type: ignore[index]
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            archived = conn.execute("select last_archived_wal, last_failed_wal from pg_stat_archiver").fetchone()
            name = archived[0] if archived else None
            if name is not None and len(name) == len(segment) and name[8:] >= segment[8:]:
                return
            time.sleep(0.1)
        raise PitrError(
            f"WAL segment {segment} was not archived within {timeout:.0f} s (last failed: {archived and archived[1]});"
            f" see {server.log_file}"
        )


def restore_to_time(
    server: EmbeddedPostgres, target_time: datetime, *, port: int, timeout: float = 600
) -> RestoredServer:
    """Start a copy of the server as it was at `target_time`, on `port`, in a new data directory."""
    if target_time.tzinfo is None:
        raise PitrError("give the time with its zone, e.g. 2026-12-04T17:30:00Z")
    if target_time > datetime.now(UTC):
        raise PitrError(f"{target_time.isoformat()} is in the future")
    candidates = [backup for backup in base_backups(server) if backup.finished_at < target_time]
    if not candidates:
        oldest = base_backups(server)
        when = f"the oldest finished at {oldest[0].finished_at.isoformat()}" if oldest else "there is none"
        raise PitrError(f"no base backup finished before {target_time.isoformat()} ({when}; `prep db backup --base`)")
    base = candidates[-1]
    if server.is_running():
        archive_current_wal(server)
    restores = owned_directory(server.data_dir.parent / "restores")
    data_dir = restores / _label(datetime.now(UTC))
    shutil.copytree(base.path, data_dir, symlinks=True)
    chown_tree(data_dir)
    data_dir.chmod(0o700)
    (data_dir / "recovery.signal").touch()
    log_file = data_dir.with_suffix(".log")
    archive = shlex.quote(str(server.wal_archive))
    settings = {
        **{name: value for name, value in server.settings().items() if not name.startswith("archive_")},
        "port": str(port),
        "archive_mode": "off",  # the copy must not write into the archive it is replaying
        "restore_command": f"cp {archive}/%f %p",
        "recovery_target_time": target_time.isoformat(sep=" "),
        "recovery_target_action": "promote",
    }
    started = server.pg_ctl_start(data_dir, log_file, settings)
    copy = EmbeddedPostgres(data_dir=data_dir, port=port)
    deadline = time.monotonic() + timeout
    while not _promoted(copy):
        exited = not (data_dir / "postmaster.pid").exists()
        if exited or started.returncode != 0 or time.monotonic() > deadline:
            server.stop(data_dir)
            log = log_file.read_text(encoding="utf-8", errors="replace") if log_file.exists() else ""
            fatal = [match[2] for line in log.splitlines() if (match := _FATAL.search(line))]
            reason = fatal[-1] if exited and fatal else started.stderr.strip() or f"not promoted within {timeout:.0f} s"
            if "before configured recovery target" in reason:
                reason += " (the archive holds no commit after that time: start the server so the restore can mark now)"
            raise PitrError(f"the restore did not reach {target_time.isoformat()}: {reason} (see {log_file})")
        time.sleep(0.2)
    log = log_file.read_text(encoding="utf-8", errors="replace")
    stopped = [match[1] for line in log.splitlines() if (match := _RECOVERY_STOP.search(line))]
    last = [match[1] for line in log.splitlines() if (match := _LAST_TRANSACTION.search(line))]
    return RestoredServer(
        data_dir=data_dir,
        port=port,
        base_backup=base,
        target_time=target_time,
        stopped_before=stopped[-1] if stopped else None,
        last_transaction=last[-1] if last else None,
        log_file=log_file,
    )


def _promoted(server: EmbeddedPostgres) -> bool:
    try:
        with psycopg.connect(server.url(), connect_timeout=2) as conn:
            return conn.execute("select not pg_is_in_recovery()").fetchone() == (True,)
    except psycopg.OperationalError:
        return False
