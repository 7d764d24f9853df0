"""bench/RESULTS.md is rewritten from bench/out/*.json, which is not committed: a benchmark without its JSON here
keeps the rows it had, with their date, and one never measured is listed as not run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench import results


@pytest.fixture
def bench_dirs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path]:
    out, page = tmp_path / "out", tmp_path / "RESULTS.md"
    out.mkdir()
    monkeypatch.setattr(results, "OUT_DIR", out)
    monkeypatch.setattr(results, "RESULTS", page)
    monkeypatch.setattr(results, "machine", lambda: "test machine")
    return out, page


def test_a_benchmark_without_its_json_keeps_its_earlier_rows_and_date(bench_dirs: tuple[Path, Path]) -> None:
    out, page = bench_dirs
    kept = "| replica_pinned (2026-11-30) | analytics reads that fell back to the primary | 0 | 0 | yes |"
    page.write_text(f"# Benchmark results\n\n| benchmark | figure |\n|---|---|\n{kept}\n")
    (out / "webhook_throughput.json").write_text(
        json.dumps({"senders": 16, "events_per_second": 250.0, "p50_ms": 10, "p95_ms": 20, "double_applied_events": 0})
    )

    written = results.render()

    assert kept in written
    assert "| webhook_throughput (" in written
    assert "| 250 events/s | >= 200 | yes |" in written
    assert "| rls_reads | not run (no bench/out/rls_reads.json) | | | |" in written
    # replica's name starts replica_pinned's: its rows are not taken for replica's.
    assert written.count(kept) == 1
    assert "| replica | not run (no bench/out/replica.json) | | | |" in written


def test_every_benchmark_is_listed_when_nothing_was_ever_run(bench_dirs: tuple[Path, Path]) -> None:
    written = results.render()
    for name in results.BENCHMARKS:
        assert f"| {name} | not run (no bench/out/{name}.json) |" in written
