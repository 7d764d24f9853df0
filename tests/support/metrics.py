"""Reading what shared/metrics.py wrote: the EMF documents among the lines a function printed in Lambda (the
`in_lambda` fixture, tests/conftest.py)."""

from __future__ import annotations

import json
import math
import os
from typing import Any

# CloudWatch's EMF specification: units a metric may have, and at most 30 dimensions in a set.
UNITS = {"Seconds", "Microseconds", "Milliseconds", "Bytes", "Kilobytes", "Megabytes", "Count", "Percent", "None"}


def documents(output: str) -> list[dict[str, Any]]:
    """Every EMF document in `output`, each checked against the specification's rules."""
    found = []
    for line in output.splitlines():
        if not line.startswith("{") or '"_aws"' not in line:
            continue
        document = json.loads(line)
        check(document)
        found.append(document)
    return found


def check(document: dict[str, Any]) -> None:
    meta = document["_aws"]
    assert isinstance(meta["Timestamp"], int)
    for directive in meta["CloudWatchMetrics"]:
        assert directive["Namespace"] == os.environ["METRICS_NAMESPACE"]
        for names in directive["Dimensions"]:
            assert len(names) <= 30
            for name in names:
                assert isinstance(document[name], str), f"dimension {name} must be a string member"
        for metric in directive["Metrics"]:
            assert metric["Unit"] in UNITS
            value = document[metric["Name"]]
            assert isinstance(value, int | float), metric
            assert math.isfinite(value), metric


def values(found: list[dict[str, Any]], metric: str, **dimensions: str) -> list[float]:
    """The values of `metric` in documents whose dimensions include `dimensions`."""
    return [
        document[metric]
        for document in found
        if metric in document and all(document.get(name) == value for name, value in dimensions.items())
    ]


def dimension_sets(found: list[dict[str, Any]], metric: str) -> set[tuple[str, ...]]:
    return {
        tuple(names)
        for document in found
        for directive in document["_aws"]["CloudWatchMetrics"]
        if any(m["Name"] == metric for m in directive["Metrics"])
        for names in directive["Dimensions"]
    }
