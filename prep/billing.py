"""`prep billing`: repair billing state from Stripe, for events missed beyond Stripe's retry window, and the
operator's billing alerts (docs/operations.md "Billing alerts")."""

from __future__ import annotations

import json
from collections import Counter
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console

from functions.billing.settings import BillingSettings
from functions.billing.stripe_api import StripeUnavailableError, all_subscription_snapshots
from prep.localdb import database_url
from shared.config import ConfigurationError, DatabaseSettings, load_settings
from shared.db import Database, DatabaseError, connect
from shared.stripe_client import stripe_client

app = typer.Typer(no_args_is_help=True, help="Billing operations against Stripe's API, and billing alerts.")
console = Console(soft_wrap=True)

# What service.sync_subscription answers for a subscription it could not apply yet (each raised an alert).
NOT_APPLIED = ("unlinked", "unmatched_price")

S = TypeVar("S", bound=DatabaseSettings)


def _settings(kind: type[S]) -> S:
    try:
        return load_settings(kind, database_url=database_url())
    except ConfigurationError as error:
        console.print(f"[red]error:[/red] {error}")
        raise typer.Exit(1) from error


def _apply_pending(database: Database) -> None:
    pending = database.call("service.apply_pending_stripe_events", {})
    console.print(f"Recorded events applied: {pending['applied']}, still waiting: {pending['still_pending']}.")


@app.command()
def resync(
    user: Annotated[str | None, typer.Option(help="Only this user's subscriptions (their user id).")] = None,
    all_subscriptions: Annotated[bool, typer.Option("--all", help="Every subscription in the Stripe account.")] = False,
) -> None:
    """Apply recorded events that waited for a customer link or a plan price, then re-read subscriptions (every
    status, every page) from Stripe and apply them; Stripe's state wins."""
    if (user is None) == (not all_subscriptions):
        raise typer.BadParameter("choose --user ID or --all")
    settings = _settings(BillingSettings)
    database, client = connect(settings), stripe_client(settings)
    outcomes: Counter[str] = Counter()
    try:
        _apply_pending(database)
        customer = None
        if user is not None:
            customer = database.call("service.billing_customer", {"user_id": user})["stripe_customer_id"]
        for snapshot in all_subscription_snapshots(client, customer):
            subscription = snapshot["subscription"]["stripe_subscription_id"]
            try:
                change = database.call("service.sync_subscription", {"snapshot": snapshot})["change"]
            except DatabaseError as error:
                if error.retryable or error.status >= 500:
                    raise
                change = "skipped"
                console.print(f"[yellow]{subscription}: {error.detail}[/yellow]")
            outcomes[change] += 1
            console.print(f"{subscription}: {change}")
    except (DatabaseError, StripeUnavailableError) as error:
        console.print(f"[red]error:[/red] {error}")
        raise typer.Exit(1) from error
    summary = ", ".join(f"{count} {change}" for change, count in sorted(outcomes.items())) or "no subscriptions"
    console.print(f"Resync done: {summary}.")
    if any(outcomes[change] for change in NOT_APPLIED):
        console.print("[yellow]Not applied yet: see `prep billing alerts` (docs/operations.md).[/yellow]")
    if outcomes["skipped"] or any(outcomes[change] for change in NOT_APPLIED):
        raise typer.Exit(1)


@app.command()
def link(
    user: Annotated[str, typer.Option(help="The user id.")],
    customer: Annotated[str, typer.Option(help="The Stripe customer id (cus_...) to link to the user.")],
) -> None:
    """Link a Stripe customer nobody is linked to (an unlinked_customer alert) to a user without one, and apply
    the events recorded for it."""
    database = connect(_settings(DatabaseSettings))
    try:
        linked = database.call("service.link_billing_customer", {"user_id": user, "stripe_customer_id": customer})
        if linked["stripe_customer_id"] != customer:
            console.print(f"[red]error:[/red] user {user} already has customer {linked['stripe_customer_id']}")
            raise typer.Exit(1)
        _apply_pending(database)
    except DatabaseError as error:
        console.print(f"[red]error:[/red] {error}")
        raise typer.Exit(1) from error


@app.command()
def alerts(
    include_resolved: Annotated[bool, typer.Option("--all", help="Resolved alerts too.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON array, for scripts.")] = False,
) -> None:
    """List billing alerts, open ones first (what each kind means: docs/operations.md "Billing alerts")."""
    database = connect(_settings(DatabaseSettings))
    try:
        found: list[dict[str, Any]] = database.call("service.operator_alerts", {"include_resolved": include_resolved})
    except DatabaseError as error:
        console.print(f"[red]error:[/red] {error}")
        raise typer.Exit(1) from error
    if as_json:
        console.print_json(json.dumps(found))
        return
    if not found:
        console.print("No alerts.")
    for alert in found:
        state = f"resolved {alert['resolved_at']}: {alert['resolution']}" if alert["resolved_at"] else "OPEN"
        console.print(
            f"#{alert['id']} {alert['kind']} {alert['subject']} ({state}; seen {alert['occurrences']}x,"
            f" {alert['first_seen_at']} to {alert['last_seen_at']})\n    {json.dumps(alert['detail'])}",
            markup=False,
            highlight=False,
        )


@app.command()
def resolve(
    alert_id: Annotated[int, typer.Argument(help="The alert's id (`prep billing alerts`).")],
    note: Annotated[str, typer.Option(help="What was done about it.")],
) -> None:
    """Close an alert once its cause is dealt with (those the platform can see end close by themselves)."""
    database = connect(_settings(DatabaseSettings))
    try:
        closed = database.call("service.resolve_operator_alert", {"alert_id": alert_id, "resolution": note})
    except DatabaseError as error:
        console.print(f"[red]error:[/red] {error}")
        raise typer.Exit(1) from error
    console.print(f"Resolved alert {closed['id']} ({closed['kind']} {closed['subject']}).")
