"""Logical backup and restore (functions/backup/logical.py): a round trip reproduces the migration history, every
row and the schema; a non-empty target, a foreign file and a failing restore change nothing."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import psycopg
import pytest

from functions.backup import logical
from prep import migrations
from tests.backup.conftest import content


@pytest.fixture(scope="module")
def backup_file(source_url: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("backup") / "backup.tar"
    logical.take_backup(source_url, path)
    return path


def test_round_trip_reproduces_history_rows_and_schema(backup_file: Path, source_url: str, empty_url: str) -> None:
    with logical.opened(backup_file) as (manifest, root):
        assert [m["version"] for m in manifest.migrations] == [m.version for m in migrations.local_migrations()]
        schema_sql = (root / "schema.sql").read_text()
    # Supabase's schemas are left out of the schema dump, as `supabase db dump` leaves them out.
    assert 'CREATE TABLE "public"."users"' in schema_sql
    assert 'CREATE TABLE "auth"' not in schema_sql
    assert 'CREATE SCHEMA "supabase_migrations"' not in schema_sql

    report = logical.restore_backup(backup_file, empty_url, prepare=migrations.apply_stand_in)

    assert report.schema_differences == [], "\n".join(report.schema_differences)
    assert report.skipped_tables == []
    assert content(empty_url) == content(source_url)
    # Partitions made at run time came back with their rows: months before the migrations' and far ahead of them.
    with psycopg.connect(empty_url) as conn:
        for partition in ("archive.responses_p202501", "private.responses_p203105"):
            assert conn.execute(f"select count(*) from {partition}").fetchone()[0] > 0, partition  # type: ignore[arg-type]
        assert conn.execute("select stripe_price_id from public.plans where code = 'weekly'").fetchone() == (
            "price_backup_test",
        )
        # The trigger on auth.users (a migration's, outside our schemas) came back with the replayed history.
        conn.execute("insert into auth.users (id, email) values (gen_random_uuid(), 'after-restore@example.test')")
        assert conn.execute(
            "select count(*) from public.users where email = 'after-restore@example.test'"
        ).fetchone() == (1,)
        conn.rollback()
        assert not list(migrations.changed_since_applied(conn))


def test_refuses_a_database_that_is_not_empty(backup_file: Path, source_url: str) -> None:
    before = content(source_url)
    with pytest.raises(logical.BackupError, match="is not empty"):
        logical.restore_backup(backup_file, source_url, prepare=migrations.apply_stand_in)
    assert content(source_url) == before


def test_refuses_a_file_that_is_not_a_backup(tmp_path: Path, empty_url: str) -> None:
    not_tar = tmp_path / "notes.tar"
    not_tar.write_text("hello")
    foreign = tmp_path / "foreign.tar"
    with tarfile.open(foreign, "w") as archive:
        info = tarfile.TarInfo("../../etc/evil")
        info.size = 1
        archive.addfile(info, io.BytesIO(b"x"))
    for path in (not_tar, foreign, tmp_path / "missing.tar"):
        with pytest.raises(logical.BackupError):
            logical.restore_backup(path, empty_url)
    with psycopg.connect(empty_url) as conn:
        assert logical.app_objects(conn) == []


def test_a_failing_restore_leaves_the_target_as_it_was(backup_file: Path, tmp_path: Path, empty_url: str) -> None:
    broken = tmp_path / "broken.tar"
    with tarfile.open(backup_file) as source, tarfile.open(broken, "w") as target:
        for member in source.getmembers():
            data = source.extractfile(member).read()  # type: ignore[union-attr]
            if member.name == "manifest.json":
                manifest = json.loads(data)
                manifest["migrations"][-1]["statements"].append("select 1 / 0")
                data = json.dumps(manifest).encode()
            member.size = len(data)
            target.addfile(member, io.BytesIO(data))

    with pytest.raises(logical.BackupError, match="division by zero"):
        logical.restore_backup(broken, empty_url, prepare=migrations.apply_stand_in)

    with psycopg.connect(empty_url) as conn:
        assert logical.app_objects(conn) == []
        assert conn.execute("select to_regclass('supabase_migrations.schema_migrations')").fetchone() == (None,)


@pytest.mark.parametrize(("server_version", "kept"), [(150018, False), (170006, True)])
def test_a_setting_pg_dump_17_writes_is_left_out_for_an_older_server(server_version: int, kept: bool) -> None:
    header = b"SET statement_timeout = 0;\nSET transaction_timeout = 0;\nSET lock_timeout = 0;\n"
    data = b"".join(b"COPY public.t (n) FROM stdin;\n%d\n\\.\n" % n for n in range(100))
    sink = io.BytesIO()
    sink.close = lambda: None  # keep what was written readable after the copy closes it
    logical._copy_for_server(io.BytesIO(header + data), sink, server_version)
    expected = header if kept else header.replace(b"SET transaction_timeout = 0;\n", b"")
    assert sink.getvalue() == expected + data
