"""Settings of the scheduled analytics function (see .env.example)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from shared.config import DatabaseSettings

# Raw AI calls kept (months): the same month of last year stays whole; the daily figures live on in analytics_daily.
AI_USAGE_RETENTION_MONTHS = 13


class MaintenancePolicy(BaseModel):
    """The housekeeping limits service.run_maintenance reads; an unset one keeps its default there. Any other key
    is refused: it would be ignored (retention by age in days went with migration 17: see the *_RETENTION_MONTHS
    settings)."""

    model_config = ConfigDict(extra="forbid")

    abandon_after_hours: int | None = None
    stuck_evaluation_minutes: int | None = None
    partition_months_ahead: int | None = None
    stripe_event_retention_days: int | None = None
    usage_counter_retention_days: int | None = None


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
    maintenance_policy: MaintenancePolicy = Field(default_factory=MaintenancePolicy)
    # Served questions and answers are archived a whole UTC month at a time once the month is this many months old
    # (retention by partition, functions/analytics/retention.py); the owner still reads them (response_history,
    # session_summaries, the export).
    response_retention_months: int = Field(default=12, ge=1, le=120)
    # AI calls (public.ai_usage) are dropped a whole UTC month at a time once the month is this many months old.
    ai_usage_retention_months: int = Field(default=AI_USAGE_RETENTION_MONTHS, ge=1, le=120)
