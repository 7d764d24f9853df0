"""The client kit (clients/) is what postgres-meta generates from the migrations, and it tells the truth.

- The committed TypeScript types and Python models equal a fresh generation from the migrated schema (CI fails
  with a diff when a migration changes what clients see and `prep db types` was not run), and a schema change
  does show up in that diff.
- The TypeScript compiles under `tsc --strict`, together with every ```ts example of docs/client.md written
  against supabase-js; a wrong field or a missing null check in client code is a compile error.
- The Python models parse what the RPCs return to a user.
- A plan's features and usage limits are typed (no `Json`), reach clients as the JSON objects they were, and
  a plan with an undecided flag or an unset or negative limit is refused.

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
from psycopg import sql
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
        # A typed field, not Json: a wrong property or type is named (Json would say neither).
        "if (plan?.usage_limits) { const sessions: string = plan.usage_limits.practice_sessions }\n"
        'const { data: plans } = await supabase.from("plans").select("code, features")\n'
        "if (plans) { const teleport = plans[0].features.teleportation }\n"
    )
    result = tsc(wrong)
    assert result.returncode != 0
    assert "Property 'question_count' does not exist" in result.stdout
    assert "Type 'string | null' is not assignable to type 'string'" in result.stdout
    assert "Type 'number | null' is not assignable to type 'string'" in result.stdout
    assert "Property 'teleportation' does not exist" in result.stdout


def kit_block(kit: str, opening: str) -> str:
    """The block of the generated TypeScript that starts with `opening` (a line ending in `{`) to its `}`."""
    lines = kit.splitlines()
    start = next(i for i, line in enumerate(lines) if line.strip() == opening)
    indent = len(lines[start]) - len(lines[start].lstrip())
    end = next(i for i in range(start + 1, len(lines)) if lines[i] == " " * indent + "}")
    return "\n".join(lines[start : end + 1])


def test_plan_features_and_limits_are_typed_in_the_kit() -> None:
    kit = clienttypes.OUTPUTS[0].path.read_text()
    plans, entitlement = kit_block(kit, "plans: {"), kit_block(kit, "entitlement: {")
    for block in (plans, entitlement):
        assert "Json" not in block, block
    # Row, Insert (no default: a new plan states them) and Update of the table, and the RPC's row.
    assert plans.count('features: Database["public"]["CompositeTypes"]["plan_features"]\n') == 2
    assert plans.count('features?: Database["public"]["CompositeTypes"]["plan_features"]\n') == 1
    assert plans.count('usage_limits: Database["public"]["CompositeTypes"]["plan_usage_limits"]\n') == 2
    assert 'features: Database["public"]["CompositeTypes"]["plan_features"] | null' in entitlement
    assert re.search(r'usage_limits:\s+\| Database\["public"\]\["CompositeTypes"\]\["plan_usage_limits"\]', entitlement)


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
    assert free_plan.features.voice_answers is False
    paid_plan = models.PublicEntitlement.model_validate(as_user(db, paid, "select to_jsonb(public.entitlements())"))
    assert (paid_plan.plan_code, paid_plan.subscription_status) == ("monthly", "active")
    assert paid_plan.usage_limits.practice_sessions == 20
    rows = as_user(db, free, "select json_agg(p) from public.plans p")
    plans = [models.PublicPlans.model_validate(row) for row in rows]  # type: ignore[attr-defined]
    assert {p.code: p.features.mock_interviews for p in plans} == {"free": False, "weekly": True, "monthly": True}

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


FREE_FEATURES = dict.fromkeys(("voice_answers", "mock_interviews", "ai_generated_questions", "peer_sessions"), False)
PAID_FEATURES = dict.fromkeys(FREE_FEATURES, True)
FREE_LIMITS = {"practice_sessions": 2, "question_requests": 5, "evaluations": 5, "ai_spend_cents": 5,
               "evaluations_per_answer": 3}  # fmt: skip
PAID_LIMITS = {"practice_sessions": 20, "question_requests": 100, "evaluations": 100, "ai_spend_cents": 100,
               "evaluations_per_answer": 3}  # fmt: skip


def test_plans_reach_clients_as_the_json_objects_they_were(db: psycopg.Connection) -> None:
    """PostgREST sends a composite column as an object with a key per attribute: the jsonb's keys and values."""
    rows = as_user(db, sign_up(db), "select json_agg(t) from (select code, features, usage_limits from public.plans) t")
    assert {row["code"]: (row["features"], row["usage_limits"]) for row in rows} == {  # type: ignore[union-attr]
        "free": (FREE_FEATURES, FREE_LIMITS),
        "weekly": (PAID_FEATURES, PAID_LIMITS),
        "monthly": (PAID_FEATURES, PAID_LIMITS),
    }


@pytest.mark.parametrize(
    ("status", "plan", "features", "limits"),
    [(None, "free", FREE_FEATURES, FREE_LIMITS), ("trialing", "weekly", PAID_FEATURES, PAID_LIMITS),
     ("active", "monthly", PAID_FEATURES, PAID_LIMITS), ("canceled", "free", FREE_FEATURES, FREE_LIMITS)],
)  # fmt: skip
def test_entitlements_carry_the_typed_features_and_limits_of_the_granting_plan(
    db: psycopg.Connection, status: str | None, plan: str, features: dict[str, bool], limits: dict[str, int]
) -> None:
    user = sign_up(db)
    if status:
        give_paid_plan(db, user, "monthly" if plan == "free" else plan)
        db.execute("update public.subscriptions set status = %s where user_id = %s", (status, user))
    granted = as_user(db, user, "select to_json(public.entitlements())")
    assert granted["plan_code"] == plan  # type: ignore[index]
    assert (granted["features"], granted["usage_limits"]) == (features, limits)  # type: ignore[index]
    # SQL reads the same fields typed: a boolean and an integer, not text to cast.
    typed = db.execute(
        "select (e.features).voice_answers, (e.usage_limits).practice_sessions from public.entitlements(%s) e", (user,)
    ).fetchone()
    assert typed == (features["voice_answers"], limits["practice_sessions"])


def plan_attributes(db: psycopg.Connection, type_name: str) -> list[str]:
    return [
        row[0]
        for row in db.execute(
            "select attname from pg_attribute where attrelid = %s::regclass and attnum > 0 and not attisdropped"
            " order by attnum",
            (type_name,),
        )
    ]


def test_a_plan_whose_flag_is_undecided_or_whose_limit_is_unset_or_negative_is_refused(db: psycopg.Connection) -> None:
    features, limits = plan_attributes(db, "public.plan_features"), plan_attributes(db, "public.plan_usage_limits")
    assert "peer_sessions" in features
    assert "ai_spend_cents" in limits
    attempts = [("features", flag, None) for flag in features]
    attempts += [("usage_limits", limit, value) for limit in limits for value in (None, -1)]
    for column, field, value in attempts:
        with pytest.raises(psycopg.errors.CheckViolation) as refused, db.transaction():
            db.execute(
                sql.SQL("update public.plans set {}.{} = %s where code = 'monthly'").format(
                    sql.Identifier(column), sql.Identifier(field)
                ),
                (value,),
            )
        assert refused.value.diag.constraint_name == f"plans_{column}_check", (field, value)
    # Zero is a limit (nothing allowed), and a plan must state its flags and limits: there is no default.
    db.execute("update public.plans set usage_limits.evaluations = 0 where code = 'free'")
    with pytest.raises(psycopg.errors.NotNullViolation):
        db.execute("insert into public.plans (code, name, price_cents) values ('bare', 'Bare', 0)")
