"""Settings of the billing functions (see .env.example)."""

from __future__ import annotations

from pydantic import AnyHttpUrl, Field, SecretStr

from shared.config import AuthSettings, DatabaseSettings


class StripeSettings(DatabaseSettings):
    stripe_secret_key: SecretStr
    # Only for a local stand-in of Stripe's API; unset in every real environment.
    stripe_api_base: AnyHttpUrl | None = None
    stripe_timeout_seconds: float = Field(default=10.0, gt=0, le=60)


class WebhookSettings(StripeSettings):
    stripe_webhook_secret: SecretStr
    # Stripe's own default: a signature older than this is a replay.
    stripe_webhook_tolerance_seconds: int = Field(default=300, ge=1, le=3600)


class BillingApiSettings(StripeSettings, AuthSettings):
    checkout_success_url: AnyHttpUrl
    checkout_cancel_url: AnyHttpUrl
    portal_return_url: AnyHttpUrl
