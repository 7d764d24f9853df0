"""Ending a deleted account's billing in Stripe: every live subscription cancelled now, then the customer deleted.

Cancelled immediately with `prorate=false` and `invoice_now=false`: no refund of the period already paid for and no
final invoice (docs/operations.md, "Deleting an account"). Each call is safe to repeat: a subscription already
cancelled and a customer already deleted (or never found) count as done.
"""

from __future__ import annotations

import stripe

_ENDED = ("canceled", "incomplete_expired")


class BillingStepError(Exception):
    """Stripe failed or refused; the step is retried later."""


def end_billing(client: stripe.StripeClient, subscriptions: list[str], customers: list[str]) -> None:
    try:
        for subscription in subscriptions:
            _cancel(client, subscription)
        for customer in customers:
            _delete_customer(client, customer)
    except stripe.StripeError as error:
        raise BillingStepError(f"{type(error).__name__}: {error.user_message or error}"[:500]) from error


def _cancel(client: stripe.StripeClient, subscription: str) -> None:
    try:
        client.v1.subscriptions.cancel(subscription, {"prorate": False, "invoice_now": False})
    except stripe.InvalidRequestError as error:
        if error.code == "resource_missing":
            return
        # Cancelling a cancelled subscription is refused (400); whether that is what happened, Stripe's state says.
        if client.v1.subscriptions.retrieve(subscription).status not in _ENDED:
            raise


def _delete_customer(client: stripe.StripeClient, customer: str) -> None:
    try:
        client.v1.customers.delete(customer)
    except stripe.InvalidRequestError as error:
        if error.code != "resource_missing":
            raise
