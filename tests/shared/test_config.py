"""Configuration errors name the variable to fix."""

from __future__ import annotations

import pytest

from functions.billing.settings import WebhookSettings
from shared.config import ConfigurationError, DatabaseSettings, load_settings


def test_missing_settings_are_named(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("DATABASE_URL", "STRIPE_SECRET_KEY", "STRIPE_WEBHOOK_SECRET"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(ConfigurationError) as error:
        load_settings(WebhookSettings)
    message = str(error.value)
    assert "STRIPE_SECRET_KEY: Field required" in message
    assert "STRIPE_WEBHOOK_SECRET: Field required" in message

    monkeypatch.setenv("STRIPE_SECRET_KEY", "sk_test_x")
    monkeypatch.setenv("STRIPE_WEBHOOK_SECRET", "whsec_x")
    with pytest.raises(ConfigurationError, match="DATABASE_URL is required"):
        load_settings(WebhookSettings)


def test_malformed_settings_are_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgresql://localhost/x")
    monkeypatch.setenv("DB_POOL_SIZE", "many")
    with pytest.raises(ConfigurationError, match="DB_POOL_SIZE: Input should be a valid integer"):
        load_settings(DatabaseSettings)


def test_postgrest_transport_needs_its_url_and_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DB_TRANSPORT", "postgrest")
    monkeypatch.delenv("SUPABASE_SERVICE_ROLE_KEY", raising=False)
    with pytest.raises(ConfigurationError, match="SUPABASE_SERVICE_ROLE_KEY are required"):
        load_settings(DatabaseSettings)
