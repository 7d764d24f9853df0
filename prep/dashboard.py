"""The operator dashboard: one self-contained HTML page (inline SVG charts, nothing fetched) drawn from
service.dashboard's series and the database's health (prep/dbhealth.py), so it opens from a file, a mail
attachment or an S3 link alike. Columns as wide as the screen allows; a missing figure is "—"."""

from __future__ import annotations

import html
import re
from collections.abc import Callable
from datetime import date
from typing import Any

import pygal
from pydantic import BaseModel
from pygal.style import Style

from prep.dbhealth import SUPABASE_CLI_VERSION, DatabaseHealth


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
        _row(
            alert.id,
            alert.kind,
            ALERT_SUMMARY.get(alert.kind),
            alert.subject,
            detail(alert),
            alert.occurrences,
            alert.first_seen_at,
            alert.last_seen_at,
        )
        for alert in alerts
    )


def money(value: float) -> str:
    """Dollars as people write them: $1, $29, $1.50, $0.25, and sub-cent AI costs to two significant digits."""
    size = abs(value)
    if size == 0:
        return "$0"
    if size >= 100:
        return f"${value:,.0f}"
    if size >= 0.01:
        text = f"${value:,.2f}"
        return text.removesuffix(".00")
    return f"${value:.2g}"


def count(value: float) -> str:
    return f"{value:,.0f}"


def score(value: float) -> str:
    return f"{value:.1f}"


def ratio(value: float) -> str:
    return f"{value:.0%}" if value in (0, 1) else f"{value:.1%}"


# (title, [(series label, metric name, details key or None)], how values and the y axis read)
CHARTS: list[tuple[str, list[tuple[str, str, str | None]], Callable[[float], str]]] = [
    ("Signups", [("signups", "signups", None)], count),
    (
        "Active users",
        [
            ("daily", "active_users.daily", None),
            ("weekly", "active_users.weekly", None),
            ("monthly", "active_users.monthly", None),
        ],
        count,
    ),
    (
        "Practice sessions",
        [("started", "sessions.started", None), ("completed", "sessions.completed", None)],
        count,
    ),
    ("Average score", [("all answers", "average_score", None)], score),
    ("MRR", [("MRR", "mrr_usd", None)], money),
    ("Question cache hit ratio", [("served from the bank", "questions.cache_hit_ratio", None)], ratio),
    (
        "AI cost",
        [
            ("total", "ai.cost_usd", None),
            ("question generation", "ai.cost_usd", "question_generation"),
            ("evaluation", "ai.cost_usd", "evaluation"),
            ("saved by the cache", "ai.cost_saved_by_cache_usd", None),
        ],
        money,
    ),
]

# Readable at the size the page shows a chart: the page's own typeface, labels of 14 units in a 600-wide drawing
# (a laptop's column shows it about 1:1).
CHART_STYLE = Style(
    background="#ffffff",
    plot_background="#ffffff",
    foreground="#333333",
    foreground_strong="#111111",
    foreground_subtle="#e3e3e3",
    colors=("#2563eb", "#f59e0b", "#10b981", "#ef4444", "#8b5cf6"),
    font_family="system-ui, -apple-system, 'Segoe UI', Roboto, sans-serif",
    title_font_size=17,
    label_font_size=14,
    major_label_font_size=14,
    legend_font_size=13,
    value_font_size=13,
    tooltip_font_size=13,
)


def series(data: DashboardData, metric: str, detail: str | None) -> list[float | None]:
    points = data.metrics.get(metric) or [None] * len(data.days)
    if detail is None:
        return [p.value if p else None for p in points]
    return [float(p.details.get(detail, 0)) if p else None for p in points]


