"""`prep billing`: repair billing state from Stripe, for events missed beyond Stripe's retry window."""

from __future__ import annotations

from collections import Counter
from typing import Annotated

import typer
from rich.console import Console

from functions.billing.settings import StripeSettings
from functions.billing.stripe_api import StripeUnavailableError, all_subscription_snapshots, stripe_client
from prep.localdb import database_url
from shared.config import ConfigurationError, load_settings
from shared.db import DatabaseError, connect

app = typer.Typer(no_args_is_help=True, help="Billing operations against Stripe's API.")
console = Console(soft_wrap=True)


@app.command()
def resync(
    user: Annotated[str | None, typer.Option(help="Only this user's subscriptions (their user id).")] = None,
    all_subscriptions: Annotated[bool, typer.Option("--all", help="Every subscription in the Stripe account.")] = False,
) -> None:
    """Re-read subscriptions (every status, every page) from Stripe and apply them; Stripe's state wins."""
    if (user is None) == (not all_subscriptions):
        raise typer.BadParameter("choose --user ID or --all")
    try:
        settings = load_settings(StripeSettings, database_url=database_url())
    except ConfigurationError as error:
        console.print(f"[red]error:[/red] {error}")
        raise typer.Exit(1) from error
    database, client = connect(settings), stripe_client(settings)
    outcomes: Counter[str] = Counter()
    try:
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
    if outcomes["skipped"]:
        raise typer.Exit(1)
