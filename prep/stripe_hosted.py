"""The Stripe stand-in's hosted pages: the Checkout and billing-portal pages a customer's browser visits.

The pages are plain HTML forms (no script, nothing loaded from elsewhere), so a developer can click through billing
on the local platform offline. Card details are not asked for: the stand-in has no payment methods, every payment
succeeds as with Stripe's test card 4242 4242 4242 4242, which the page shows.
"""

from __future__ import annotations

import time
from html import escape
from typing import Any

TEST_CARD = "4242 4242 4242 4242"

_STYLE = (
    "body{font-family:system-ui,sans-serif;max-width:32rem;margin:3rem auto;padding:0 1rem;color:#1a1f36}"
    "h1{font-size:1.3rem}.box{border:1px solid #e3e8ee;border-radius:8px;padding:1rem 1.2rem;margin:1rem 0}"
    "button{background:#635bff;color:#fff;border:0;border-radius:6px;padding:.6rem 1.2rem;font-size:1rem;"
    "cursor:pointer}input{font:inherit;padding:.4rem;width:100%;box-sizing:border-box}.muted{color:#697386}"
)


def page(title: str, body: str) -> str:
    return (
        f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{escape(title)}</title>'
        f'<meta name="viewport" content="width=device-width,initial-scale=1"><style>{_STYLE}</style></head>'
        f"<body><p class=muted>Stripe stand-in (local, test mode)</p><h1>{escape(title)}</h1>{body}</body></html>"
    )


def money(cents: int) -> str:
    return f"${cents / 100:,.2f}"


def checkout_page(session: dict[str, Any], lines: list[tuple[str, int, str]], trial_days: int) -> str:
    """The hosted Checkout page of an open session: what is bought, and one button that pays (or starts the trial).
    `lines`: (product name, unit amount in cents, interval) per line item."""
    items = "".join(
        f"<p><b>{escape(name)}</b>: {money(amount)} / {escape(interval)}</p>" for name, amount, interval in lines
    )
    due = money(session["amount_total"])
    trial = f"<p>{trial_days}-day free trial, then billed every period. Due today: {due}.</p>" if trial_days else ""
    email = session["customer_email"] or (session["customer_details"] or {}).get("email") or ""
    action = "Start trial" if trial_days else f"Pay {due}"
    return page(
        "Checkout",
        f"<div class=box>{items}{trial}</div>"
        f'<form method="post"><label>Email<input name="email" value="{escape(email)}" readonly></label>'
        f'<label>Card<input name="card" value="{TEST_CARD}" readonly></label>'
        f"<p class=muted>Test mode: every payment succeeds.</p><button>{escape(action)}</button></form>"
        + (f'<p><a href="{escape(session["cancel_url"])}">Cancel</a></p>' if session["cancel_url"] else ""),
    )


def closed_checkout_page(session: dict[str, Any]) -> str:
    return page("Checkout", f"<p>This checkout session is {escape(session['status'])}: nothing to pay.</p>")


def portal_page(portal: dict[str, Any], subscriptions: list[tuple[dict[str, Any], str]]) -> str:
    """The billing portal: each live subscription, with the button that cancels it at the end of its period (or
    keeps it, once cancelled). `subscriptions`: (subscription, product name)."""
    rows = []
    for sub, product in subscriptions:
        if sub["cancel_at_period_end"]:
            state = f"cancels at the end of its period ({_date(sub['cancel_at'])})"
            form = _portal_form(portal["id"], "renew", sub["id"], "Don't cancel")
        else:
            form = _portal_form(portal["id"], "cancel", sub["id"], "Cancel plan")
            state = escape(sub["status"]) + (f" until {_date(sub['trial_end'])}" if sub["trial_end"] else "")
        rows.append(f"<div class=box><p><b>{escape(product)}</b>: {state}</p>{form}</div>")
    body = "".join(rows) or "<p>No subscriptions.</p>"
    back = f'<p><a href="{escape(portal["return_url"])}">Return</a></p>' if portal["return_url"] else ""
    return page("Billing", body + back)


def _portal_form(portal_id: str, action: str, sub_id: str, label: str) -> str:
    return (
        f'<form method="post" action="/billing_portal/{escape(portal_id)}/{action}">'
        f'<input type="hidden" name="subscription" value="{escape(sub_id)}"><button>{escape(label)}</button></form>'
    )


def _date(timestamp: int | None) -> str:
    return time.strftime("%Y-%m-%d", time.gmtime(timestamp)) if timestamp else "?"