def chart_svg(
    data: DashboardData, title: str, lines: list[tuple[str, str, str | None]], formatter: Callable[[float], str]
) -> str:
    chart = pygal.Line(
        title=title,
        style=CHART_STYLE,
        width=600,
        height=330,
        legend_at_bottom=True,
        legend_at_bottom_columns=min(len(lines), 4),
        # Counts and dollars: no ticks between whole units.
        order_min=0 if formatter in (count, money) else None,
        show_dots=len(data.days) <= 45,
        dots_size=3,
        x_label_rotation=0,
        show_minor_x_labels=False,
        truncate_label=-1,
        value_formatter=formatter,
        js=[],  # pygal's tooltips script lives on a CDN: the page must not fetch anything
        disable_xml_declaration=True,
    )
    chart.x_labels = [f"{d:%b %-d}" for d in data.days]
    chart.x_labels_major = chart.x_labels[:: max(1, len(data.days) // 6)]
    for label, metric, detail in lines:
        chart.add(label, series(data, metric, detail))
    return chart.render(is_unicode=True)


def latest(data: DashboardData, metric: str) -> float | None:
    return next((p.value for p in reversed(data.metrics.get(metric, [])) if p), None)


def _cell(value: Any) -> str:
    """A value for a table cell: "—" when missing; long names (schema.table_index) may wrap after `.` or `_`."""
    if value is None or value == "":
        return "—"
    text = html.escape(str(value))
    if _QUANTITY.fullmatch(text):
        return text.replace(" ", "&nbsp;")  # "904 kB" on one line
    return _NAME_BREAK.sub(r"\1<wbr>", text)


_NAME_BREAK = re.compile(r"(?<=[a-z])([._:]+)(?=[a-z])")
_QUANTITY = re.compile(r"[\d.,]+ [a-zA-Z]+")


def _row(*cells: Any) -> str:
    return "<tr>" + "".join(f"<td>{_cell(cell)}</td>" for cell in cells) + "</tr>"


def _card(label: str, value: str, note: str = "") -> str:
    note_html = f'<div class="note">{html.escape(note)}</div>' if note else ""
    return (
        f'<div class="card"><div class="label">{html.escape(label)}</div>'
        f'<div class="value">{html.escape(value)}</div>{note_html}</div>'
    )


def _table(headers: list[str], rows: list[list[Any]], empty: str, *, classes: str = "") -> str:
    return _table_html(headers, "".join(_row(*row) for row in rows), empty, classes=classes)


def _table_html(headers: list[str], body: str, empty: str, *, classes: str = "") -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = body or f'<tr><td colspan="{len(headers)}" class="empty">{html.escape(empty)}</td></tr>'
    return f'<table class="{classes}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def health_section(health: DatabaseHealth | None) -> str:
    """Database health: the figures `supabase inspect db` gives (the same queries), plus connections and
    replication lag."""
    if health is None:
        return ""
    stats = health.database_stats or {}
    connections = health.connections
    cards = [
        _card("Table cache hit rate", _hit_rate(stats.get("table_hit_rate")), "share of reads from memory"),
        _card("Index cache hit rate", _hit_rate(stats.get("index_hit_rate"))),
        _card("Database size", stats.get("database_size") or "—", f"WAL {stats.get('wal_size') or '—'}"),
        _card(
            "Connections",
            f"{connections['connections']} of {connections['allowed']}" if connections else "—",
            f"{connections['active']} active, {connections['idle_in_transaction']} idle in a transaction"
            if connections
            else "",
        ),
        _card("Replication", _replication_summary(health.replication)),
    ]
    missing = "".join(
        f"<li><b>{html.escape(part.replace('_', ' '))}</b>: {html.escape(reason)}</li>"
        for part, reason in health.unavailable.items()
    )
    slowest = _table(
        ["query", "role", "calls", "total ms", "mean ms", "share"],
        [
            [s["query"], s["role"], f"{s['calls']:,}", s["total_ms"], s["mean_ms"], f"{s['share_percent']}%"]
            for s in health.slowest_statements or []
        ],
        "No statements recorded yet.",
        classes="statements",
    )
    unused = _table(
        ["index", "table", "size"],
        [[i["name"], i["table"], i["size"]] for i in health.unused_indexes or []],
        "Every index has been used since statistics were reset.",
    )
    scans = _table(
        ["table", "rows", "seq scans", "index scans", "rows per seq scan"],
        [
            [t["table"], f"{t['estimated_rows']:,}", f"{t['seq_scans']:,}", f"{t['index_scans']:,}",
             f"{t['rows_per_seq_scan']:,}"]
            for t in health.sequential_scans or []
        ],
        "No table of more than 1,000 rows is read mostly by sequential scans.",
    )  # fmt: skip
    bloat = _table(
        ["object", "type", "bloat", "waste"],
        [[b["name"], b["type"], b["bloat"], b["waste"]] for b in health.bloat or []],
        "No bloat estimate (tables not analysed yet).",
    )
    replication = _table(
        ["replica", "address", "state", "sync", "replay lag", "behind"],
        [
            [r["replica"], r["address"], r["state"], r["sync_state"], f"{r['replay_lag_seconds']} s",
             _bytes(r["replay_lag_bytes"])]
            for r in health.replication or []
        ],
        "No replica is streaming from this database.",
    )  # fmt: skip
    return f"""
<section class="health">
<h2>Database health</h2>
<p class="meta">The queries of <code>supabase inspect db</code> (CLI {html.escape(SUPABASE_CLI_VERSION)}):
 run any of them with <code>prep db inspect &lt;name&gt;</code>. Statistics gathered over the last
 {_cell((stats.get("time_since_stats_reset") or "").split(".")[0])}.</p>
{f'<ul class="unavailable">{missing}</ul>' if missing else ""}
<div class="cards">{"".join(cards)}</div>
<div class="grid">
<div class="panel wide"><h3>Slowest statements (total time, every role)</h3>{slowest}</div>
<div class="panel"><h3>Unused indexes</h3>{unused}</div>
<div class="panel"><h3>Missing indexes? Tables read by sequential scans</h3>{scans}</div>
<div class="panel"><h3>Bloat (largest estimated waste)</h3>{bloat}</div>
<div class="panel"><h3>Replication lag</h3>{replication}</div>
</div>
</section>"""


def _hit_rate(value: str | None) -> str:
    return "—" if value in (None, "N/A") else f"{float(value):.0%}" if float(value) in (0, 1) else f"{float(value):.1%}"


def _replication_summary(replicas: list[dict[str, Any]] | None) -> str:
    if replicas is None:
        return "—"
    if not replicas:
        return "none configured"
    worst = max(float(r["replay_lag_seconds"]) for r in replicas)
    return f"{len(replicas)} replica(s), lag ≤ {worst:g} s"


def _bytes(value: int) -> str:
    size = float(value)
    for unit in ("B", "kB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{size:,.0f} {unit}" if unit == "B" else f"{size:,.1f} {unit}"
        size /= 1024
    return f"{value} B"


def render_dashboard(
    data: DashboardData,
    *,
    alerts: list[OperatorAlert],
    generated_at: str,
    health: DatabaseHealth | None = None,
) -> str:
    span = f"{data.days[0]} to {data.days[-1]}" if data.days else "no days"
    headline: list[tuple[str, float | None, Callable[[float], str]]] = [
        ("MRR", latest(data, "mrr_usd"), money),
        ("Active subscriptions", latest(data, "subscriptions.active"), count),
        ("Monthly active users", latest(data, "active_users.monthly"), count),
        ("Cache hit ratio", latest(data, "questions.cache_hit_ratio"), ratio),
    ]
    cards = "".join(_card(label, fmt(value) if value is not None else "—") for label, value, fmt in headline)
    charts = "".join(f'<figure class="chart">{chart_svg(data, *chart)}</figure>' for chart in CHARTS)
    buckets = _table(
        ["category", "difficulty", "level", "questions", "average rating"],
        [
            [b.get("category"), b.get("difficulty"), b.get("experience_level"), b.get("questions"),
             b.get("average_rating")]
            for b in data.thinnest_buckets
        ],
        "No stock figures yet: the schedule's housekeeping refreshes them.",
    )  # fmt: skip
    alerts_table = _table_html(
        ["id", "kind", "meaning", "subject", "detail", "seen", "first seen", "last seen"],
        alert_rows(alerts),
        "None open.",
        classes="alerts",
    )
    return f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Interview prep: platform dashboard ({html.escape(span)})</title>
<style>
  :root {{ --line: #e2e2e2; --muted: #666; }}
  body {{ font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 0; color: #1f2328;
         background: #f6f7f9; line-height: 1.45; }}
  main {{ max-width: 1600px; margin: 0 auto; padding: 1.5rem clamp(1rem, 3vw, 2.5rem) 3rem; }}
  h1 {{ font-size: 1.6rem; margin: 0 0 .2rem; }}
  h2 {{ font-size: 1.25rem; margin: 2rem 0 .4rem; }}
  h3 {{ font-size: 1rem; margin: 0 0 .6rem; }}
  .meta {{ color: var(--muted); margin: 0 0 1rem; }}
  .cards {{ display: grid; grid-template-columns: repeat(auto-fit, minmax(11rem, 1fr)); gap: 1rem;
           margin-bottom: 1.5rem; }}
  .card {{ background: #fff; border: 1px solid var(--line); border-radius: 10px; padding: .9rem 1.2rem; }}
  .card .label {{ color: var(--muted); font-size: .9rem; }}
  .card .value {{ font-size: 1.7rem; font-weight: 650; }}
  .card .note {{ color: var(--muted); font-size: .85rem; }}
  .grid {{ display: grid; grid-template-columns: repeat(auto-fit, minmax(min(100%, 560px), 1fr)); gap: 1rem; }}
  .panel, figure.chart {{ margin: 0; background: #fff; border: 1px solid var(--line); border-radius: 10px;
                          padding: .8rem 1rem; min-width: 0; overflow-x: auto; }}
  .panel.wide {{ grid-column: 1 / -1; }}
  figure.chart svg {{ display: block; width: 100%; height: auto; }}
  table {{ border-collapse: collapse; background: #fff; width: 100%; font-size: .92rem; }}
  th, td {{ border-bottom: 1px solid var(--line); padding: .4rem .6rem; text-align: left; vertical-align: top; }}
  th {{ color: var(--muted); font-weight: 600; }}
  th {{ white-space: nowrap; }}
  td {{ overflow-wrap: break-word; }}
  td.empty {{ color: var(--muted); }}
  table.statements td:first-child {{ font-family: ui-monospace, Menlo, Consolas, monospace; font-size: .85rem; }}
  .unavailable {{ color: #9a3412; }}
  code {{ background: #eef0f3; padding: 0 .25rem; border-radius: 4px; }}
</style>
</head>
<body>
<main>
<h1>Platform dashboard</h1>
<p class="meta">UTC days {html.escape(span)} &middot; generated {html.escape(generated_at)}
 &middot; from analytics_daily (a day with no figures is a gap: run <code>prep analytics aggregate</code>)</p>
<div class="cards">{cards}</div>
<h2>Open billing alerts ({len(alerts)})</h2>
<p class="meta">What each kind means and what to do: docs/operations.md, "Billing alerts";
 list and resolve them with <code>prep billing alerts</code> / <code>prep billing resolve</code>.</p>
<div class="panel">{alerts_table}</div>
<h2>Trends</h2>
<div class="grid charts">{charts}</div>
<h2>Thinnest question buckets</h2>
<div class="panel">{buckets}</div>
{health_section(health)}
</main>
</body>
</html>
"""
