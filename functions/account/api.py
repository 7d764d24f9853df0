"""DELETE /account and GET /account/export: the signed-in user deletes their account or takes a copy of it.

Deleting is confirmed by the account's email in the body ({"confirm": "<email>"}): a valid access token alone (a
stolen one, a shared device) must not be enough to erase an account. A deletion whose Stripe or Storage step fails
is accepted all the same (202): it is recorded, nothing is half-deleted, and the scheduled retry finishes it.
"""

from __future__ import annotations

import base64
import binascii
import json
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import Body, FastAPI, Query
from fastapi.responses import JSONResponse
from pydantic import Field, ValidationError

from functions.account.deletion import Deleter, DeletionState, deleter_from
from functions.account.settings import AccountApiSettings
from shared.auth import CurrentUser, TokenVerifier
from shared.config import load_settings
from shared.db import Database, Freshness, connect, connect_reads
from shared.http import ProblemError, RequestModel, Uuid, create_app, lambda_entrypoint

# An email address is at most 254 characters (RFC 5321); the cursor is a base64 JSON of a timestamp and a uuid.
MAX_CONFIRM_CHARS = 320
MAX_CURSOR_CHARS = 200


class DeleteRequest(RequestModel):
    confirm: str | None = Field(
        default=None, max_length=MAX_CONFIRM_CHARS, description="The account's email address (its id if it has none)"
    )


class AnswersCursor(RequestModel):
    created_at: datetime
    id: Uuid


def encode_cursor(cursor: dict[str, Any] | None) -> str | None:
    return base64.urlsafe_b64encode(json.dumps(cursor).encode()).decode() if cursor else None


def decode_cursor(text: str) -> AnswersCursor:
    try:
        return AnswersCursor.model_validate_json(base64.urlsafe_b64decode(text.encode()))
    except (binascii.Error, ValueError, ValidationError):
        raise ProblemError(400, "Invalid cursor", "pass back the `next` value of the previous page unchanged") from None


def build_app(
    settings: AccountApiSettings, *, database: Database | None = None, deleter: Deleter | None = None
) -> FastAPI:
    app = create_app("Account", description="Deleting the signed-in user's account, and exporting its data.")
    app.state.verifier = TokenVerifier(settings)
    db = database or connect(settings)
    steps = deleter or deleter_from(settings, db)
    # An export may run on the read replica, but only once it has replayed everything committed before the request:
    # a copy of the account must hold the answer its owner just gave.
    exports = connect_reads(settings, db, Freshness.AT_REQUEST)

    @app.delete(
        "/account",
        response_model=DeletionState,
        summary="Delete my account",
        responses={202: {"description": "Recorded; a step failed and is retried (see Retry-After)"}},
    )
    def delete_account(user: CurrentUser, request: Annotated[DeleteRequest | None, Body()] = None) -> JSONResponse:
        if request is None or not request.confirm:
            raise ProblemError(
                400,
                "Confirmation required",
                'deleting an account cannot be undone: send {"confirm": "<the email address of this account>"}',
            )
        state = steps.request(str(user.id), requested_by="user", confirm=request.confirm)
        if state.status == "deleted":
            return JSONResponse(state.model_dump(mode="json"), status_code=200)
        # Nothing for the client to redo: the scheduled retry resumes the deletion; Retry-After says when.
        due = state.next_attempt_at or datetime.now(UTC)
        retry = max(1, round((due - datetime.now(UTC)).total_seconds()))
        return JSONResponse(state.model_dump(mode="json"), status_code=202, headers={"retry-after": str(retry)})

    @app.get("/account/export", summary="Export my data")
    def export_account(
        user: CurrentUser,
        cursor: Annotated[
            str | None, Query(max_length=MAX_CURSOR_CHARS, description="`next` of the previous page")
        ] = None,
    ) -> dict[str, Any]:
        after = decode_cursor(cursor).model_dump(mode="json") if cursor else None
        page = exports.call(
            "service.export_account",
            {"user_id": str(user.id), "answers_after": after, "max_bytes": settings.export_page_bytes},
        )
        page["next"] = encode_cursor(page["next"])
        return page

    return app


handler = lambda_entrypoint(lambda: build_app(load_settings(AccountApiSettings)))
