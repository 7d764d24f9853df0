"""`prep analytics report`: a self-contained HTML dashboard, opened in headless Chromium as an operator would."""

from __future__ import annotations

import html
import os
import re
import shutil
from pathlib import Path

import psycopg
import pytest
from typer.testing import CliRunner

from prep import dbhealth
from prep.cli import app
from prep.dashboard import CHARTS, _row, money
from tests.analytics.history import practise, practitioner

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture
def report(database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("DATABASE_URL", database_url)
    with psycopg.connect(database_url, autocommit=True) as conn:
        user = practitioner(conn)
        for day in ("2026-04-01", "2026-04-02", "2026-04-04"):
            practise(conn, user, f"{day} 10:00+00", [60, 80], category="technical" if day[-1] == "2" else "behavioral")
        conn.execute(
            "select private.raise_operator_alert('duplicate_live_subscriptions', %s, jsonb_build_object('live',"
            " jsonb_build_array(jsonb_build_object('stripe_subscription_id', 'sub_monthly', 'plan', 'monthly',"
            " 'status', 'trialing'), jsonb_build_object('stripe_subscription_id', 'sub_weekly', 'plan', 'weekly',"
            " 'status', 'trialing'))))",
            (str(user),),
        )
    runner = CliRunner()
    aggregated = runner.invoke(app, ["analytics", "aggregate", "--from", "2026-04-01", "--to", "2026-04-04"])
    assert aggregated.exit_code == 0, aggregated.output
    out = tmp_path / "dashboard.html"
    result = runner.invoke(app, ["analytics", "report", "--days", "7", "--until", "2026-04-05", "--out", str(out)])
    assert result.exit_code == 0, result.output
    return out


def test_the_page_is_self_contained(report: Path) -> None:
    page = report.read_text().replace("<wbr>", "")  # where long names may wrap
    assert page.count("<svg") == len(CHARTS)
    assert "src=" not in page
    assert "<link" not in page
    for title, *_ in CHARTS:
        assert title in page
    assert "2026-03-30 to 2026-04-05" in page


def test_no_cell_says_none_and_money_reads_as_money(report: Path) -> None:
    page = report.read_text().replace("<wbr>", "")  # where long names may wrap
    assert not re.search(r">\s*(None|n/a|null)\s*<", page)
    assert _row(None, "", 0) == "<tr><td>—</td><td>—</td><td>0</td></tr>"  # a missing figure is a dash
    assert not re.search(r"\$\d+\.\d{3,}", page), "a dollar figure with more than cents"
    assert [money(v) for v in (0, 1, 29, 1.5, 0.25, 0.0042, 1234.4)] == [
        "$0", "$1", "$29", "$1.50", "$0.25", "$0.0042", "$1,234",
    ]  # fmt: skip


def test_the_database_health_section_shows_what_supabase_inspect_shows(report: Path, database_url: str) -> None:
    page = report.read_text().replace("<wbr>", "")  # where long names may wrap
    section = page[page.index("<h2>Database health</h2>") :]
    for heading in ("Slowest statements", "Unused indexes", "sequential scans", "Bloat", "Replication lag"):
        assert heading in section
    for card in ("Table cache hit rate", "Index cache hit rate", "Connections", "Replication"):
        assert card in section
    assert re.search(r"Connections</div><div class=\"value\">\d+ of \d+<", section)
    assert "No replica is streaming from this database." in section  # none configured here
    with psycopg.connect(database_url) as conn:
        statistics = dbhealth.statement_statistics_problem(conn)
    if statistics is None:  # the slowest statements come from pg_stat_statements
        assert "aggregate_user_day" in section  # the report fixture's aggregation, its slowest work
    else:
        assert html.escape(statistics.splitlines()[0])[:60] in section


def test_open_billing_alerts_are_listed_first(report: Path) -> None:
    page = report.read_text().replace("<wbr>", "")  # where long names may wrap
    assert re.search(r"Open billing alerts \([1-9]\d*\)", page), "each report fixture opens one alert"
    assert page.index("Open billing alerts") < page.index("<svg")
    assert "duplicate_live_subscriptions" in page
    assert "sub_monthly (monthly, trialing), sub_weekly (weekly, trialing)" in page


def test_an_operator_sees_every_chart_in_a_browser(report: Path, tmp_path: Path) -> None:
    if CHROMIUM is None:
        if os.environ.get("PREP_REQUIRE_BROWSER"):
            pytest.fail("PREP_REQUIRE_BROWSER is set but Chromium is missing: apt-get install chromium")
        pytest.skip("needs Chromium (Debian package chromium; .ci/run installs it)")
    from playwright.sync_api import sync_playwright

    requests: list[str] = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update"],
        )
        try:
            page = browser.new_page(viewport={"width": 1500, "height": 1000})
            page.on("request", lambda request: requests.append(request.url))
            errors: list[str] = []
            page.on("pageerror", lambda error: errors.append(str(error)))
            page.goto(report.as_uri())
            assert page.title().startswith("Interview prep: platform dashboard")
            charts = page.locator("figure.chart svg")
            assert charts.count() == len(CHARTS)
            boxes = [charts.nth(index).bounding_box() for index in range(len(CHARTS))]
            for box in boxes:
                assert box is not None
                assert box["width"] > 600
                assert box["height"] > 250
            # Two columns on a wide screen: the first two charts side by side.
            assert boxes[0]["y"] == boxes[1]["y"]  # type: ignore[index]
            assert boxes[1]["x"] > boxes[0]["x"] + boxes[0]["width"]  # type: ignore[index]
            # Axis labels readable: as tall as the page's small text, in the page's typeface.
            label = charts.nth(0).locator(".axis.x text").first
            label_box = label.bounding_box()
            assert label_box is not None
            assert label_box["height"] >= 11
            assert "monospace" not in label.evaluate("e => getComputedStyle(e).fontFamily")
            # Signups: one line with a point per day; the days without figures are gaps, not zeros.
            first = charts.nth(0)
            assert "Signups" in (first.text_content() or "")
            assert first.locator(".dots").count() > 0
            cards = page.locator(".cards").first.locator(".card .value").all_inner_texts()
            assert len(cards) == 4
            assert all(text for text in cards)
            page.screenshot(path=str(tmp_path / "dashboard.png"), full_page=True)
            # A phone: one column, nothing wider than the screen.
            page.set_viewport_size({"width": 420, "height": 900})
            narrow = [charts.nth(index).bounding_box() for index in range(2)]
            assert narrow[1]["y"] > narrow[0]["y"]  # type: ignore[index]
            assert page.evaluate("document.documentElement.scrollWidth") <= 420
        finally:
            browser.close()
    assert errors == []
    assert requests == [report.as_uri()], "the page fetched something besides itself"
    assert (tmp_path / "dashboard.png").stat().st_size > 20_000
