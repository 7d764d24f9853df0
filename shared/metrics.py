"""CloudWatch metrics as Embedded Metric Format (EMF): one JSON document per line on stdout, which Lambda ships to
CloudWatch Logs and CloudWatch turns into metrics, with no API call, client or permission.

A small writer rather than the `aws-embedded-metrics` library: the format is one documented JSON shape, the
functions emit a handful of metrics at known points, and the library would add a dependency (and its async
flushing and environment probing) to every artifact and cold start for what `emit` does in a few lines.

Outside Lambda (tests, `prep serve`) nothing is written unless a test asks for it: locally the same figures are
in the logs and the dashboard. Names and dimensions: docs/operations.md, "Metrics and alarms". Dimension values
must come from small fixed sets (never ids or user input), so each metric has a few series, not thousands.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

# serverless.yml sets METRICS_NAMESPACE to interview-prep/<stage>, so stages never share a series.
DEFAULT_NAMESPACE = "interview-prep/local"

Unit = Literal["Count", "Milliseconds", "Seconds", "Percent", "None"]


@dataclass(frozen=True)
class Metric:
    name: str
    value: float
    unit: Unit = "Count"


def enabled() -> bool:
    return bool(os.environ.get("AWS_LAMBDA_FUNCTION_NAME"))


def document(
    metrics: Sequence[Metric],
    dimensions: Mapping[str, str] | None = None,
    *,
    aggregate: Sequence[Sequence[str]] = (),
    properties: Mapping[str, Any] | None = None,
    timestamp_ms: int | None = None,
) -> dict[str, Any]:
    """One EMF document: each metric under the full set of `dimensions`, and again under each of `aggregate`
    (subsets of those names; `()` is the metric with no dimension at all, what an alarm on the total watches)."""
    dimensions = dict(dimensions or {})
    dimension_sets = [list(dimensions), *(list(names) for names in aggregate)]
    for names in dimension_sets:
        unknown = set(names) - set(dimensions)
        assert not unknown, f"aggregate over dimensions the document does not have: {unknown}"
    return {
        "_aws": {
            "Timestamp": timestamp_ms if timestamp_ms is not None else int(time.time() * 1000),
            "CloudWatchMetrics": [
                {
                    "Namespace": os.environ.get("METRICS_NAMESPACE", DEFAULT_NAMESPACE),
                    "Dimensions": dimension_sets,
                    "Metrics": [{"Name": metric.name, "Unit": metric.unit} for metric in metrics],
                }
            ],
        },
        **dimensions,
        **{metric.name: metric.value for metric in metrics},
        **(properties or {}),
    }


def emit(
    metrics: Sequence[Metric],
    dimensions: Mapping[str, str] | None = None,
    *,
    aggregate: Sequence[Sequence[str]] = (),
    properties: Mapping[str, Any] | None = None,
) -> None:
    """Write one EMF line (in Lambda); a no-op elsewhere."""
    if not enabled() or not metrics:
        return
    line = json.dumps(document(metrics, dimensions, aggregate=aggregate, properties=properties), default=str)
    sys.stdout.write(line + "\n")
    sys.stdout.flush()
