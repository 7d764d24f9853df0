"""Cold-start cost of each function module: `python -X importtime`, median of repeated fresh interpreters.

Measured where the Lambda really runs: each side is imported from a lean site holding only what is deployed
(`pip install --target` of the function's pinned requirements file, the same pins scripts/package.py puts in
its zip), never from the development venv. The dev venv matters: it has httpx's `cli` extra (the prep console
needs rich and click), and `import httpx` then imports click, rich and pygments -- about 0.2 s no Lambda pays.
The reference is importing fastapi, stripe, openai and supabase together from a lean site of their own
(every package at the dev venv's version), measured in the same run, interleaved.

Each module is measured twice: as imported, and as its Lambda cold start runs (AWS_LAMBDA_FUNCTION_NAME set,
so the app, settings, database gateway and clients are built during import).
Run: .venv/bin/python -m bench.import_time [--runs 7]
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.metadata
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parent.parent
SITES = ROOT / ".local" / "bench-import"
REFERENCE_PACKAGES = ("fastapi", "stripe", "openai", "supabase")
REFERENCE = ", ".join(REFERENCE_PACKAGES)
MODULES = {
    "billing webhook": "functions.billing.webhook",
    "billing api": "functions.billing.api",
}
FUNCTION_REQUIREMENTS = ROOT / "functions" / "billing" / "requirements.txt"
# Settings a cold start needs to build the apps; values are placeholders, nothing is contacted.
LAMBDA_ENV = {
    "AWS_LAMBDA_FUNCTION_NAME": "bench",
    "DATABASE_URL": "postgresql://postgres:postgres@127.0.0.1:1/postgres",
    "STRIPE_SECRET_KEY": "sk_test_bench",
    "STRIPE_WEBHOOK_SECRET": "whsec_bench",
    "SUPABASE_URL": "http://127.0.0.1:54321",
    "CHECKOUT_SUCCESS_URL": "http://127.0.0.1:3000/ok",
    "CHECKOUT_CANCEL_URL": "http://127.0.0.1:3000/cancel",
    "PORTAL_RETURN_URL": "http://127.0.0.1:3000/account",
}
OUT = Path(__file__).parent / "out" / "import_time.json"


def lean_site(name: str, pip_arguments: list[str]) -> Path:
    """A `pip install --target` directory for these arguments, reused while they stay the same."""
    site = SITES / name
    stamp = site / ".installed"
    wanted = hashlib.sha256("\n".join(pip_arguments).encode()).hexdigest()
    if not (stamp.exists() and stamp.read_text() == wanted):
        installed = subprocess.run(
            [sys.executable, "-m", "pip", "install", "--quiet", "--upgrade", "--target", str(site), *pip_arguments],
            capture_output=True,
            text=True,
        )
        if installed.returncode:
            sys.exit(f"pip could not build the lean site {site}:\n{installed.stderr}")
        stamp.write_text(wanted)
    return site


def import_seconds(site: Path, statement: str, env: dict[str, str] | None = None) -> float:
    """Total self time of every import `statement` performed in a fresh interpreter seeing only `site` and the repo."""
    path_setup = f"import sys; sys.path[:0] = [{str(site)!r}, {str(ROOT)!r}]; "
    result = subprocess.run(
        [sys.executable, "-S", "-X", "importtime", "-c", path_setup + statement],  # -S: no venv site-packages
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, **(env or {})},
    )
    total = 0
    for line in result.stderr.splitlines():
        if line.startswith("import time:") and "self [us]" not in line:
            total += int(line.split(":", 1)[1].split("|")[0])
    return total / 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=7)
    runs = parser.parse_args().runs
    deployed = lean_site("billing", ["--no-deps", "-r", str(FUNCTION_REQUIREMENTS)])
    # The dev venv's versions of everything (constraints pin without installing), so both sides import the same code.
    constraints = SITES / "dev-versions.txt"
    constraints.parent.mkdir(parents=True, exist_ok=True)
    constraints.write_text(
        "".join(
            f"{dist.metadata['Name']}=={dist.version}\n"
            for dist in importlib.metadata.distributions()
            if dist.metadata["Name"] != "interview-prep-backend"
        )
    )
    reference_site = lean_site("reference", ["-c", str(constraints), *REFERENCE_PACKAGES])
    cases = {"reference: " + REFERENCE: (reference_site, "import " + REFERENCE, None)}
    for label, module in MODULES.items():
        cases[f"{label} (import)"] = (deployed, f"import {module}", None)
        cases[f"{label} (Lambda cold start)"] = (deployed, f"import {module}", LAMBDA_ENV)
    samples: dict[str, list[float]] = {label: [] for label in cases}
    for _ in range(runs):  # interleaved, so machine noise hits every case alike
        for label, (site, statement, env) in cases.items():
            samples[label].append(import_seconds(site, statement, env))
    medians = {label: statistics.median(values) for label, values in samples.items()}
    reference = medians["reference: " + REFERENCE]

    table = Table(title=f"Import time from lean sites of what is deployed, median of {runs} fresh interpreters")
    for column in ("what", "median s", "vs reference", "target"):
        table.add_column(column)
    for label, median in medians.items():
        target = "<= 0.50" if label.startswith("billing webhook") else ""
        table.add_row(label, f"{median:.3f}", f"{median / reference:.2f}", target)
    Console().print(table)
    OUT.parent.mkdir(exist_ok=True)
    OUT.write_text(json.dumps({"runs": runs, "median_seconds": medians, "reference": REFERENCE}, indent=2))


if __name__ == "__main__":
    main()
