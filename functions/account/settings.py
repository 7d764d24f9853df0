"""Settings of the account functions (see .env.example): the HTTP API (delete, export) and the scheduled retry."""

from __future__ import annotations

from pathlib import Path
from typing import Self

from pydantic import Field, model_validator

from shared.config import AuthSettings, DatabaseSettings
from shared.stripe_client import StripeSettings


class AccountSettings(DatabaseSettings, StripeSettings):
    # Recordings: Supabase Storage with the service key, or (local runs) a directory <dir>/answers/<user_id>/...
    local_storage_dir: Path | None = None
    storage_timeout_seconds: float = Field(default=10, gt=0, le=60)

    @model_validator(mode="after")
    def _storage_is_configured(self) -> Self:
        if self.local_storage_dir is None and (self.supabase_url is None or self.supabase_service_role_key is None):
            raise ValueError(
                "set SUPABASE_URL and SUPABASE_SERVICE_ROLE_KEY to delete recordings from Supabase Storage, "
                "or LOCAL_STORAGE_DIR for a local directory"
            )
        return self


class AccountApiSettings(AccountSettings, AuthSettings):
    # Answers per export page are cut at this many bytes of JSON: the page must fit Lambda's 6 MB response.
    export_page_bytes: int = Field(default=4_000_000, ge=10_000, le=5_000_000)


class AccountRetrySettings(AccountSettings):
    # Pending deletions resumed per scheduled run (each is a few Stripe and Storage calls).
    account_retry_batch: int = Field(default=50, ge=1, le=500)
