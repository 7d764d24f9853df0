"""The client kit (clients/) is what postgres-meta generates from the migrations, and it tells the truth.

- The committed TypeScript types and Python models equal a fresh generation from the migrated schema (CI fails
  with a diff when a migration changes what clients see and `prep db types` was not run), and a schema change
  does show up in that diff.
- The TypeScript compiles under `tsc --strict`, together with every ```ts example of docs/client.md written
  against supabase-js; a wrong field or a missing null check in client code is a compile error.
- The Python models parse what the RPCs return to a user.

The generator, tsc and supabase-js are npm devDependencies (package.json; `npm ci` when missing, as the Supabase
CLI tests do); without node the tests are skipped.
"""

from __future__ import annotations

import ast
import importlib.util
import re
import shutil
import subprocess
import sys
import uuid
from pathlib import Path
from types import ModuleType

import psycopg
import pytest
from psycopg.types.json import Jsonb

from prep import clienttypes, localdb
from shared.db.rls import acting_as
from tests.support.identities import give_paid_plan, sign_up, user_claims

ROOT = clienttypes.ROOT
TSC = ROOT / "node_modules" / ".bin" / "tsc"
CLIENT_DOC = ROOT / "docs" / "client.md"
_TS_BLOCK = re.compile(r"^```ts\n(.*?)^```", re.MULTILINE | re.DOTALL)
_PY_BLOCK = re.compile(r"^```python\n(.*?)^```", re.MULTILINE | re.DOTALL)

# What every example in docs/client.md may use: the typed client, the kit's helper types, a user's ids.
EXAMPLE_PRELUDE = """import { createClient } from "@supabase/supabase-js"
import type { Database, Tables, TablesInsert, CompositeTypes } from "KIT"
declare const SUPABASE_URL: string
declare const SUPABASE_ANON_KEY: string
declare const API_URL: string
declare const file: Blob
declare const userId: string
declare const sessionId: string
declare const sessionQuestionId: string
declare const questionId: string
declare const roomId: string
declare const peerId: string
declare const turnId: string
const supabase = createClient<Database>(SUPABASE_URL, SUPABASE_ANON_KEY)
""".replace("KIT", f"{ROOT}/clients/database.types.js")


@pytest.fixture(scope="module")
def generator() -> None:
    if shutil.which("node") is None or shutil.which("npm") is None:
        pytest.skip("`node`/`npm` is not installed: the type generator (npm @supabase/postgres-meta) cannot run")
    try:
        clienttypes.check_generator()
    except clienttypes.ClientTypesError:
        result = subprocess.run(
            ["npm", "ci", "--no-audit", "--no-fund", "--loglevel=error"], cwd=ROOT, capture_output=True, text=True
        )
        if result.returncode != 0:
            pytest.skip(f"`npm ci` could not install the type generator: {result.stderr.strip()[-500:]}")
        clienttypes.check_generator()


@pytest.fixture(scope="module")
def generated(generator: None, database_url: str) -> dict[Path, str]:
    return clienttypes.generate_from(database_url)


def test_committed_types_are_what_the_migrations_generate(generated: dict[Path, str]) -> None:
    diff = clienttypes.drift(generated)
    assert not diff, (
        "clients/ differs from the types generated from supabase/migrations; run `.venv/bin/prep db types` and "
        f"commit the result:\n{diff}"
    )


def test_a_schema_change_shows_in_the_drift(generator: None, server_url: str, template_db: str) -> None:
    with localdb.scratch_database(server_url, template=template_db) as url:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("alter table public.plans add column drift_probe integer not null default 0")
            conn.execute("alter type public.served_question drop attribute experience_level")
        diff = clienttypes.drift(clienttypes.generate_from(url))
    assert "+          drift_probe: number\n" in diff
    assert re.search(r"^-\s+experience_level: Database\[\"public\"\]\[\"Enums\"\]", diff, re.MULTILINE)
    assert "clients/database.types.ts (committed)" in diff


def tsc(source: str) -> subprocess.CompletedProcess[str]:
    """Compile one ES module (the examples use top-level await) under --strict, where it resolves supabase-js."""
    if not TSC.exists():
        pytest.skip("typescript is not installed in node_modules")
    work = ROOT / "node_modules" / ".cache" / f"client-kit-{uuid.uuid4().hex[:8]}"
    work.mkdir(parents=True)
    try:
        (work / "check.mts").write_text(source)
        return subprocess.run(
            [str(TSC), "--strict", "--noEmit", "--target", "es2022", "--module", "nodenext",
             "--moduleResolution", "nodenext", "--skipLibCheck", str(work / "check.mts")],
            cwd=ROOT, capture_output=True, text=True, check=False, timeout=120,
        )  # fmt: skip
    finally:
        shutil.rmtree(work)


