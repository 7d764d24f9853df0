"""`prep db test`: the pgTAP files in supabase/tests, run as `supabase test db` runs them, without Docker.

Each run builds a scratch database on the same server from this checkout (stand-in, migrations, seed), so the
developer's database is never touched, and drops it afterwards. pgTAP is created as an extension in schema
`extensions` where the server has it (as `supabase test db` does); the embedded server has no pgTAP, so there
the plain-SQL script vendored in supabase/local/pgtap.sql is loaded into `extensions` instead. Each file runs
statement by statement on its own connection, like psql with ON_ERROR_STOP; the text its queries return is its
TAP output, which is parsed for the plan, the passing and failing tests and their diagnostics.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import psycopg

from prep import localdb, migrations, sqlsplit

TESTS_DIR = migrations.SUPABASE_DIR / "tests"
PGTAP_SCRIPT = migrations.SUPABASE_DIR / "local" / "pgtap.sql"
# What a Supabase project's postgres role has (pgTAP and other extensions live in `extensions`).
SEARCH_PATH = '"$user", public, extensions'

_PLAN = re.compile(r"^1\.\.(\d+)")
_RESULT = re.compile(r"^(not )?ok (\d+)(?: - (.*))?$")


@dataclass
class FileResult:
    path: Path
    planned: int | None = None
    passed: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    diagnostics: list[str] = field(default_factory=list)
    error: str | None = None

    @property
    def ran(self) -> int:
        return len(self.passed) + len(self.failed)

    @property
    def ok(self) -> bool:
        return self.error is None and not self.failed and self.planned is not None and self.planned == self.ran

    def summary(self) -> str:
        if self.error is not None:
            return f"error after {self.ran} tests: {self.error}"
        if self.planned is None:
            return f"no plan ({self.ran} tests ran)"
        if self.failed:
            return f"failed {len(self.failed)}/{self.planned}"
        if self.planned != self.ran:
            return f"planned {self.planned} tests but ran {self.ran}"
        return f"ok ({self.planned} tests)"


def pgtap_files(paths: list[Path] | None = None) -> list[Path]:
    """The given files, or every .sql/.pg file under supabase/tests in name order (pg_prove -r's set)."""
    if paths:
        return paths
    return sorted(p for p in TESTS_DIR.rglob("*") if p.suffix in {".sql", ".pg"} and p.is_file())


def parse_tap(lines: list[str], result: FileResult) -> None:
    for line in lines:
        if plan := _PLAN.match(line):
            result.planned = int(plan[1])
        elif outcome := _RESULT.match(line):
            description = f"{outcome[2]} - {outcome[3] or ''}".rstrip(" -")
            (result.failed if outcome[1] else result.passed).append(description)
        elif line.startswith("#"):
            result.diagnostics.append(line)


def run_file(url: str, path: Path) -> FileResult:
    """Run one pgTAP file on `url` and parse what it prints; a failing statement ends the file."""
    result = FileResult(path)
    sql = path.read_text(encoding="utf-8")
    output: list[str] = []
    search_from = 0
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"set search_path = {SEARCH_PATH}")  # type: ignore[arg-type]
        for statement in migrations.split_statements(sql):
            offset = sql.find(statement, search_from)
            search_from = max(offset, search_from)
            if not sqlsplit.without_comments(statement):
                continue
            try:
                cursor = conn.execute(statement, prepare=False)  # type: ignore[arg-type]  # a trusted test file
            except psycopg.Error as error:
                line = sql.count("\n", 0, max(offset, 0) + sqlsplit.code_start(statement)) + 1
                message = (error.diag.message_primary or str(error)).strip()
                result.error = f"line {line}: {message}"
                if conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
                    conn.execute("rollback")
                break
            if cursor.description:
                for row in cursor.fetchall():
                    if row and row[0] is not None:
                        output.extend(str(row[0]).splitlines())
    parse_tap(output, result)
    return result


def ensure_pgtap(conn: psycopg.Connection) -> str:
    """pgTAP in schema `extensions`: the server's extension if it has one, else the vendored script."""
    available = conn.execute("select exists (select from pg_available_extensions where name = 'pgtap')").fetchone()
    if available and available[0]:
        conn.execute("create extension if not exists pgtap with schema extensions")
        return "extension"
    with conn.transaction():
        conn.execute("set local search_path = extensions")
        conn.execute(PGTAP_SCRIPT.read_text(encoding="utf-8"), prepare=False)  # type: ignore[arg-type]
    return "vendored script"


def run(server_url: str, paths: list[Path] | None = None) -> tuple[str, list[FileResult]]:
    """Build a scratch database, run every test file in it; return how pgTAP was provided and the results."""
    files = pgtap_files(paths)
    with localdb.scratch_database(server_url, prefix="prep_dbtest") as url:
        with psycopg.connect(url, autocommit=True) as conn:
            migrations.build(conn)
            source = ensure_pgtap(conn)
        return source, [run_file(url, path) for path in files]
