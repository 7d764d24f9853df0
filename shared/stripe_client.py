"""The Stripe API client the billing and account functions use: one pinned API version, one way to build it.

Only the packages that ship Stripe's SDK (billing, account) import this module.
"""

from __future__ import annotations

import stripe
from pydantic import AnyHttpUrl, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

# The API version every request is made with, and the shape the webhook expects events in.
STRIPE_API_VERSION = "2026-10-28.endive"


class StripeSettings(BaseSettings):
    model_config = SettingsConfigDict(extra="ignore", frozen=True)

    stripe_secret_key: SecretStr
    # Only for a local stand-in of Stripe's API; unset in every real environment.
    stripe_api_base: AnyHttpUrl | None = None
    stripe_timeout_seconds: float = Field(default=10.0, gt=0, le=60)


def stripe_client(settings: StripeSettings) -> stripe.StripeClient:
    base = {"api": str(settings.stripe_api_base).rstrip("/")} if settings.stripe_api_base else None
    return stripe.StripeClient(
        settings.stripe_secret_key.get_secret_value(),
        stripe_version=STRIPE_API_VERSION,
        base_addresses=base,  # type: ignore[arg-type]
        max_network_retries=2,
        # requests: stripe imports it anyway, so the client costs no extra import at cold start.
        http_client=stripe.RequestsClient(timeout=settings.stripe_timeout_seconds),
    )
