"""shared/metrics.py writes CloudWatch Embedded Metric Format documents, only in Lambda."""

from __future__ import annotations

import pytest

from shared import metrics
from shared.metrics import Metric, emit
from tests.support.metrics import dimension_sets, documents, values


@pytest.mark.usefixtures("in_lambda")
def test_a_document_carries_each_metric_under_every_dimension_set(capsys: pytest.CaptureFixture[str]) -> None:
    emit(
        [Metric("WebhookEvents", 1), Metric("Latency", 12.5, "Milliseconds")],
        {"EventType": "invoice.paid", "Outcome": "applied"},
        aggregate=[["Outcome"], ()],
        properties={"event_id": "evt_1"},
    )
    (document,) = documents(capsys.readouterr().out)
    (directive,) = document["_aws"]["CloudWatchMetrics"]
    assert directive["Dimensions"] == [["EventType", "Outcome"], ["Outcome"], []]
    assert directive["Metrics"] == [
        {"Name": "WebhookEvents", "Unit": "Count"},
        {"Name": "Latency", "Unit": "Milliseconds"},
    ]
    assert (document["EventType"], document["Outcome"], document["event_id"]) == ("invoice.paid", "applied", "evt_1")
    assert values([document], "Latency", Outcome="applied") == [12.5]
    assert dimension_sets([document], "WebhookEvents") == {("EventType", "Outcome"), ("Outcome",), ()}


def test_outside_lambda_nothing_is_written(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AWS_LAMBDA_FUNCTION_NAME", raising=False)
    emit([Metric("WebhookEvents", 1)], {"Outcome": "applied"})
    assert capsys.readouterr().out == ""


def test_an_aggregate_must_use_the_documents_dimensions() -> None:
    with pytest.raises(AssertionError, match="Purpose"):
        metrics.document([Metric("AiCalls", 1)], {"Outcome": "failed"}, aggregate=[["Purpose"]])


def test_the_namespace_defaults_to_local(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("METRICS_NAMESPACE", raising=False)
    document = metrics.document([Metric("AiCalls", 1)], timestamp_ms=5)
    assert document["_aws"] == {
        "Timestamp": 5,
        "CloudWatchMetrics": [
            {"Namespace": "interview-prep/local", "Dimensions": [[]], "Metrics": [{"Name": "AiCalls", "Unit": "Count"}]}
        ],
    }
