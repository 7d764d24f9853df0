"""`prep db inspect` runs the Supabase CLI's own inspect queries, and the CLI's inspect works on this database.

The queries prep vendors (prep/inspect_sql/supabase_cli/) are compared with the text the installed CLI binary
embeds, with the same parameters; then `supabase inspect db outliers --db-url` runs against a migrated database
of the test server, which needs pg_stat_statements in `extensions` (migration 18) and preloaded (the embedded
server does that; a DATABASE_URL server may not, and only that case is skipped).
"""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Iterator

import psycopg
import pytest
from psycopg.conninfo import make_conninfo
from rich.console import Console
from typer.testing import CliRunner

from prep import dbhealth, localdb
from prep.cli import app
from prep.tables import rows_display
from tests.support import supabase_cli

MARKER = "select 1 as inspect_parity_marker"
NORMALIZED = "select $1 as inspect_parity_marker"  # as pg_stat_statements records it


@pytest.fixture(scope="module")
def cli_bundle() -> bytes:
    return supabase_cli.inspect_bundle(supabase_cli.platform_binary().read_bytes())


@pytest.fixture(scope="module")
def statistics_url(database_url: str) -> str:
    with psycopg.connect(database_url, autocommit=True) as conn:
        if problem := dbhealth.statement_statistics_problem(conn):
            pytest.skip(f"this server cannot give statement statistics: {problem}")
    return database_url


def test_the_vendored_queries_are_the_pinned_cli_version() -> None:
    assert supabase_cli.pinned_version() == dbhealth.SUPABASE_CLI_VERSION
    vendored = {path.stem for path in (dbhealth.SQL_DIR / "supabase_cli").glob("*.sql")}
    assert vendored == set(dbhealth.COMMANDS)


@pytest.mark.parametrize("name", list(dbhealth.COMMANDS))
def test_each_vendored_query_is_the_clis_text_with_its_parameters(cli_bundle: bytes, name: str) -> None:
    assert dbhealth.query_text(name) == supabase_cli.embedded_inspect_sql(cli_bundle, name)
    command = dbhealth.COMMANDS[name]
    expected = ["jm(Fm)"] * command.excludes_schemas + ["e.conn.database"] * command.names_database
    assert supabase_cli.embedded_inspect_parameters(cli_bundle, name) == f"[{','.join(expected)}]"


def test_the_excluded_schemas_and_their_patterns_are_the_clis(cli_bundle: bytes) -> None:
    assert supabase_cli.embedded_excluded_schemas(cli_bundle) == dbhealth.EXCLUDED_SCHEMAS
    assert dbhealth.like_patterns(["pg_*", "auth", "a\\b"]) == ["pg\\_%", "auth", "a\\\\b"]


@pytest.fixture
def probe_url(statistics_url: str) -> Iterator[str]:
    """A role of its own: `outliers` shows the connecting role's statements only, so these are all it shows."""
    role = f"inspect_probe_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(statistics_url, autocommit=True) as conn:
        # Supabase's API roles and postgres may use schema `extensions`; so may the probe.
        conn.execute(f"create role {role} login password 'probe'; grant usage on schema extensions to {role}")  # type: ignore[arg-type]
        try:
            yield make_conninfo(statistics_url, user=role, password="probe")
        finally:
            conn.execute(f"revoke usage on schema extensions from {role}; drop role {role}")  # type: ignore[arg-type]


def test_the_cli_inspects_this_database_as_prep_does(probe_url: str) -> None:
    cli = supabase_cli.installed_cli()
    with psycopg.connect(probe_url, autocommit=True) as conn:
        for _ in range(3):
            conn.execute(MARKER)
        prep_outliers = dbhealth.inspect(conn, "outliers").records()
    assert [(row["query"], row["ncalls"]) for row in prep_outliers if "marker" in row["query"]] == [(NORMALIZED, "3")]

    result = subprocess.run(
        [str(cli), "inspect", "db", "outliers", "--db-url", probe_url, "--output-format", "json"],
        capture_output=True, text=True, check=False, timeout=120, cwd=supabase_cli.ROOT,
    )  # fmt: skip
    assert result.returncode == 0, f"supabase inspect db outliers:\n{result.stdout}\n{result.stderr}"
    assert NORMALIZED in result.stdout


def test_prep_db_inspect_prints_every_row_whole(probe_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", probe_url)
    with psycopg.connect(probe_url, autocommit=True) as conn:
        conn.execute(MARKER)
    result = CliRunner().invoke(app, ["db", "inspect", "outliers"])
    assert result.exit_code == 0, result.output
    assert NORMALIZED in result.output
    assert "…" not in result.output  # rows too wide for the terminal are printed as blocks, never cut

    listing = CliRunner().invoke(app, ["db", "inspect"])
    assert all(name in listing.output for name in dbhealth.COMMANDS)
    unknown = CliRunner().invoke(app, ["db", "inspect", "everything"])
    assert unknown.exit_code == 2
    assert "one of outliers" in unknown.output


@pytest.fixture
def bare_db(server_url: str) -> Iterator[str]:
    with localdb.scratch_database(server_url) as url:
        yield url


def test_without_statement_statistics_prep_says_what_to_do(bare_db: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", bare_db)
    runner = CliRunner()
    missing = runner.invoke(app, ["db", "inspect", "outliers"])
    assert missing.exit_code == 1
    assert "apply migration 18" in " ".join(missing.output.split())
    assert "Traceback" not in missing.output

    with psycopg.connect(bare_db, autocommit=True) as conn:
        conn.execute("create extension pg_stat_statements with schema public")
    elsewhere = runner.invoke(app, ["db", "inspect", "calls"])
    assert elsewhere.exit_code == 1
    assert "set schema extensions" in " ".join(elsewhere.output.split())
    # Queries that do not read statement statistics still answer.
    assert runner.invoke(app, ["db", "inspect", "locks"]).exit_code == 0


def test_the_embedded_server_preloads_statement_statistics() -> None:
    server = localdb.EmbeddedPostgres.scratch()
    if not server.is_running():
        pytest.skip("the embedded server is not in use (DATABASE_URL)")
    with psycopg.connect(server.url()) as conn:
        preloaded = conn.execute("show shared_preload_libraries").fetchone()
    assert preloaded is not None
    assert "pg_stat_statements" in preloaded[0]


def test_rows_too_wide_for_the_terminal_become_blocks_and_nothing_is_cut() -> None:
    console = Console(width=40, record=True)
    long = "select " + "x, " * 30 + "y from t"
    console.print(rows_display(["query", "calls", "score"], [(long, 3, None)], console.width))
    text = console.export_text()
    assert "…" not in text
    assert "".join(text.split()).count("".join(long.split())) == 1  # folded over lines, whole
    assert "score  —" in text  # a missing value is a dash, never "None"

    narrow = Console(width=80, record=True)
    narrow.print(rows_display(["a", "b"], [(1, 2)], narrow.width))
    assert "┃ a ┃ b ┃" in narrow.export_text()
