"""The operator dashboard: one self-contained HTML page (inline SVG charts, nothing fetched) drawn from
service.dashboard's series, so it opens from a file, a mail attachment or an S3 link alike."""

from __future__ import annotations

import html
from datetime import date
from typing import Any

import pygal
from pydantic import BaseModel
from pygal.style import CleanStyle


class MetricPoint(BaseModel):
    value: float
    details: dict[str, Any]


class DashboardData(BaseModel):
    """service.dashboard's answer: the days, and each metric's value per day (None where not aggregated)."""

    days: list[date]
    metrics: dict[str, list[MetricPoint | None]]
    thinnest_buckets: list[dict[str, Any]]


class OperatorAlert(BaseModel):
    """One of service.operator_alerts' rows (docs/operations.md "Billing alerts")."""

    id: int
    kind: str
    subject: str
    detail: dict[str, Any]
    occurrences: int
    first_seen_at: str
    last_seen_at: str


# What the operator reads in each alert's detail, beside its subject.
ALERT_SUMMARY: dict[str, str] = {
    "duplicate_live_subscriptions": "a user with several live subscriptions (the first listed grants)",
    "unlinked_customer": "events of a Stripe customer no user is linked to, waiting",
    "unknown_price": "subscriptions on a price no plan has, waiting",
    "unreadable_event": "events of another API version the webhook could not read",
}


def alert_rows(alerts: list[OperatorAlert]) -> str:
    def detail(alert: OperatorAlert) -> str:
        live = alert.detail.get("live")
        if isinstance(live, list):
            return ", ".join(f"{s.get('stripe_subscription_id')} ({s.get('plan')}, {s.get('status')})" for s in live)
        return ", ".join(f"{k}: {v}" for k, v in alert.detail.items() if v is not None)

    return "".join(
        "<tr>"
        + "".join(
            f"<td>{html.escape(str(cell))}</td>"
            for cell in (
                alert.id,
                alert.kind,
                ALERT_SUMMARY.get(alert.kind, ""),
                alert.subject,
                detail(alert),
                alert.occurrences,
                alert.first_seen_at,
                alert.last_seen_at,
            )
        )
        + "</tr>"
        for alert in alerts
    )


# (title, [(series label, metric name, details key or None)], value format)
CHARTS: list[tuple[str, list[tuple[str, str, str | None]], str]] = [
    ("Signups", [("signups", "signups", None)], "{:.0f}"),
    (
        "Active users",
        [
            ("daily", "active_users.daily", None),
            ("weekly", "active_users.weekly", None),
            ("monthly", "active_users.monthly", None),
        ],
        "{:.0f}",
    ),
    (
        "Practice sessions",
        [("started", "sessions.started", None), ("completed", "sessions.completed", None)],
        "{:.0f}",
    ),
    ("Average score", [("all answers", "average_score", None)], "{:.1f}"),
    ("MRR (USD)", [("MRR", "mrr_usd", None)], "${:,.2f}"),
    ("Question cache hit ratio", [("served from the bank", "questions.cache_hit_ratio", None)], "{:.1%}"),
    (
        "AI cost (USD)",
        [
            ("total", "ai.cost_usd", None),
            ("question generation", "ai.cost_usd", "question_generation"),
            ("evaluation", "ai.cost_usd", "evaluation"),
            ("saved by the cache", "ai.cost_saved_by_cache_usd", None),
        ],
        "${:,.4f}",
    ),
]


def series(data: DashboardData, metric: str, detail: str | None) -> list[float | None]:
    points = data.metrics.get(metric) or [None] * len(data.days)
    if detail is None:
        return [p.value if p else None for p in points]
    return [float(p.details.get(detail, 0)) if p else None for p in points]


