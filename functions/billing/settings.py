"""Settings of the billing functions (see .env.example)."""

from __future__ import annotations

from pydantic import AnyHttpUrl, Field, SecretStr

from shared.config import AuthSettings, DatabaseSettings
from shared.stripe_client import StripeSettings


class BillingSettings(DatabaseSettings, StripeSettings):
    pass


class WebhookSettings(BillingSettings):
    stripe_webhook_secret: SecretStr
    # Stripe's own default: a signature older than this is a replay.
    stripe_webhook_tolerance_seconds: int = Field(default=300, ge=1, le=3600)


class BillingApiSettings(BillingSettings, AuthSettings):
    checkout_success_url: AnyHttpUrl
    checkout_cancel_url: AnyHttpUrl
    portal_return_url: AnyHttpUrl
