"""Configuration from the environment (pydantic-settings). Every variable is documented in .env.example.

A missing or malformed setting raises ConfigurationError naming the variable, so a function fails at start
with a message an operator can act on rather than at its first request with a traceback.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Literal, Self, TypeVar

from pydantic import AnyHttpUrl, Field, SecretStr, ValidationError, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

S = TypeVar("S", bound=BaseSettings)


class ConfigurationError(RuntimeError):
    pass


class DatabaseSettings(BaseSettings):
    """How handlers reach the SQL functions: psycopg (DATABASE_URL) or PostgREST (SUPABASE_URL + service key)."""

    model_config = SettingsConfigDict(extra="ignore", frozen=True)

    db_transport: Literal["psycopg", "postgrest"] = "psycopg"
    # In production: Supabase's transaction pooler (port 6543).
    database_url: SecretStr | None = None
    supabase_url: AnyHttpUrl | None = None
    supabase_service_role_key: SecretStr | None = None
    db_pool_size: int = Field(default=1, ge=1, le=50)
    db_timeout_seconds: float = Field(default=5.0, gt=0, le=60)
    db_statement_timeout_ms: int = Field(default=10_000, ge=100, le=300_000)
    # A read replica for the reads that may run there (docs/scaling.md "Read replicas"); unset, or the same as
    # DATABASE_URL, keeps every read on the primary. Only the psycopg transport uses it.
    database_read_url: SecretStr | None = None
    # How stale the replica may be for reads that accept it (the operator dashboard); past it they use the primary.
    db_read_max_lag_seconds: float = Field(default=30, ge=0, le=3600)
    # How long a read waits for the replica (a connection, or replaying the primary's position at the request, as
    # an export needs) before it runs on the primary instead.
    db_read_wait_seconds: float = Field(default=1, gt=0, le=10)

    @property
    def has_read_replica(self) -> bool:
        return (
            self.db_transport == "psycopg"
            and self.database_read_url is not None
            and bool(self.database_read_url.get_secret_value())
            and self.database_read_url != self.database_url
        )

    @model_validator(mode="after")
    def _transport_is_configured(self) -> Self:
        if self.db_transport == "psycopg" and self.database_url is None:
            raise ValueError("DATABASE_URL is required when DB_TRANSPORT=psycopg")
        if self.db_transport == "postgrest" and (self.supabase_url is None or self.supabase_service_role_key is None):
            raise ValueError("SUPABASE_URL and SUPABASE_SERVICE_ROLE_KEY are required when DB_TRANSPORT=postgrest")
        return self


class AuthSettings(BaseSettings):
    """How access tokens are verified: the project's JWKS (asymmetric keys), or the legacy HS256 secret."""

    model_config = SettingsConfigDict(extra="ignore", frozen=True)

    supabase_url: AnyHttpUrl | None = None
    # Overrides for a non-standard issuer or key set; by default both derive from SUPABASE_URL.
    supabase_jwt_issuer: str | None = None
    supabase_jwks_url: AnyHttpUrl | None = None
    supabase_jwt_secret: SecretStr | None = None
    supabase_jwt_audience: str = "authenticated"
    jwks_cache_seconds: int = Field(default=600, ge=0, le=600)
    # An unknown kid refetches the key set (key rotation), at most this often.
    jwks_refresh_cooldown_seconds: float = Field(default=30, ge=0, le=600)

    @model_validator(mode="after")
    def _some_key_source(self) -> Self:
        if self.supabase_jwt_secret is None and self.jwks_url is None:
            raise ValueError("set SUPABASE_URL (or SUPABASE_JWKS_URL) for JWKS, or SUPABASE_JWT_SECRET for HS256")
        if self.issuer is None:
            raise ValueError("set SUPABASE_URL or SUPABASE_JWT_ISSUER so token issuers can be checked")
        return self

    @property
    def issuer(self) -> str | None:
        if self.supabase_jwt_issuer:
            return self.supabase_jwt_issuer
        return f"{str(self.supabase_url).rstrip('/')}/auth/v1" if self.supabase_url else None

    @property
    def jwks_url(self) -> str | None:
        if self.supabase_jwks_url:
            return str(self.supabase_jwks_url)
        return f"{str(self.supabase_url).rstrip('/')}/auth/v1/.well-known/jwks.json" if self.supabase_url else None


class AiSettings(BaseSettings):
    """Which OpenAI-compatible service to call, how patiently, and what it costs. No key means AI is off."""

    model_config = SettingsConfigDict(extra="ignore", frozen=True)

    openai_api_key: SecretStr | None = None
    # Any OpenAI-compatible server (a local model, a proxy); unset means api.openai.com.
    openai_base_url: AnyHttpUrl | None = None
    ai_model: str = "gpt-4o-mini"
    ai_transcription_model: str = "gpt-4o-mini-transcribe"
    # Per attempt; a call can take up to (AI_MAX_RETRIES + 1) times this plus backoff.
    ai_timeout_seconds: float = Field(default=30, gt=0, le=600)
    ai_max_retries: int = Field(default=3, ge=0, le=10)
    ai_price_input_per_million_tokens: Decimal = Field(default=Decimal("0.15"), ge=0)
    ai_price_output_per_million_tokens: Decimal = Field(default=Decimal("0.60"), ge=0)
    # whisper-1 reports the recording's duration; gpt-4o-*-transcribe reports audio and text tokens.
    ai_price_transcription_per_minute: Decimal = Field(default=Decimal("0.006"), ge=0)
    ai_price_transcription_input_per_million_tokens: Decimal = Field(default=Decimal("1.25"), ge=0)
    ai_price_transcription_output_per_million_tokens: Decimal = Field(default=Decimal("5.00"), ge=0)
    ai_daily_spend_cap_usd: Decimal = Field(default=Decimal("20"), ge=0)

    @property
    def enabled(self) -> bool:
        # An empty OPENAI_API_KEY= in an env file means "off", not "send an empty key".
        return self.openai_api_key is not None and bool(self.openai_api_key.get_secret_value())


def load_settings(settings_class: type[S], **overrides: object) -> S:
    """Read `settings_class` from the environment; on error, name each offending variable."""
    try:
        return settings_class(**overrides)
    except ValidationError as error:
        problems = []
        for item in error.errors():
            variable = "_".join(str(part) for part in item["loc"]).upper() or "configuration"
            problems.append(f"{variable}: {item['msg']}")
        raise ConfigurationError(
            f"{settings_class.__name__} is not configured correctly:\n  "
            + "\n  ".join(problems)
            + "\nSee .env.example for every setting."
        ) from None
