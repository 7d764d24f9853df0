"""Cold-start cost of each function module: `python -X importtime`, median of repeated fresh interpreters.

Each module is measured twice: as imported (what `-X importtime` of the handler module shows) and as its
Lambda cold start really runs (AWS_LAMBDA_FUNCTION_NAME set, so the app, settings, database gateway and
clients are built during import). The reference is importing fastapi, stripe, openai and supabase together,
measured in the same run. Run: .venv/bin/python -m bench.import_time [--runs 7]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

from rich.console import Console
from rich.table import Table

REFERENCE = "fastapi, stripe, openai, supabase"
MODULES = {
    "billing webhook": "functions.billing.webhook",
    "billing api": "functions.billing.api",
}
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


def import_seconds(statement: str, env: dict[str, str] | None = None) -> float:
    """Total self time of every import `python -X importtime -c statement` performed."""
    result = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", statement],
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
    cases = {"reference: " + REFERENCE: ("import " + REFERENCE, None)}
    for label, module in MODULES.items():
        cases[f"{label} (import)"] = (f"import {module}", None)
        cases[f"{label} (Lambda cold start)"] = (f"import {module}", LAMBDA_ENV)
    samples: dict[str, list[float]] = {label: [] for label in cases}
    for _ in range(runs):  # interleaved, so machine noise hits every case alike
        for label, (statement, env) in cases.items():
            samples[label].append(import_seconds(statement, env))
    medians = {label: statistics.median(values) for label, values in samples.items()}
    reference = medians["reference: " + REFERENCE]

    table = Table(title=f"Import time, median of {runs} fresh interpreters")
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
