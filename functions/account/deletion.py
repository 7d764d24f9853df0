"""Deleting an account, resumably (GDPR article 17):

    service.request_account_deletion      the request is recorded first (private.account_deletions)
    Stripe: cancel live subscriptions, delete the customer      -> service.record_account_deletion_step('stripe')
    Storage: delete <user_id>/... in the answers bucket          -> service.record_account_deletion_step('storage')
    service.purge_account_answers         the answers, archived then live, 1,000 rows a transaction, each
                                          followed by a pause as long as it took
    service.complete_account_deletion     the auth user, every row it owns (one transaction), a hashed tombstone

A step that fails is recorded with its error and a retry time, and the deletion stops there: nothing in the database
is deleted until Stripe and Storage are done, and the scheduled retry (retry.py) or a repeated request resumes from
the first step not done. Every step is safe to repeat.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any, Literal

import stripe
from pydantic import BaseModel

from functions.account.billing import BillingStepError, end_billing
from functions.account.settings import AccountSettings
from functions.account.storage import LocalRecordings, RecordingStore, StorageStepError, SupabaseRecordings
from shared.db import Database
from shared.stripe_client import stripe_client

log = logging.getLogger("account.deletion")


class DeletionState(BaseModel):
    status: Literal["pending", "deleted"]
    requested_at: datetime
    stripe_done: bool
    storage_done: bool
    attempts: int
    last_error: str | None = None
    next_attempt_at: datetime | None = None


class Deleter:
    """The outside services a deletion needs, and the steps in order."""

    def __init__(
        self,
        database: Database,
        stripe_api: stripe.StripeClient,
        recordings: RecordingStore,
        pause: Callable[[float], None] = time.sleep,
    ) -> None:
        self.database, self.stripe_api, self.recordings, self.pause = database, stripe_api, recordings, pause

    def request(
        self, user_id: str, *, requested_by: Literal["user", "operator"], confirm: str | None = None
    ) -> DeletionState:
        state = self.database.call(
            "service.request_account_deletion",
            {"user_id": user_id, "requested_by": requested_by, "confirm": confirm},
        )
        return self.resume(user_id, state)

    def resume(self, user_id: str, state: dict[str, Any]) -> DeletionState:
        if state["status"] == "pending" and not state["stripe_done"]:
            try:
                end_billing(self.stripe_api, state["subscriptions"], state["customers"])
            except BillingStepError as error:
                return self._failed(user_id, "stripe", str(error))
            state = self._done(user_id, "stripe")
        if state["status"] == "pending" and not state["storage_done"]:
            try:
                self.recordings.delete_folder(user_id)
            except StorageStepError as error:
                return self._failed(user_id, "storage", str(error))
            state = self._done(user_id, "storage")
        if state["status"] == "pending":
            # Answers first, in short transactions: the final one then holds only what is left of the account.
            # Each batch writes a burst of WAL that other users' commits must flush behind theirs; a pause as long
            # as the batch lets the WAL writer catch up, so their commits overlap at most half the purge.
            while True:
                started = time.monotonic()
                if not self.database.call("service.purge_account_answers", {"user_id": user_id}):
                    break
                self.pause(time.monotonic() - started)
            state = self.database.call("service.complete_account_deletion", {"user_id": user_id})
            log.info("account deleted", extra={"attempts": state["attempts"]})
        return DeletionState.model_validate(state)

    def _done(self, user_id: str, step: str) -> dict[str, Any]:
        return self.database.call("service.record_account_deletion_step", {"user_id": user_id, "step": step})

    def _failed(self, user_id: str, step: str, error: str) -> DeletionState:
        # The user id stays out of the logs (it is personal data once the account is gone); the step and error do not.
        log.warning("account deletion step failed", extra={"step": step, "error": error})
        state = self.database.call(
            "service.record_account_deletion_step", {"user_id": user_id, "step": step, "error": error}
        )
        return DeletionState.model_validate(state)


def recordings_from(settings: AccountSettings) -> RecordingStore:
    if settings.local_storage_dir is not None:
        return LocalRecordings(settings.local_storage_dir)
    # AccountSettings refuses to load without these when there is no local directory.
    assert settings.supabase_url is not None
    assert settings.supabase_service_role_key is not None
    return SupabaseRecordings(
        str(settings.supabase_url),
        settings.supabase_service_role_key.get_secret_value(),
        timeout=settings.storage_timeout_seconds,
    )


def deleter_from(settings: AccountSettings, database: Database) -> Deleter:
    return Deleter(database, stripe_client(settings), recordings_from(settings))
