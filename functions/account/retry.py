"""The scheduled retry of pending account deletions (EventBridge): each due one resumes at its first step not done.

A deletion whose step fails again is rescheduled by the database (1 minute doubling to 6 hours); the run fails only
if the database itself cannot be reached, so a single unreachable service does not alarm on every run. Pending
deletions older than a day are what the operator watches (docs/operations.md).
"""

from __future__ import annotations

import os
from typing import Any

from functions.account.deletion import Deleter, deleter_from
from functions.account.settings import AccountRetrySettings
from shared.config import load_settings
from shared.db import Database, connect
from shared.logs import configure_logging


def run_retries(deleter: Deleter, *, batch: int) -> dict[str, int]:
    outcomes = {"deleted": 0, "pending": 0}
    for state in deleter.database.call("service.due_account_deletions", {"max_count": batch}):
        outcomes[deleter.resume(state["user_id"], state).status] += 1
    return outcomes


_database: Database | None = None


def handler(event: dict[str, Any], context: Any) -> dict[str, int]:
    global _database
    configure_logging(os.environ.get("LOG_LEVEL", "INFO"))
    settings = load_settings(AccountRetrySettings)
    _database = _database or connect(settings)
    return run_retries(deleter_from(settings, _database), batch=settings.account_retry_batch)
