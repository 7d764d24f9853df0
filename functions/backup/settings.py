"""Settings of the scheduled backup function (see .env.example)."""

from __future__ import annotations

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class BackupSettings(BaseSettings):
    model_config = SettingsConfigDict(extra="ignore", frozen=True)

    # pg_dump needs a session (it exports and holds a snapshot): the project's direct connection or its session
    # pooler (port 5432), not the transaction pooler the other functions use.
    backup_database_url: SecretStr
    backup_bucket: str = Field(min_length=3, max_length=63, pattern=r"^[a-z0-9][a-z0-9.-]+[a-z0-9]$")
    backup_prefix: str = Field(default="logical/", max_length=200, pattern=r"^([A-Za-z0-9!_.*'()-]+/)*$")
    # Where the dump is written before its upload: Lambda's ephemeral storage (ephemeralStorageSize).
    backup_work_dir: str = "/tmp"
