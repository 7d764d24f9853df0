"""Settings of the questions function (see .env.example)."""

from __future__ import annotations

from pydantic import Field

from shared.config import AiSettings, AuthSettings, DatabaseSettings


class QuestionsSettings(DatabaseSettings, AuthSettings, AiSettings):
    # Generated beyond the deficit, so the next request for the bucket is served from the bank.
    question_prefetch: int = Field(default=3, ge=0, le=10)
    # How long a request waits for another request's generation of the same bucket before serving what exists.
    generation_wait_seconds: float = Field(default=20, ge=0, le=60)
