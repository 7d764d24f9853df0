"""Settings of the scheduled backup function (see .env.example)."""

from __future__ import annotations

from pydantic import Field, SecretStr

from shared.config import DatabaseSettings


class BackupSettings(DatabaseSettings):
    # pg_dump needs a session (it exports and holds a snapshot): the project's direct connection or its session
    # pooler (port 5432), not the transaction pooler DATABASE_URL names in production. Unset: DATABASE_URL.
    backup_database_url: SecretStr | None = None
    backup_bucket: str = Field(min_length=3, max_length=63, pattern=r"^[a-z0-9][a-z0-9.-]+[a-z0-9]$")
    backup_prefix: str = Field(default="logical/", max_length=200, pattern=r"^([A-Za-z0-9!_.*'()-]+/)+$")
    # Where the dump is written before its upload: Lambda's ephemeral storage (ephemeralStorageSize).
    backup_work_dir: str = "/tmp"

    def dump_url(self) -> str:
        url = self.backup_database_url or self.database_url
        if url is None:
            raise ValueError("set BACKUP_DATABASE_URL (or DATABASE_URL) to the database to back up")
        return url.get_secret_value()
