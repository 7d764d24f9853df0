"""POST /stripe/webhook: Stripe's events, verified, applied exactly once, in order.

Verify the signature on the raw body, turn the event into a subscription snapshot (from the event itself,
or read fresh from Stripe's API where the event does not carry the subscription), and hand both to
service.apply_stripe_event, which records the event id in the same transaction as its effects. Anything
transient (database or Stripe down) answers 5xx so Stripe delivers the event again.
"""

from __future__ import annotations

import json
import logging
import re
from datetime import UTC, datetime
from typing import Any

import stripe
from fastapi import FastAPI, Request
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool

from functions.billing.settings import WebhookSettings
from functions.billing.stripe_api import StripeUnavailableError, fresh_snapshot
from functions.billing.stripe_objects import (
    DELIVERY,
    HANDLED_EVENTS,
    INVOICE_EVENTS,
    SUBSCRIPTION_EVENTS,
    CheckoutSession,
    Customer,
    StripeEvent,
    Subscription,
    UnreadableObjectError,
    check_object,
    invoice_subscription_id,
    subscription_snapshot,
)
from shared.config import load_settings
from shared.db import Database, DatabaseError, connect
from shared.http import ProblemError, create_app, lambda_entrypoint
from shared.metrics import Metric, emit
from shared.stripe_client import STRIPE_API_VERSION, stripe_client

log = logging.getLogger("billing.webhook")

# The delivery as the OpenAPI document describes it: the handler reads the raw body (the signature covers its
# exact bytes), so FastAPI cannot derive it from a parameter. The body's schema is DELIVERY's, added to the document
# when it is first asked for (see document_delivery).
DELIVERY_OPENAPI: dict[str, Any] = {
    "parameters": [
        {
            "name": "Stripe-Signature",
            "in": "header",
            "required": True,
            "description": "t=<unix time>,v1=<HMAC-SHA256 of '<t>.<body>' under the endpoint's signing secret>",
            "schema": {"type": "string"},
        }
    ],
}
DELIVERY_DESCRIPTION = (
    f"A Stripe event. Each event type billing acts on must carry the object it reads, as described here for API "
    f"version {STRIPE_API_VERSION}; other types are recorded and acknowledged. An event of another API version "
    "whose object lacks what billing reads, or one holding a NUL character (`\\u0000`, which the database cannot "
    "store), is recorded as unreadable with an operator alert and acknowledged (200): Stripe would only deliver the "
    "same bytes again."
)

# A JSON `\u0000` escape, not one whose backslash is itself escaped (`\\u0000` is the text "\u0000").
_NUL_ESCAPE = re.compile(r"(?<!\\)((?:\\\\)*)\\u0000")


def document_delivery(app: FastAPI, path: str) -> None:
    """Puts DELIVERY's schema into the app's OpenAPI document as `path`'s body, when the document is first built
    (deriving it at import would add to every cold start)."""
    build_document = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            document = build_document()
            schema = DELIVERY.json_schema(ref_template="#/components/schemas/{model}")
            document.setdefault("components", {}).setdefault("schemas", {}).update(schema.pop("$defs"))
            document["paths"][path]["post"]["requestBody"] = {
                "required": True,
                "description": DELIVERY_DESCRIPTION,
                "content": {"application/json": {"schema": schema}},
            }
        return app.openapi_schema  # type: ignore[return-value]

    app.openapi = openapi  # type: ignore[method-assign]


