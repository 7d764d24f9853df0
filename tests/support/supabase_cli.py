"""The Supabase CLI as the tests use it: the pinned npm package, its platform binary, and what that binary embeds.

The CLI (3.x) is a compiled JavaScript bundle: each `supabase inspect db <name>` command is an object
`{name:"<name>",sql:<variable>,params:...}` whose SQL is a template literal `<variable>=`...``, and the schemas
it leaves out are the array `Fm=[...]` that `jm` turns into LIKE patterns. (Minified names: a new CLI version
may rename them, and these tests then fail loudly rather than compare nothing.) Reading them from the binary lets a
test compare `prep db inspect`'s vendored queries with exactly what the installed CLI runs.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
EXECUTABLE = ROOT / "node_modules" / ".bin" / "supabase"


def installed_cli() -> Path:
    """The CLI package.json pins (installed with `npm ci` when missing); skips the test without node/npm."""
    for tool in ("node", "npm"):
        if shutil.which(tool) is None:
            pytest.skip(f"`{tool}` is not installed: the Supabase CLI (npm package `supabase`) cannot run")
    wanted = pinned_version()
    installed = ROOT / "node_modules" / "supabase" / "package.json"
    if not EXECUTABLE.exists() or not installed.exists() or json.loads(installed.read_text())["version"] != wanted:
        result = subprocess.run(
            ["npm", "ci", "--no-audit", "--no-fund", "--loglevel=error"], cwd=ROOT, capture_output=True, text=True
        )
        if result.returncode != 0:
            pytest.skip(f"`npm ci` could not install the Supabase CLI {wanted}: {result.stderr.strip()[-500:]}")
    version = subprocess.run([str(EXECUTABLE), "--version"], capture_output=True, text=True, check=False)
    if version.returncode != 0 or version.stdout.strip() != wanted:
        pytest.skip(f"the Supabase CLI binary does not run here: {version.stderr.strip()[-500:]}")
    return EXECUTABLE


def pinned_version() -> str:
    return json.loads((ROOT / "package.json").read_text())["devDependencies"]["supabase"]


def platform_binary() -> Path:
    """The native executable the npm wrapper starts (@supabase/cli-<platform>/bin/supabase)."""
    installed_cli()
    binaries = sorted((ROOT / "node_modules" / "@supabase").glob("cli-*/bin/supabase*"))
    if not binaries:
        pytest.skip("no @supabase/cli-<platform> package is installed")
    return binaries[0]


def inspect_bundle(binary: bytes) -> bytes:
    """The part of the binary's JavaScript that defines `supabase inspect db`'s commands (searched much faster)."""
    found = binary.find(b'{name:"outliers",sql:')
    assert found >= 0, "the CLI binary has no `inspect db outliers`"
    return binary[max(0, found - 400_000) : found + 400_000]


def embedded_inspect_sql(bundle: bytes, command: str) -> str:
    """The SQL text of `supabase inspect db <command>` as the binary holds it."""
    found = re.search(rb'\{name:"' + re.escape(command.encode()) + rb'",sql:([\w$]+),', bundle)
    assert found, f"the CLI has no `inspect db {command}`"
    definition = bundle.rfind(found.group(1) + b"=`", 0, found.start())
    assert definition >= 0, f"the SQL of `inspect db {command}` ({found.group(1).decode()}) is not in the binary"
    return _template_literal(bundle, definition + len(found.group(1)) + 2)


def embedded_inspect_parameters(bundle: bytes, command: str) -> str:
    """What the CLI passes to the query, as its source says it: e.g. `[jm(Fm),e.conn.database]`."""
    found = re.search(
        rb'\{name:"' + re.escape(command.encode()) + rb'",sql:[\w$]+,params:\([^)]*\)=>(\[[^\]]*\])', bundle
    )
    assert found, f"the parameters of `inspect db {command}` are not where they were"
    return found.group(1).decode()


def embedded_excluded_schemas(bundle: bytes) -> list[str]:
    """The schemas every inspect query leaves out (`Fm`, passed as $1 after `jm` made LIKE patterns of it)."""
    found = re.search(rb'\{Fm=(\["information_schema".*?\])\}', bundle)
    assert found, "the CLI's list of excluded schemas is not in the binary"
    return json.loads(found.group(1))


_ESCAPES = {"\\": "\\", "`": "`", "$": "$", "n": "\n", "t": "\t"}


def _template_literal(binary: bytes, start: int) -> str:
    """The text of the JavaScript template literal whose first character is at `start` (escapes undone)."""
    end = start
    while binary[end : end + 1] != b"`":
        assert binary[end : end + 2] != b"${", "an inspect query with a ${...} substitution"
        end += 2 if binary[end : end + 1] == b"\\" else 1
    raw = binary[start:end].decode()
    return re.sub(r"\\(.)", lambda escape: _ESCAPES[escape.group(1)], raw, flags=re.DOTALL)
