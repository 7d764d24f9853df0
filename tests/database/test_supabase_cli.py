"""prep and the real Supabase CLI read each other's migration history.

The CLI is the npm devDependency package.json pins (node_modules/.bin/supabase, installed with `npm ci` when
missing, as scripts/package.py does for osls); without node/npm the tests are skipped. `db push --db-url` and
`migration list --db-url` need no Docker.
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from prep import localdb, migrations
from tests.support import databases
from tests.support import supabase_cli as cli_support

ROOT = Path(__file__).resolve().parents[2]
_ROW = re.compile(r"^\s*`?(?P<local>\d{14})?`?\s*\|\s*`?(?P<remote>\d{14})?`?\s*\|")

# Everything the CLI's splitter treats specially; the CLI runs it, so it must be valid SQL.
EDGE_CASES = """-- leading comment; with a semicolon
create table edge_t (id int, note text default 'a;b', "we;ird" int);
insert into edge_t (id, note) values (1, 'it''s; fine'), (2, $$dollar; text$$), (3, $tag$ x; $$ y; $tag$);
/* block; /* nested; */ still; */ select 1;
create function edge_f(a int) returns int language sql
begin atomic
  select a + 1;
  select a + 2;
end;
create view edge_v as select (select count(*) from edge_t where note <> ';') as n   ;
select 1 -- a comment after the code, same line
;
-- a comment after the last statement; with a semicolon
-- and another line
"""


@pytest.fixture(scope="module")
def supabase_cli() -> Path:
    return cli_support.installed_cli()


def run_cli(cli: Path, *args: str, workdir: Path = ROOT) -> str:
    result = subprocess.run(
        [str(cli), *args, "--workdir", str(workdir)], capture_output=True, text=True, check=False, timeout=300
    )
    assert result.returncode == 0, f"supabase {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}"
    return result.stdout + result.stderr


@pytest.fixture
def fresh_db(server_url: str) -> Iterator[str]:
    with localdb.scratch_database(server_url) as url:
        yield url


def recorded(url: str) -> dict[str, list[str]]:
    with psycopg.connect(url) as conn:
        rows = conn.execute("select version, statements from supabase_migrations.schema_migrations").fetchall()
    return dict(rows)


def test_after_a_cli_push_prep_sees_every_migration_applied_and_unedited(supabase_cli: Path, fresh_db: str) -> None:
    with psycopg.connect(fresh_db, autocommit=True) as conn:
        migrations.apply_stand_in(conn)  # what a Supabase project has before our migrations
    run_cli(supabase_cli, "db", "push", "--db-url", fresh_db, "--include-all", "--yes")

    history = recorded(fresh_db)
    local = migrations.local_migrations()
    assert sorted(history) == [m.version for m in local]
    for migration in local:  # prep would have recorded exactly these statements
        assert history[migration.version] == migrations.split_statements(migration.path.read_text()), migration.name
    with psycopg.connect(fresh_db, autocommit=True) as conn:
        states = migrations.status(conn)
        assert all(s.local and s.applied and not s.changed for s in states)
        assert migrations.changed_since_applied(conn) == []
        assert list(migrations.migrate(conn)) == []


def test_after_prep_migrates_the_cli_lists_every_migration_applied_and_pushes_nothing(
    supabase_cli: Path, fresh_db: str
) -> None:
    databases.build_schema(fresh_db, seed=False)
    listed = run_cli(supabase_cli, "migration", "list", "--db-url", fresh_db)
    rows = [match for line in listed.splitlines() if (match := _ROW.match(line))]
    assert [(row["local"], row["remote"]) for row in rows] == [
        (m.version, m.version) for m in migrations.local_migrations()
    ]

    pushed = run_cli(supabase_cli, "db", "push", "--db-url", fresh_db, "--include-all", "--yes")
    assert "up to date" in pushed
    assert "Applying migration" not in pushed


def test_prep_splits_tricky_sql_exactly_as_the_cli_records_it(
    supabase_cli: Path, fresh_db: str, tmp_path: Path
) -> None:
    (tmp_path / "supabase" / "migrations").mkdir(parents=True)
    (tmp_path / "supabase" / "migrations" / "20990101000000_edge.sql").write_text(EDGE_CASES)
    run_cli(supabase_cli, "db", "push", "--db-url", fresh_db, "--yes", workdir=tmp_path)
    stored = recorded(fresh_db)["20990101000000"]
    assert stored == migrations.split_statements(EDGE_CASES)
    assert stored[-1].startswith("-- a comment after the last statement")  # the CLI records trailing comments
    assert len(stored) == 7


# What `supabase db push` (3.1.0) recorded for EDGE_CASES, so the splitter is checked without node too.
EDGE_CASES_AS_RECORDED = [
    "-- leading comment; with a semicolon\ncreate table edge_t (id int, note text default 'a;b', \"we;ird\" int)",
    "insert into edge_t (id, note) values (1, 'it''s; fine'), (2, $$dollar; text$$), (3, $tag$ x; $$ y; $tag$)",
    "/* block; /* nested; */ still; */ select 1",
    "create function edge_f(a int) returns int language sql\nbegin atomic\n  select a + 1;\n  select a + 2;\nend",
    "create view edge_v as select (select count(*) from edge_t where note <> ';') as n",
    "select 1 -- a comment after the code, same line",
    "-- a comment after the last statement; with a semicolon\n-- and another line",
]


def test_the_splitter_gives_what_the_cli_recorded() -> None:
    assert migrations.split_statements(EDGE_CASES) == EDGE_CASES_AS_RECORDED
    # What an edit is judged on: the code, without comments or `;` (older prep kept the `;`).
    assert migrations.comparable([*EDGE_CASES_AS_RECORDED[:2], "select 1;"]) == [
        "create table edge_t (id int, note text default 'a;b', \"we;ird\" int)",
        EDGE_CASES_AS_RECORDED[1],
        "select 1",
    ]
    assert migrations.comparable(EDGE_CASES_AS_RECORDED)[2:] == [
        "select 1",
        EDGE_CASES_AS_RECORDED[3],
        EDGE_CASES_AS_RECORDED[4],
        "select 1",
    ]
