"""The reads the webhook and resync make through Stripe's API (the client: shared/stripe_client.py)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import stripe

from functions.billing.stripe_objects import Subscription, subscription_snapshot


class StripeUnavailableError(Exception):
    """Stripe's API failed or timed out: worth retrying later."""


def fresh_snapshot(
    client: stripe.StripeClient, subscription_id: str, *, version: datetime, user_id: str | None = None
) -> dict[str, Any]:
    """Stripe's current state of a subscription, stamped `version` (what it is at least as new as)."""
    try:
        found = client.v1.subscriptions.retrieve(subscription_id)
    except stripe.InvalidRequestError:
        raise
    except stripe.StripeError as error:
        raise StripeUnavailableError(f"reading subscription {subscription_id} from Stripe failed: {error}") from error
    return _snapshot(found, version, user_id)


def all_subscription_snapshots(client: stripe.StripeClient, customer: str | None = None) -> Iterator[dict[str, Any]]:
    """Every subscription (every status), page by page, or only a customer's."""
    params: dict[str, Any] = {"status": "all", "limit": 100}
    if customer:
        params["customer"] = customer
    try:
        for found in client.v1.subscriptions.list(params).auto_paging_iter():  # type: ignore[arg-type]
            yield _snapshot(found, datetime.now(UTC), None)
    except stripe.StripeError as error:
        raise StripeUnavailableError(f"listing subscriptions from Stripe failed: {error}") from error


def _snapshot(found: stripe.StripeObject, version: datetime, user_id: str | None) -> dict[str, Any]:
    subscription = Subscription.model_validate(found.to_dict())
    return subscription_snapshot(subscription, version=version, fresh=True, user_id=user_id)