def doc_examples() -> str:
    blocks = _TS_BLOCK.findall(CLIENT_DOC.read_text())
    assert len(blocks) >= 10, "docs/client.md shows every user flow as supabase-js calls"
    # Each example in its own block scope, so two may name the same constant.
    return EXAMPLE_PRELUDE + "".join(f"\n{{\n{block}}}\n" for block in blocks)


def test_the_kit_and_the_documented_calls_compile_under_tsc_strict(generator: None) -> None:
    result = tsc(doc_examples())
    assert result.returncode == 0, f"tsc --strict failed:\n{result.stdout}{result.stderr}"


def test_client_code_that_misreads_an_rpc_does_not_compile(generator: None) -> None:
    wrong = EXAMPLE_PRELUDE + (
        'const { data: started } = await supabase.rpc("start_session", { session_type: "quick" })\n'
        "if (started) { const questions: number = started.question_count }\n"
        'const { data: plan } = await supabase.rpc("entitlements")\n'
        "if (plan) { const ends: string = plan.current_period_end }\n"
    )
    result = tsc(wrong)
    assert result.returncode != 0
    assert "Property 'question_count' does not exist" in result.stdout
    assert "Type 'string | null' is not assignable to type 'string'" in result.stdout


def test_the_documented_python_calls_parse() -> None:
    blocks = _PY_BLOCK.findall(CLIENT_DOC.read_text())
    assert len(blocks) >= 10, "docs/client.md shows every user flow as supabase-py calls"
    for block in blocks:
        compile(block, "docs/client.md", "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)


def load_models() -> ModuleType:
    path = clienttypes.OUTPUTS[1].path
    spec = importlib.util.spec_from_file_location("database_types", path)
    assert spec
    assert spec.loader
    module = importlib.util.module_from_spec(spec)
    # Registered as the import system would: pydantic resolves the models' annotations in their module.
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def as_user(db: psycopg.Connection, user: uuid.UUID, statement: str, *params: object) -> object:
    """What PostgREST sends the client for an RPC: the result as JSON, run as the user."""
    with acting_as(db, user_claims(user)):
        return db.execute(statement, params).fetchone()[0]  # type: ignore[arg-type]


def test_the_python_models_parse_what_the_rpcs_return(db: psycopg.Connection) -> None:
    models = load_models()
    free, paid = sign_up(db), sign_up(db)
    give_paid_plan(db, paid)

    free_plan = models.PublicEntitlement.model_validate(as_user(db, free, "select to_jsonb(public.entitlements())"))
    assert (free_plan.plan_code, free_plan.subscription_status, free_plan.current_period_end) == ("free", None, None)
    assert models.PublicPlanFeatures.model_validate(free_plan.features).voice_answers is False
    paid_plan = models.PublicEntitlement.model_validate(as_user(db, paid, "select to_jsonb(public.entitlements())"))
    assert (paid_plan.plan_code, paid_plan.subscription_status) == ("monthly", "active")
    assert models.PublicPlanUsageLimits.model_validate(paid_plan.usage_limits).practice_sessions == 20

    started = models.PublicStartedSession.model_validate(
        as_user(db, paid, "select to_jsonb(public.start_session('quick', %s))", Jsonb({"count": 2}))
    )
    assert started.session_type == "quick"
    assert started.time_limit_seconds is None
    assert [q.position for q in started.questions] == [1, 2]
    assert all(isinstance(q.session_question_id, uuid.UUID) and q.content for q in started.questions)

    ended = models.PublicSessionSummaries.model_validate(
        as_user(db, paid, "select to_jsonb(public.end_session(%s, 'abandoned'))", started.session_id)
    )
    assert (ended.id, ended.status, ended.question_count) == (started.session_id, "abandoned", 2)


@pytest.mark.parametrize(
    ("column", "value", "sqlstate"),
    [
        ("features", {"voice_answers": True, "teleportation": True}, "23514"),
        ("features", {"voice_answers": "yes please"}, "22P02"),
        ("usage_limits", {"practice_sessions": 2.5}, "22P02"),
        ("usage_limits", {"practice_sessions": {"nested": 1}}, "22P02"),
    ],
)
def test_plan_json_outside_its_declared_type_is_refused(
    db: psycopg.Connection, column: str, value: object, sqlstate: str
) -> None:
    with pytest.raises(psycopg.Error) as refused:
        db.execute(
            f"update public.plans set {column} = {column} || %s where code = 'free'",  # type: ignore[arg-type]
            (Jsonb(value),),
        )
    assert refused.value.sqlstate == sqlstate


def test_plan_json_may_leave_keys_out(db: psycopg.Connection) -> None:
    db.execute("update public.plans set features = features - 'voice_answers' where code = 'free'")
    features = db.execute("select features from public.plans where code = 'free'").fetchone()[0]
    assert features == {"mock_interviews": False, "ai_generated_questions": False, "peer_sessions": False}