class WebhookProcessor:
    def __init__(self, database: Database, stripe_api: stripe.StripeClient) -> None:
        self.database = database
        self.stripe_api = stripe_api

    def snapshot_for(self, event: StripeEvent) -> dict[str, Any] | None:
        """What the event means for our tables; None for event types we do not act on; {"unreadable": why} for an
        object the shape of the event's API version does not describe."""
        try:
            return self._read(event)
        except (ValidationError, UnreadableObjectError) as error:
            if isinstance(error, ValidationError) and event.api_version in (None, STRIPE_API_VERSION):
                raise  # our own version, malformed: refused (400)
            # Redelivery would bring the same bytes, so a 4xx only ends with the endpoint disabled: recorded with
            # an operator alert instead (service.apply_stripe_event), never silently ignored.
            return {"unreadable": f"{event.type} in API version {event.api_version}: {error}"[:1000]}

    def _read(self, event: StripeEvent) -> dict[str, Any] | None:
        created = datetime.fromtimestamp(event.created, UTC)
        obj = event.data.object
        if event.type in SUBSCRIPTION_EVENTS:
            return subscription_snapshot(Subscription.model_validate(obj), version=created, fresh=False)
        if event.type == "checkout.session.completed":
            session = CheckoutSession.model_validate(obj)
            if session.mode != "subscription" or not session.subscription:
                return None
            return fresh_snapshot(
                self.stripe_api, session.subscription, version=created, user_id=session.client_reference_id
            )
        if event.type in INVOICE_EVENTS:
            subscription_id = invoice_subscription_id(obj, event.api_version)
            if not subscription_id:
                return None
            return fresh_snapshot(self.stripe_api, subscription_id, version=created)
        if event.type == "customer.deleted":
            return {"deleted_customer": Customer.model_validate(obj).id}
        return None

    def process(self, event: StripeEvent, raw: dict[str, Any], *, unreadable: str | None = None) -> dict[str, Any]:
        """Applies the event; `unreadable` says why it is recorded without being read."""
        envelope = {
            "id": event.id,
            "type": event.type,
            "created": datetime.fromtimestamp(event.created, UTC).isoformat(),
            "livemode": event.livemode,
            "api_version": event.api_version,
            "payload": raw,
        }
        snapshot = {"unreadable": unreadable} if unreadable else self.snapshot_for(event)
        result = self.database.call("service.apply_stripe_event", {"event": envelope, "snapshot": snapshot})
        if result["outcome"] == "needs_refresh":
            # Another event of the same second was applied: Stripe's current state decides, not arrival order.
            fresh = fresh_snapshot(
                self.stripe_api,
                snapshot["subscription"]["stripe_subscription_id"],  # type: ignore[index]
                version=datetime.fromtimestamp(event.created, UTC),
            )
            result = self.database.call("service.apply_stripe_event", {"event": envelope, "snapshot": fresh})
        log.info(
            "stripe event",
            extra={"event_id": event.id, "event_type": event.type, "api_version": event.api_version, **result},
        )
        count_event(event.type, str(result["outcome"]))
        return result


