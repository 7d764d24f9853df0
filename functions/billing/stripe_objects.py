"""The parts of Stripe's objects billing reads (API version pinned in shared/stripe_client.py), as pydantic models,
and the normalized subscription snapshot service.apply_stripe_event takes."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, TypeAdapter

from shared.stripe_client import STRIPE_API_VERSION

# The version (2025-03-31.basil) that moved an invoice's subscription from `invoice.subscription` to
# `invoice.parent.subscription_details.subscription`. Events keep the version of the endpoint or account that
# produced them, so both shapes arrive; the event's `api_version` says which one it is.
INVOICE_PARENT_SINCE = "2025-03-31"

# Stripe types its JSON exactly: anything else (`"livemode": 0`, `"cancel_at_period_end": "yes"`) is refused, not
# coerced. Objects carry far more than billing reads; the rest is ignored.
_STRIPE = ConfigDict(extra="ignore", strict=True)

# The latest second `datetime` represents (9999-12-31T23:59:59Z): a later one is refused as malformed here,
# rather than failing (a 500) where the snapshot converts it.
LATEST_UNIX_TIME = 253_402_300_799
UnixTime = Annotated[int, Field(ge=0, le=LATEST_UNIX_TIME)]


class StripeEventData(BaseModel):
    model_config = _STRIPE
    object: dict[str, Any]
    previous_attributes: dict[str, Any] | None = None


class StripeEvent(BaseModel):
    model_config = _STRIPE
    id: str
    type: str
    created: UnixTime
    livemode: bool = False
    api_version: str | None = None
    data: StripeEventData


class Price(BaseModel):
    model_config = _STRIPE
    id: str
    lookup_key: str | None = None


class SubscriptionItem(BaseModel):
    model_config = _STRIPE
    # Before API 2020-08-27 an item carried only its `plan` (same id, no lookup key).
    price: Price | None = None
    plan: Price | None = None
    # Since API 2025-03-31 the billing period lives on the item.
    current_period_start: UnixTime | None = None
    current_period_end: UnixTime | None = None


class SubscriptionItems(BaseModel):
    model_config = _STRIPE
    data: list[SubscriptionItem]


# Every status Stripe gives a subscription (public.subscription_status has the same).
SubscriptionStatus = Literal[
    "incomplete", "incomplete_expired", "trialing", "active", "past_due", "canceled", "unpaid", "paused"
]


class Subscription(BaseModel):
    model_config = _STRIPE
    id: str
    customer: str
    status: SubscriptionStatus
    created: UnixTime | None = None
    items: SubscriptionItems
    metadata: dict[str, str] = {}
    trial_start: UnixTime | None = None
    trial_end: UnixTime | None = None
    cancel_at_period_end: bool = False
    canceled_at: UnixTime | None = None
    ended_at: UnixTime | None = None
    # Where older API versions kept the period; read only when the item has none.
    current_period_start: UnixTime | None = None
    current_period_end: UnixTime | None = None


class CheckoutSession(BaseModel):
    model_config = _STRIPE
    id: str
    mode: str
    customer: str | None = None
    subscription: str | None = None
    client_reference_id: str | None = None


class InvoiceSubscriptionDetails(BaseModel):
    model_config = _STRIPE
    subscription: str | None = None


class InvoiceParent(BaseModel):
    model_config = _STRIPE
    subscription_details: InvoiceSubscriptionDetails | None = None


class Invoice(BaseModel):
    model_config = _STRIPE
    id: str
    customer: str | None = None
    parent: InvoiceParent | None = None
    # Before 2025-03-31.basil: the subscription's id (or the expanded subscription).
    subscription: str | dict[str, Any] | None = None


class UnreadableObjectError(ValueError):
    """The event's object lacks what its API version's shape must carry."""


def uses_invoice_parent(api_version: str | None) -> bool:
    # An event without a version (only hand-made ones) is taken to be of the pinned one.
    return (api_version or STRIPE_API_VERSION)[:10] >= INVOICE_PARENT_SINCE


def invoice_subscription_id(raw: dict[str, Any], api_version: str | None) -> str | None:
    """The id of the subscription an invoice bills, from the shape of the event's API version; None for an
    invoice of no subscription. A field the shape must carry and the object lacks is an UnreadableObjectError."""
    invoice = Invoice.model_validate(raw)
    if uses_invoice_parent(api_version):
        if "parent" not in raw:
            raise UnreadableObjectError(f"invoice {invoice.id} has no `parent` (API {api_version})")
        details = invoice.parent.subscription_details if invoice.parent else None
        return details.subscription if details else None
    if "subscription" not in raw:
        raise UnreadableObjectError(f"invoice {invoice.id} has no `subscription` (API {api_version})")
    if isinstance(invoice.subscription, dict):
        expanded = invoice.subscription.get("id")
        return expanded if isinstance(expanded, str) else None
    return invoice.subscription


class Customer(BaseModel):
    model_config = _STRIPE
    id: str


# --- The events billing acts on, each with the object it reads ----------------------------------------------------

SubscriptionEventType = Literal[
    "customer.subscription.created",
    "customer.subscription.updated",
    "customer.subscription.deleted",
    "customer.subscription.paused",
    "customer.subscription.resumed",
    "customer.subscription.trial_will_end",
]
InvoiceEventType = Literal["invoice.paid", "invoice.payment_failed", "invoice.payment_action_required"]
SUBSCRIPTION_EVENTS = frozenset(get_args(SubscriptionEventType))
INVOICE_EVENTS = frozenset(get_args(InvoiceEventType))
HANDLED_EVENTS = SUBSCRIPTION_EVENTS | INVOICE_EVENTS | {"checkout.session.completed", "customer.deleted"}


# An event of the pinned API version, or of none (hand-made): what the document describes type by type.
PinnedVersion = Literal[STRIPE_API_VERSION] | None  # type: ignore[valid-type]


class SubscriptionEventData(StripeEventData):
    object: Subscription


class SubscriptionEvent(StripeEvent):
    type: SubscriptionEventType
    api_version: PinnedVersion = None
    data: SubscriptionEventData


class CheckoutSessionEventData(StripeEventData):
    object: CheckoutSession


class CheckoutSessionCompletedEvent(StripeEvent):
    type: Literal["checkout.session.completed"]
    api_version: PinnedVersion = None
    data: CheckoutSessionEventData


class InvoiceEventData(StripeEventData):
    object: Invoice


class InvoiceEvent(StripeEvent):
    type: InvoiceEventType
    api_version: PinnedVersion = None
    data: InvoiceEventData


class CustomerEventData(StripeEventData):
    object: Customer


class CustomerDeletedEvent(StripeEvent):
    type: Literal["customer.deleted"]
    api_version: PinnedVersion = None
    data: CustomerEventData


class OtherEvent(StripeEvent):
    """Any other event type: recorded and acknowledged, its object not read."""

    type: Annotated[str, Field(json_schema_extra={"not": {"enum": sorted(HANDLED_EVENTS)}})]
    api_version: PinnedVersion = None


class OtherVersionEvent(StripeEvent):
    """An event of another API version: where billing acts on its type, its object is read by that version's shape;
    one that shape does not describe is recorded as unreadable (an operator alert) and acknowledged."""

    api_version: Annotated[str, Field(json_schema_extra={"not": {"const": STRIPE_API_VERSION}})]


def _event_kind(event: Any) -> str:
    def member(name: str) -> Any:
        return event.get(name) if isinstance(event, dict) else getattr(event, name, None)

    if member("api_version") not in (None, STRIPE_API_VERSION):
        return "other version"
    kind = member("type")
    return kind if isinstance(kind, str) and kind in HANDLED_EVENTS else "other"


# A delivery as the webhook's OpenAPI document describes it: the envelope, and for each event type billing acts on
# in the pinned API version, the object it reads. Grouped event types share their model: the discriminator maps
# each type to it, and an event of another version to OtherVersionEvent.
_KINDS: dict[str, type[StripeEvent]] = {
    **dict.fromkeys(SUBSCRIPTION_EVENTS, SubscriptionEvent),
    **dict.fromkeys(INVOICE_EVENTS, InvoiceEvent),
    "checkout.session.completed": CheckoutSessionCompletedEvent,
    "customer.deleted": CustomerDeletedEvent,
    "other": OtherEvent,
    "other version": OtherVersionEvent,
}
StripeDelivery = Annotated[
    Annotated[SubscriptionEvent, Tag(SubscriptionEvent.__name__)]
    | Annotated[InvoiceEvent, Tag(InvoiceEvent.__name__)]
    | Annotated[CheckoutSessionCompletedEvent, Tag(CheckoutSessionCompletedEvent.__name__)]
    | Annotated[CustomerDeletedEvent, Tag(CustomerDeletedEvent.__name__)]
    | Annotated[OtherEvent, Tag(OtherEvent.__name__)]
    | Annotated[OtherVersionEvent, Tag(OtherVersionEvent.__name__)],
    Discriminator(lambda event: _KINDS[_event_kind(event)].__name__),
]
DELIVERY: TypeAdapter[StripeEvent] = TypeAdapter(StripeDelivery)


def check_object(raw: dict[str, Any]) -> None:
    """Raises ValidationError unless the event carries, for its type and API version, the object the document
    describes (DELIVERY)."""
    _KINDS[_event_kind(raw)].model_validate(raw)


def _time(seconds: int | None) -> str | None:
    return datetime.fromtimestamp(seconds, UTC).isoformat() if seconds is not None else None


def subscription_snapshot(
    subscription: Subscription, *, version: datetime, fresh: bool, user_id: str | None = None
) -> dict[str, Any]:
    """The snapshot service.apply_stripe_event applies: Stripe's subscription, flattened to our columns."""
    item = subscription.items.data[0] if subscription.items.data else None
    price = (item.price or item.plan) if item else None
    return {
        "version": version.isoformat(),
        "fresh": fresh,
        "user_id": user_id,
        "subscription": {
            "stripe_subscription_id": subscription.id,
            "stripe_customer_id": subscription.customer,
            "status": subscription.status,
            "price_id": price.id if price else None,
            "price_lookup_key": price.lookup_key if price else None,
            "trial_start": _time(subscription.trial_start),
            "trial_end": _time(subscription.trial_end),
            "current_period_start": _time(
                item.current_period_start if item and item.current_period_start else subscription.current_period_start
            ),
            "current_period_end": _time(
                item.current_period_end if item and item.current_period_end else subscription.current_period_end
            ),
            "cancel_at_period_end": subscription.cancel_at_period_end,
            "canceled_at": _time(subscription.canceled_at),
            "ended_at": _time(subscription.ended_at),
            "user_id": subscription.metadata.get("user_id"),
            "created": _time(subscription.created),
        },
    }
