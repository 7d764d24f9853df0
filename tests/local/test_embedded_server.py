"""The embedded server: it remembers its port, the tests stop it when they started it, and tests and benchmarks
make their databases on a scratch cluster of their own."""

from __future__ import annotations

import os
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from prep.localdb import DEFAULT_PORT, LOCAL_DIR, EmbeddedPostgres, LocalDatabaseError
from tests.support import databases


@pytest.fixture
def data_dir() -> Iterator[Path]:
    """Beside the developer's server, as its data is: pytest's tmp_path is closed to the server's system user."""
    LOCAL_DIR.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory(dir=LOCAL_DIR, prefix="test-port-") as directory:
        yield Path(directory) / "postgres"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_a_server_started_on_another_port_is_found_without_prep_db_port(
    data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    port = _free_port()
    monkeypatch.setenv("PREP_DB_PORT", str(port))
    server = EmbeddedPostgres(data_dir=data_dir)
    server.start()
    try:
        monkeypatch.delenv("PREP_DB_PORT")
        found = EmbeddedPostgres(data_dir=data_dir)
        assert found.port == port
        assert found.start() == server.url()  # already running: nothing is started

        other = _free_port()
        monkeypatch.setenv("PREP_DB_PORT", str(other))
        with pytest.raises(LocalDatabaseError, match=f"already running on port {port}, not on PREP_DB_PORT={other}"):
            EmbeddedPostgres(data_dir=data_dir).start()
    finally:
        assert server.stop()
    monkeypatch.delenv("PREP_DB_PORT")
    assert EmbeddedPostgres(data_dir=data_dir).port == DEFAULT_PORT  # stopped: nothing to find


@pytest.mark.parametrize("value", ["abc", "0", "70000", "54 322"])
def test_a_malformed_prep_db_port_is_named(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("PREP_DB_PORT", value)
    with pytest.raises(LocalDatabaseError, match="PREP_DB_PORT must be a port number"):
        EmbeddedPostgres()


def test_the_tests_stop_the_server_only_if_they_started_it(data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DATABASE_URL", raising=False)
    server = EmbeddedPostgres(data_dir=data_dir, port=_free_port())
    with databases.server_for_tests(server) as url:
        assert url == server.url()
        assert server.is_running()
    assert not server.is_running()  # started for the tests: stopped after them

    server.start()
    try:
        with databases.server_for_tests(server):
            pass
        assert server.is_running()  # already running (make run, psql): left running
    finally:
        server.stop()


def test_tests_and_benchmarks_use_a_scratch_cluster_that_never_archives(monkeypatch: pytest.MonkeyPatch) -> None:
    """The main server archives WAL for point-in-time restore once a base backup exists; a test run (2 GB of WAL)
    or a benchmark (tens of GB) on it filled the disk. They make their databases on a cluster of their own."""
    monkeypatch.delenv("PREP_DB_PORT", raising=False)
    main, scratch = EmbeddedPostgres(), EmbeddedPostgres.scratch()
    assert scratch.data_dir != main.data_dir
    assert scratch.data_dir.parent == main.data_dir.parent  # under .local, git-ignored
    assert main.settings()["archive_mode"] == "on"
    assert scratch.settings()["archive_mode"] == "off"
    assert "fsync" not in scratch.settings()  # durable: benchmarks time commits
    monkeypatch.setenv("PREP_DB_PORT", "54390")
    assert EmbeddedPostgres.scratch().port == 54392


def test_the_suite_runs_on_the_scratch_cluster(server_url: str) -> None:
    if os.environ.get("DATABASE_URL"):
        pytest.skip("DATABASE_URL names the server")
    with psycopg.connect(server_url) as conn:
        data_directory, archive_mode = conn.execute(
            "select current_setting('data_directory'), current_setting('archive_mode')"
        ).fetchone()
    assert Path(data_directory).resolve() == EmbeddedPostgres.scratch().data_dir.resolve()
    assert archive_mode == "off"