def build_app(
    settings: WebhookSettings, *, database: Database | None = None, stripe_api: stripe.StripeClient | None = None
) -> FastAPI:
    app = create_app("Stripe webhook", description="Receives Stripe's events and applies them to billing state.")
    processor = WebhookProcessor(database or connect(settings), stripe_api or stripe_client(settings))
    secret = settings.stripe_webhook_secret.get_secret_value()

    @app.post("/stripe/webhook", summary="Receive a Stripe event", openapi_extra=DELIVERY_OPENAPI)
    async def receive(request: Request) -> dict[str, Any]:
        body = await request.body()
        try:
            return await handle(body, request.headers.get("stripe-signature"))
        except ProblemError as error:
            _log_refusal(body, error.status, f"{error.title}: {error.detail}")
            raise
        except DatabaseError as error:
            _log_refusal(body, error.status, f"{error.title}: {error.detail}")
            raise  # answered in the project's words (shared/http.py); the database's are in the log above
        except Exception as error:
            _log_refusal(body, 500, f"{type(error).__name__}: {error}")
            raise

    document_delivery(app, "/stripe/webhook")

    async def handle(body: bytes, signature: str | None) -> dict[str, Any]:
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError:
            # Stripe sends UTF-8 JSON. Other bytes cannot even be verified (the library signs text), and calling
            # them a bad signature would send the operator off to check the secret.
            raise ProblemError(400, "Malformed event", "the body is not UTF-8 text, so not a Stripe event") from None
        try:
            stripe.WebhookSignature.verify_header(
                text,
                signature,
                secret,
                tolerance=settings.stripe_webhook_tolerance_seconds,
            )
        except stripe.SignatureVerificationError as error:
            raise ProblemError(
                400,
                "Invalid signature",
                f"{error.user_message or error}. Check STRIPE_WEBHOOK_SECRET matches this endpoint's signing secret.",
            ) from None
        # PostgreSQL cannot store a NUL in text or jsonb: the recorded copy has U+FFFD in its place.
        storable, nul_escapes = _NUL_ESCAPE.subn(r"\1\\ufffd", text)
        try:
            raw = json.loads(storable)
            event = StripeEvent.model_validate(raw)
        except ValidationError as error:
            raise ProblemError(400, "Malformed event", f"the body is not a Stripe event: {_reasons(error)}") from None
        except (ValueError, RecursionError) as error:  # RecursionError: JSON nested too deep
            raise ProblemError(400, "Malformed event", f"the body is not JSON: {error}") from None
        try:
            check_object(raw)
        except ValidationError as error:
            raise ProblemError(
                400, "Malformed event", f"{event.type} does not carry the expected object: {_reasons(error)}"
            ) from None
        unreadable = (
            f"{event.type} holds a NUL character (\\u0000), which the database cannot store" if nul_escapes else None
        )
        try:
            result = await run_in_threadpool(processor.process, event, raw, unreadable=unreadable)
        except ValidationError as error:
            raise ProblemError(
                400, "Malformed event", f"{event.type} does not carry the expected object: {_reasons(error)}"
            ) from None
        except stripe.InvalidRequestError as error:
            raise ProblemError(
                422,
                "Unknown to Stripe",
                f"{error.user_message or error}. Is STRIPE_SECRET_KEY from the same account and mode as the webhook?",
            ) from None
        except StripeUnavailableError as error:
            raise ProblemError(
                503,
                "Stripe unavailable",
                f"{error}; Stripe will deliver the event again",
                headers={"retry-after": "30"},
            ) from None
        return {"received": True, **result}

    return app


def _reasons(error: ValidationError, shown: int = 5) -> str:
    """What a validation error names, one `field: problem` each, without pydantic's links and echoed input."""
    items = [f"{'.'.join(str(p) for p in e['loc']) or 'body'}: {e['msg']}" for e in error.errors(include_url=False)]
    more = f" (and {len(items) - shown} more)" if len(items) > shown else ""
    return "; ".join(items[:shown]) + more


def _log_refusal(body: bytes, status: int, reason: str) -> None:
    """Every non-2xx answer, with the event it was about (its id unverified when the signature failed)."""
    event_id = event_type = None
    try:
        parsed = json.loads(body)
    except (ValueError, RecursionError):
        parsed = None
    if isinstance(parsed, dict):
        event_id, event_type = (v if isinstance(v, str) else None for v in (parsed.get("id"), parsed.get("type")))
    log.log(
        logging.ERROR if status >= 500 else logging.WARNING,
        "stripe event refused",
        extra={"status": status, "reason": reason[:2000], "event_id": event_id, "event_type": event_type},
    )
    count_event(event_type, "failed" if status >= 500 else "refused")


def count_event(event_type: str | None, outcome: str) -> None:
    """Metric WebhookEvents by event type and outcome (the SQL's outcome; `refused` for a 4xx, `failed` for a
    5xx), and by outcome alone (what the 5xx alarm watches). Types we do not act on, and the unverified type of a
    refused body, count as `other`: the dimension stays a short fixed list whatever a sender puts there."""
    emit(
        [Metric("WebhookEvents", 1)],
        {"EventType": event_type if event_type in HANDLED_EVENTS else "other", "Outcome": outcome},
        aggregate=[["Outcome"]],
    )


handler = lambda_entrypoint(lambda: build_app(load_settings(WebhookSettings)))
