"""Settings of the scheduled analytics function (see .env.example)."""

from __future__ import annotations

from pydantic import Field

from shared.config import DatabaseSettings


class AnalyticsSettings(DatabaseSettings):
    # UTC days re-aggregated on every run, today included: late data (answers scored after midnight, webhooks
    # delivered late) is picked up as long as it lands within this window.
    analytics_trailing_days: int = Field(default=2, ge=1, le=31)
    # A day's per-user aggregation runs as this many shards side by side, each on its own connection, beside the
    # platform metrics: a busy day is CPU-bound, so shards beyond the database's cores gain nothing.
    analytics_user_shards: int = Field(default=2, ge=1, le=64)
    # Connections: the shards plus the platform metrics run at once (fewer connections run them in turn).
    db_pool_size: int = Field(default=3, ge=1, le=50)
    # Housekeeping limits, passed to service.run_maintenance (its defaults apply to those left unset).
    maintenance_policy: dict[str, int] = Field(default_factory=dict)
    # Answers are archived a whole UTC month at a time once the month is this many months old (retention by
    # partition, functions/analytics/retention.py); the owner still reads them (public.response_history).
    response_retention_months: int = Field(default=12, ge=1, le=120)