def chart_svg(data: DashboardData, title: str, lines: list[tuple[str, str, str | None]], value_format: str) -> str:
    chart = pygal.Line(
        title=title,
        style=CleanStyle,
        width=680,
        height=320,
        legend_at_bottom=True,
        # Counts and dollars: no ticks between whole units.
        order_min=0 if value_format in ("{:.0f}", "${:,.2f}") else None,
        show_dots=len(data.days) <= 45,
        x_label_rotation=30,
        show_minor_x_labels=False,
        value_formatter=lambda v: value_format.format(v),
        js=[],  # pygal's tooltips script lives on a CDN: the page must not fetch anything
        disable_xml_declaration=True,
    )
    chart.x_labels = [d.isoformat() for d in data.days]
    chart.x_labels_major = chart.x_labels[:: max(1, len(data.days) // 10)]
    for label, metric, detail in lines:
        chart.add(label, series(data, metric, detail))
    return chart.render(is_unicode=True)


def latest(data: DashboardData, metric: str) -> float | None:
    return next((p.value for p in reversed(data.metrics.get(metric, [])) if p), None)


def render_dashboard(data: DashboardData, *, alerts: list[OperatorAlert], generated_at: str) -> str:
    span = f"{data.days[0]} to {data.days[-1]}" if data.days else "no days"
    headline = [
        ("MRR", latest(data, "mrr_usd"), "${:,.2f}"),
        ("Active subscriptions", latest(data, "subscriptions.active"), "{:.0f}"),
        ("Monthly active users", latest(data, "active_users.monthly"), "{:.0f}"),
        ("Cache hit ratio", latest(data, "questions.cache_hit_ratio"), "{:.1%}"),
    ]
    cards = "".join(
        f'<div class="card"><div class="label">{html.escape(label)}</div>'
        f'<div class="value">{fmt.format(value) if value is not None else "n/a"}</div></div>'
        for label, value, fmt in headline
    )
    charts = "".join(f'<figure class="chart">{chart_svg(data, *chart)}</figure>' for chart in CHARTS)
    buckets = "".join(
        "<tr>"
        + "".join(
            f"<td>{html.escape(str(b.get(k)))}</td>"
            for k in ("category", "difficulty", "experience_level", "questions", "average_rating")
        )
        + "</tr>"
        for b in data.thinnest_buckets
    )
    no_alerts = '<tr><td colspan="8">None open.</td></tr>'
    no_stock = '<tr><td colspan="5">No stock figures yet: the schedule\'s housekeeping refreshes them.</td></tr>'
    return f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>Interview prep: platform dashboard ({html.escape(span)})</title>
<style>
  body {{ font-family: system-ui, sans-serif; margin: 2rem; color: #222; background: #fafafa; }}
  h1 {{ font-size: 1.4rem; margin-bottom: .2rem; }}
  .meta {{ color: #666; margin-bottom: 1.5rem; }}
  .cards {{ display: flex; gap: 1rem; flex-wrap: wrap; margin-bottom: 1.5rem; }}
  .card {{ background: #fff; border: 1px solid #ddd; border-radius: 8px; padding: .8rem 1.2rem; min-width: 10rem; }}
  .card .label {{ color: #666; font-size: .85rem; }} .card .value {{ font-size: 1.5rem; font-weight: 600; }}
  .charts {{ display: flex; flex-wrap: wrap; gap: 1rem; }}
  figure.chart {{ margin: 0; background: #fff; border: 1px solid #ddd; border-radius: 8px; width: 680px; }}
  table {{ border-collapse: collapse; background: #fff; margin-top: 1rem; }}
  td, th {{ border: 1px solid #ddd; padding: .3rem .7rem; text-align: left; }}
</style>
</head>
<body>
<h1>Platform dashboard</h1>
<div class="meta">UTC days {html.escape(span)} &middot; generated {html.escape(generated_at)}
 &middot; from analytics_daily (a day with no figures is a gap: run <code>prep analytics aggregate</code>)</div>
<div class="cards">{cards}</div>
<h2>Open billing alerts ({len(alerts)})</h2>
<p class="meta">What each kind means and what to do: docs/operations.md, "Billing alerts";
 list and resolve them with <code>prep billing alerts</code> / <code>prep billing resolve</code>.</p>
<table class="alerts">
<thead><tr><th>id</th><th>kind</th><th>meaning</th><th>subject</th><th>detail</th><th>seen</th><th>first seen</th>
<th>last seen</th></tr></thead>
<tbody>{alert_rows(alerts) or no_alerts}</tbody></table>
<div class="charts">{charts}</div>
<h2>Thinnest question buckets</h2>
<table>
<thead><tr><th>category</th><th>difficulty</th><th>level</th><th>questions</th><th>average rating</th></tr></thead>
<tbody>{buckets or no_stock}</tbody></table>
</body>
</html>
"""
