"""Settings of the evaluation functions (see .env.example): the HTTP API that queues, the SQS worker that grades."""

from __future__ import annotations

from pathlib import Path
from typing import Self

from pydantic import AnyHttpUrl, Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from shared.config import AiSettings, AuthSettings, DatabaseSettings


class QueueSettings(BaseSettings):
    """Where requested evaluations go: an SQS queue, or (unset) a queue inside this process for local runs."""

    model_config = SettingsConfigDict(extra="ignore", frozen=True)

    evaluation_queue_url: AnyHttpUrl | None = None
    # SendMessage is on the user's request path: fail fast (and refund) rather than hang the request.
    evaluation_queue_timeout_seconds: float = Field(default=5, gt=0, le=25)


class StorageSettings(BaseSettings):
    """Where recorded answers are read: a local directory (<dir>/<bucket>/<path>), else Supabase Storage."""

    model_config = SettingsConfigDict(extra="ignore", frozen=True)

    local_storage_dir: Path | None = None
    supabase_url: AnyHttpUrl | None = None
    supabase_service_role_key: SecretStr | None = None
    storage_timeout_seconds: float = Field(default=20, gt=0, le=120)
    # Checked before the transcription call: the answers bucket's own limit (10 MB, about ten minutes of
    # compressed speech; the API itself refuses over 25 MB).
    max_audio_bytes: int = Field(default=10 * 1024 * 1024, ge=1, le=25 * 1024 * 1024)

    @model_validator(mode="after")
    def _storage_is_configured(self) -> Self:
        if self.local_storage_dir is None and (self.supabase_url is None or self.supabase_service_role_key is None):
            raise ValueError(
                "set SUPABASE_URL and SUPABASE_SERVICE_ROLE_KEY to read recordings from Supabase Storage, "
                "or LOCAL_STORAGE_DIR for a local directory"
            )
        return self


class EvaluationApiSettings(DatabaseSettings, AuthSettings, QueueSettings):
    pass


class EvaluationWorkerSettings(DatabaseSettings, AiSettings, StorageSettings):
    # The SQS redrive policy's maxReceiveCount: on this receive a transient failure is final (see worker.py).
    evaluation_max_receives: int = Field(default=3, ge=1, le=1000)
    # Records of one batch graded at once; each mostly waits on the AI service. 1 processes them in turn.
    evaluation_concurrency: int = Field(default=10, ge=1, le=100)
    # A typed answer is at most 20,000 characters (the responses table); transcripts are cut to the same.
    evaluation_max_answer_chars: int = Field(default=20_000, ge=100, le=100_000)
