"""`prep db test`: the pgTAP files in supabase/tests pass, and a failing one is reported as failing.

The embedded server has no pgTAP extension, so these also prove the vendored script loads and that its
functions stay callable by authenticated and anon after migration 14 (the files assert as those roles).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from prep import dbtest
from prep.cli import app

FAILING = """begin;
select plan(3);
select ok(true, 'this one passes');
set local role authenticated;
set local request.jwt.claims = '{"sub": "a0000000-0000-4000-8000-00000000000a", "role": "authenticated"}';
select is((select count(*) from public.plans where not is_active)::int, 1, 'a deliberately wrong expectation');
select throws_ok($$ select 1 $$, '42501', null, 'a statement that does not fail');
select * from finish();
rollback;
"""

SHORT = """begin;
select plan(2);
select ok(true, 'only one of two planned tests runs');
select * from finish();
rollback;
"""

BROKEN = """begin;
select plan(2);
select ok(true, 'runs before the error');
select * from public.no_such_table;
select ok(true, 'never runs');
select * from finish();
rollback;
"""


def test_every_pgtap_file_passes(server_url: str) -> None:
    source, results = dbtest.run(server_url)
    assert source in {"extension", "vendored script"}
    assert {r.path.name for r in results} >= {
        "rls_sessions_and_responses.sql",
        "rls_billing.sql",
        "rls_plans_and_users.sql",
        "rls_progress_and_analytics.sql",
        "service_functions.sql",
    }
    report = {r.path.name: (r.summary(), r.failed, r.diagnostics, r.error) for r in results if not r.ok}
    assert report == {}
    assert sum(r.ran for r in results) >= 60


def test_failing_short_and_broken_files_are_reported_as_failures(server_url: str, tmp_path: Path) -> None:
    files = []
    for name, text in (("failing.sql", FAILING), ("short.sql", SHORT), ("broken.sql", BROKEN)):
        (tmp_path / name).write_text(text)
        files.append(tmp_path / name)
    _, (failing, short, broken) = dbtest.run(server_url, files)

    assert not failing.ok
    assert failing.planned == 3
    assert failing.passed == ["1 - this one passes"]
    assert failing.failed == ["2 - a deliberately wrong expectation", "3 - a statement that does not fail"]
    assert any("Failed test 2" in line for line in failing.diagnostics)

    assert not short.ok
    assert short.failed == []
    assert (short.planned, short.ran) == (2, 1)
    assert "planned 2 tests but ran 1" in short.summary()

    assert not broken.ok
    assert broken.ran == 1
    assert broken.error is not None
    assert 'relation "public.no_such_table" does not exist' in broken.error
    assert broken.error.startswith("line 4:")


def test_prep_db_test_exits_non_zero_on_a_failing_file(
    server_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DATABASE_URL", server_url)
    (tmp_path / "failing.sql").write_text(FAILING)
    result = CliRunner().invoke(app, ["db", "test", str(tmp_path / "failing.sql")])
    assert result.exit_code == 1, result.output
    assert "not ok 2 - a deliberately wrong expectation" in result.output
    assert "FAIL" in result.output
