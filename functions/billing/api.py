"""POST /billing/checkout and POST /billing/portal: Stripe-hosted pages for the signed-in user.

Checkout creates the user's Stripe customer once (idempotently, so two concurrent checkouts share it),
refuses a user who already has a live subscription, and offers the 7-day trial only to a user who never
had one. The subscription itself arrives later through the webhook.
"""

from __future__ import annotations

from typing import Any

import stripe
from fastapi import FastAPI
from pydantic import BaseModel, Field

from functions.billing.settings import BillingApiSettings
from shared.auth import CurrentUser, TokenVerifier
from shared.config import load_settings
from shared.db import Database, connect
from shared.http import ProblemError, RequestModel, create_app, lambda_entrypoint
from shared.stripe_client import stripe_client


class CheckoutRequest(RequestModel):
    plan: str = Field(pattern=r"^[a-z][a-z0-9_]{0,31}$", examples=["monthly"], description="Plan code")


class HostedPage(BaseModel):
    id: str
    url: str


class CheckoutPage(HostedPage):
    trial_days: int


def _stripe_failed(error: stripe.StripeError) -> ProblemError:
    if isinstance(error, stripe.InvalidRequestError):
        return ProblemError(502, "Stripe refused the request", f"{error.user_message or error}")
    return ProblemError(
        503, "Stripe unavailable", "Stripe did not answer; try again shortly", headers={"retry-after": "10"}
    )


def build_app(
    settings: BillingApiSettings, *, database: Database | None = None, stripe_api: stripe.StripeClient | None = None
) -> FastAPI:
    app = create_app("Billing", description="Checkout and billing-portal sessions for the signed-in user.")
    app.state.verifier = TokenVerifier(settings)
    db = database or connect(settings)
    api = stripe_api or stripe_client(settings)

    def customer_for(user: CurrentUser, context: dict[str, Any]) -> str:
        if context["stripe_customer_id"]:
            return context["stripe_customer_id"]
        created = api.v1.customers.create(
            {"email": context["email"], "metadata": {"user_id": str(user.id)}}
            if context["email"]
            else {"metadata": {"user_id": str(user.id)}},
            {"idempotency_key": f"customer:{user.id}:replacing:{context['replaces_customer'] or 'none'}"},
        )
        linked = db.call("service.link_billing_customer", {"user_id": str(user.id), "stripe_customer_id": created.id})
        return linked["stripe_customer_id"]

    @app.post("/billing/checkout", status_code=201, response_model=CheckoutPage, summary="Start a subscription")
    def checkout(request: CheckoutRequest, user: CurrentUser) -> CheckoutPage:
        context = db.call("service.checkout_context", {"user_id": str(user.id), "plan_code": request.plan})
        subscription_data: dict[str, Any] = {"metadata": {"user_id": str(user.id)}}
        if context["trial_days"]:
            subscription_data["trial_period_days"] = context["trial_days"]
        try:
            session = api.v1.checkout.sessions.create(
                {
                    "mode": "subscription",
                    "customer": customer_for(user, context),
                    "line_items": [{"price": context["price_id"], "quantity": 1}],
                    "client_reference_id": str(user.id),
                    "subscription_data": subscription_data,
                    "success_url": str(settings.checkout_success_url),
                    "cancel_url": str(settings.checkout_cancel_url),
                }
            )
        except stripe.StripeError as error:
            raise _stripe_failed(error) from None
        return CheckoutPage(id=session.id, url=session.url or "", trial_days=context["trial_days"])

    @app.post("/billing/portal", status_code=201, response_model=HostedPage, summary="Manage the subscription")
    def portal(user: CurrentUser) -> HostedPage:
        customer = db.call("service.billing_customer", {"user_id": str(user.id)})["stripe_customer_id"]
        try:
            session = api.v1.billing_portal.sessions.create(
                {"customer": customer, "return_url": str(settings.portal_return_url)}
            )
        except stripe.StripeError as error:
            raise _stripe_failed(error) from None
        return HostedPage(id=session.id, url=session.url)

    return app


handler = lambda_entrypoint(lambda: build_app(load_settings(BillingApiSettings)))
