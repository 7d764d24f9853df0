"""The restore drill on a server of its own (a fresh cluster of the embedded binaries under a temporary directory,
whatever DATABASE_URL says): write, base backup, write more, note T, write even more, restore to T, and exactly the
rows written up to T are there."""

from __future__ import annotations

import shutil
import socket
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest

from prep import pitr
from prep.localdb import EmbeddedPostgres


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture(scope="module")
def server() -> Iterator[EmbeddedPostgres]:
    # Not under pytest's temporary directory: under root the server runs as another user, and every pytest session
    # that starts (other runs on the machine included) closes /tmp/pytest-of-root to its owner again.
    root = Path(tempfile.mkdtemp(prefix="prep-pitr-test-"))
    cluster = EmbeddedPostgres(data_dir=root / "postgres", port=free_port())
    try:
        cluster.start()
        yield cluster
    finally:
        for restored in (root / "restores").glob("*"):
            if restored.is_dir():
                cluster.stop(restored)
        cluster.stop()
        shutil.rmtree(root, ignore_errors=True)


def write(url: str, first: int, last: int) -> datetime:
    """Insert rows first..last in one transaction; return the server's clock just after the commit."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("insert into drill (n) select generate_series(%s::int, %s::int)", (first, last))
        return conn.execute("select clock_timestamp()").fetchone()[0]  # type: ignore[index]


def test_a_server_without_a_base_backup_keeps_no_wal(server: EmbeddedPostgres) -> None:
    """Before the first base backup nothing could replay an archived segment: none is kept (the first test of the
    module, on a fresh cluster)."""
    assert pitr.base_backups(server) == []
    with psycopg.connect(server.url(), autocommit=True) as conn:
        conn.execute("create table before_any_backup as select generate_series(1, 10000) as n")
    pitr.archive_current_wal(server)  # returns once the archiver has taken the segment
    assert [p.name for p in server.wal_archive.iterdir() if len(p.name) == 24] == []


def test_restore_to_a_time_brings_back_exactly_the_rows_written_until_then(server: EmbeddedPostgres) -> None:
    url = server.url()
    with psycopg.connect(url, autocommit=True) as conn:
        assert conn.execute("show archive_mode").fetchone() == ("on",)
        conn.execute("create table drill (n int primary key, at timestamptz not null default clock_timestamp())")
    write(url, 1, 100)
    backup = pitr.take_base_backup(server)
    write(url, 101, 200)
    target = write(url, 201, 250)
    time.sleep(0.05)  # the next commit is stamped after the target
    write(url, 251, 400)

    restored = pitr.restore_to_time(server, target, port=free_port())
    try:
        with psycopg.connect(restored.url) as conn:
            rows = [n for (n,) in conn.execute("select n from drill order by n")]
            assert conn.execute("select pg_is_in_recovery()").fetchone() == (False,)
        assert rows == list(range(1, 251))
        assert restored.base_backup == backup
        assert restored.stopped_before is not None  # it stopped at the commit of rows 251..400
        assert restored.data_dir != server.data_dir
    finally:
        server.stop(restored.data_dir)
    # The server restored from is untouched.
    with psycopg.connect(url) as conn:
        assert conn.execute("select count(*) from drill").fetchone() == (400,)


def test_a_time_after_the_last_commit_restores_everything(server: EmbeddedPostgres) -> None:
    """No commit follows the target in the WAL: the restore marks the present itself, or recovery could not end."""
    with psycopg.connect(server.url(), autocommit=True) as conn:
        conn.execute("create table if not exists latest (n int)")
        conn.execute("insert into latest values (1)")
        target = conn.execute("select clock_timestamp()").fetchone()[0]  # type: ignore[index]
    restored = pitr.restore_to_time(server, target, port=free_port())
    try:
        with psycopg.connect(restored.url) as conn:
            assert conn.execute("select n from latest").fetchall() == [(1,)]
    finally:
        server.stop(restored.data_dir)


def test_a_time_before_every_base_backup_or_in_the_future_is_refused(server: EmbeddedPostgres) -> None:
    if not pitr.base_backups(server):
        pitr.take_base_backup(server)
    oldest = pitr.base_backups(server)[0].finished_at
    with pytest.raises(pitr.PitrError, match="no base backup finished before"):
        pitr.restore_to_time(server, oldest - timedelta(seconds=1), port=free_port())
    with pytest.raises(pitr.PitrError, match="in the future"):
        pitr.restore_to_time(server, datetime.now(UTC) + timedelta(hours=1), port=free_port())
    with pytest.raises(pitr.PitrError, match="with its zone"):
        pitr.restore_to_time(server, datetime(2026, 1, 1), port=free_port())
    assert not (server.data_dir.parent / "restores").exists() or all(
        not (path / "postmaster.pid").exists() for path in Path(server.data_dir.parent / "restores").glob("*")
    )


def test_base_backups_beyond_the_newest_two_are_pruned_with_the_wal_they_needed(server: EmbeddedPostgres) -> None:
    url = server.url()
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("create table if not exists churn (n int)")
    for _ in range(3):
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("insert into churn select generate_series(1, 1000)")
            conn.execute("select pg_switch_wal()")
        pitr.take_base_backup(server)

    kept = pitr.base_backups(server)
    assert len(kept) == pitr.KEPT_BASE_BACKUPS
    assert sorted(p.name for p in server.base_backups.iterdir() if p.is_dir()) == [b.path.name for b in kept]
    oldest_start = (kept[0].path / "backup_label").read_text().split("(file ")[1][:24]
    segments = [p.name for p in server.wal_archive.iterdir() if len(p.name) == 24]
    assert segments
    assert min(segments)[8:] == oldest_start[8:]
