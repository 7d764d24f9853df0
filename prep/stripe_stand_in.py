"""A local stand-in for the slice of Stripe's API the platform uses, and a source of signed webhook events.

Tests and the local platform point the real `stripe` library at `StripeStandIn.start()`'s URL. Objects are shaped as
Stripe renders them for API version 2026-10-28.endive: billing periods live on subscription items, an invoice names its
subscription under `parent.subscription_details`, new subscriptions use flexible billing mode. The simulation methods
play what happens on Stripe's side between requests (checkout completed, a trial ending, renewals, dunning) and return
the webhook events Stripe would send; `event_payload` and `sign_payload` turn one into a signed delivery, and
`deliver_events_to` registers a webhook endpoint that receives every event so, as Stripe's do. A checkout session's and
a billing-portal session's `url` are pages a browser can use (prep/stripe_hosted.py): paying, or cancelling at period
end; a plain POST to a checkout session's `url` pays and answers with the events, for clients driving it over HTTP.
"""

from __future__ import annotations

import calendar
import copy
import functools
import hashlib
import hmac
import json
import logging
import queue
import secrets
import socket
import string
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from html import escape
from typing import Any, Concatenate, Literal, ParamSpec, Self
from urllib.parse import parse_qsl

import httpx
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from prep import stripe_hosted

API_VERSION = "2026-10-28.endive"
WEEKLY_PRICE_ID = "price_local_weekly"
MONTHLY_PRICE_ID = "price_local_monthly"
DAY = 86_400
TRIAL_WILL_END_LEAD = 3 * DAY  # Stripe sends customer.subscription.trial_will_end three days before trial_end
# next_payment_attempt after a failed charge; Smart Retries picks its own times, and any later time is realistic
RETRY_DELAY = 3 * DAY

Obj = dict[str, Any]
Handler = Callable[[Obj, str], Obj]
Outcome = Literal["paid", "failed", "action_required"]
P = ParamSpec("P")
log = logging.getLogger("prep.stripe")

_ALPHABET = string.ascii_letters + string.digits
_NO_REQUEST: Obj = {"id": None, "idempotency_key": None}  # events not caused by an API request
_LIVE = ("active", "trialing", "past_due", "unpaid", "paused")  # statuses deleting a customer cancels
_TIMES = "\u00d7"  # the multiplication sign in Stripe's line descriptions: "1 <times> Product (at $9.00 / week)"
# Stripe retries a failed delivery for days; locally a few quick attempts show a misconfigured endpoint soon enough.
DELIVERY_ATTEMPTS = 3
DELIVERY_BACKOFF_SECONDS = 0.5
DELIVERY_TIMEOUT_SECONDS = 30.0
_UPDATABLE = {"cancel_at_period_end", "cancellation_details", "expand", "items", "metadata", "proration_behavior"}


class StripeApiError(Exception):
    """An API error, answered with Stripe's status code and error body."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        kind: str = "invalid_request_error",
        code: str | None = None,
        param: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        error: Obj = {"type": kind, "message": message}
        if code:
            error |= {"code": code, "doc_url": f"https://stripe.com/docs/error-codes/{code.replace('_', '-')}"}
        if param:
            error["param"] = param
        self.body = {"error": error}


def sign_payload(payload: bytes, secret: str, timestamp: int | None = None) -> str:
    """The `Stripe-Signature` header Stripe sends with `payload`: an HMAC-SHA256 of "{t}.{payload}" under `secret`."""
    t = int(time.time()) if timestamp is None else timestamp
    digest = hmac.new(secret.encode(), f"{t}.".encode() + payload, hashlib.sha256).hexdigest()
    return f"t={t},v1={digest}"


def event_payload(event: Obj) -> bytes:
    """The body of a webhook delivery. Stripe pretty-prints it (two-space indent); handlers must verify these exact
    bytes, so a handler that re-serialises the JSON before verifying fails here as it would against Stripe."""
    return json.dumps(event, indent=2, ensure_ascii=False).encode()


@dataclass(frozen=True)
class WebhookEndpoint:
    url: str
    secret: str


class WebhookDelivery:
    """Sends events to one endpoint from a background thread, in the order they happened, each signed with the
    endpoint's secret; a refused or failed delivery is retried a few times, then logged. In the background because a
    webhook handler may call the API back (the stand-in must keep answering meanwhile), as Stripe's deliveries are."""

    def __init__(self, endpoint: WebhookEndpoint) -> None:
        self.endpoint = endpoint
        self._queue: queue.Queue[bytes | None] = queue.Queue()
        self._thread = threading.Thread(target=self._run, name="stripe-webhook-delivery", daemon=True)
        self._thread.start()

    def send(self, payload: bytes) -> None:
        self._queue.put(payload)

    def wait(self) -> None:
        """Until every event sent so far has been delivered or given up on."""
        self._queue.join()

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join(timeout=DELIVERY_TIMEOUT_SECONDS)

    def _run(self) -> None:
        with httpx.Client(timeout=DELIVERY_TIMEOUT_SECONDS) as client:
            while (payload := self._queue.get()) is not None:
                try:
                    for attempt in range(1, DELIVERY_ATTEMPTS + 1):
                        headers = {
                            "content-type": "application/json; charset=utf-8",
                            "stripe-signature": sign_payload(payload, self.endpoint.secret),
                        }
                        try:
                            answer = client.post(self.endpoint.url, content=payload, headers=headers)
                            if answer.is_success:
                                break
                            problem = f"answered {answer.status_code}: {answer.text[:300]}"
                        except httpx.HTTPError as error:
                            problem = f"failed: {error}"
                        log.warning("webhook delivery %s (attempt %d of %d)", problem, attempt, DELIVERY_ATTEMPTS)
                        time.sleep(DELIVERY_BACKOFF_SECONDS * attempt)
                finally:
                    self._queue.task_done()
            self._queue.task_done()


def parse_params(pairs: list[tuple[str, str]]) -> Obj:
    """Rebuild the nested params the stripe library form-encodes: `a[b][0][c]=v` and `expand[]=v`."""
    root: Obj = {}
    for key, value in pairs:
        head, _, rest = key.partition("[")
        tokens = [head, *rest.removesuffix("]").split("][")] if rest else [head]
        node = root
        for token in tokens[:-1]:
            node = node.setdefault(token or str(len(node)), {})
        node[tokens[-1] or str(len(node))] = value
    return _listify(root)


def _listify(node: Any) -> Any:
    if not isinstance(node, dict):
        return node
    items = {key: _listify(value) for key, value in node.items()}
    if items and all(key.isdigit() for key in items):
        return [items[key] for key in sorted(items, key=int)]
    return items


def _id(prefix: str) -> str:
    return f"{prefix}_{''.join(secrets.choice(_ALPHABET) for _ in range(24))}"


def _shape(object_id: str, kind: str, nulls: str, **fields: Any) -> Obj:
    """An object as Stripe renders it: id and object first, then its fields alphabetically. `nulls` names the fields
    that are null in the platform's flows, which keeps the fields that carry meaning readable."""
    return {"id": object_id, "object": kind, **dict(sorted((dict.fromkeys(nulls.split()) | fields).items()))}


def _list(data: list[Obj], url: str) -> Obj:
    return {"object": "list", "data": data, "has_more": False, "total_count": len(data), "url": url}


def _changes(before: Obj, after: Obj) -> Obj:
    """`previous_attributes`: the old value of each changed field; nested hashes keep only their changed keys."""
    changed: Obj = {}
    for key, old in before.items():
        new = after.get(key)
        if old != new:
            changed[key] = _changes(old, new) if isinstance(old, dict) and isinstance(new, dict) else old
    return changed


def _shift(timestamp: int, interval: str, count: int) -> int:
    """`timestamp` moved by `count` intervals; months keep the day, clamped to the month's last day, as Stripe does."""
    if interval in ("day", "week"):
        return timestamp + count * DAY * (7 if interval == "week" else 1)
    moment = datetime.fromtimestamp(timestamp, UTC)
    months = moment.month - 1 + count * (12 if interval == "year" else 1)
    year, month = moment.year + months // 12, months % 12 + 1
    day = min(moment.day, calendar.monthrange(year, month)[1])
    return int(moment.replace(year=year, month=month, day=day).timestamp())


def _period_end(anchor: int, price: Obj, after: int) -> int:
    """The first billing boundary counted from the billing cycle anchor that lies after `after`."""
    recurring, n = price["recurring"], 1
    while (end := _shift(anchor, recurring["interval"], n * recurring["interval_count"])) <= after:
        n += 1
    return end


def _int(value: Any, param: str, default: int) -> int:
    if value is None:
        return default
    try:
        return int(value)
    except (TypeError, ValueError):
        raise StripeApiError(400, f"Invalid integer: {value}", param=param) from None


def _bool(value: Any, param: str) -> bool:
    if value not in ("true", "false"):
        raise StripeApiError(400, f"Invalid boolean: {value}", param=param)
    return value == "true"


def _strings(value: Any) -> list[str]:
    return [value] if isinstance(value, str) else list(value or [])


def _metadata(value: Any) -> dict[str, str]:
    """Metadata from params; an empty value unsets a key, as on Stripe."""
    if value in (None, ""):
        return {}
    if not isinstance(value, dict):
        raise StripeApiError(400, "Invalid object", param="metadata")
    return {key: item for key, item in value.items() if item != ""}


def _emits(
    method: Callable[Concatenate[StripeStandIn, P], object],
) -> Callable[Concatenate[StripeStandIn, P], list[Obj]]:
    """Run a simulation step under the lock; return the events it produced, in the order Stripe sends them."""

    @functools.wraps(method)
    def step(self: StripeStandIn, *args: P.args, **kwargs: P.kwargs) -> list[Obj]:
        with self._lock:
            first = len(self.events)
            method(self, *args, **kwargs)
            return self.events[first:]

    return step


class StripeStandIn:
    """In-memory Stripe: an HTTP API for the `stripe` library, and simulation methods that emit webhook events.

    `now` is the clock every timestamp is read from; `outage = True` makes every API call answer 500; `events` holds
    every event Stripe would have sent so far, including those caused by API calls. Each simulation method changes
    the state and returns the events Stripe would send for that step, in sending order.
    """

    def __init__(self, now: int | None = None) -> None:
        self.base_url: str | None = None
        self._lock = threading.RLock()
        self._delivery: WebhookDelivery | None = None
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._socket: socket.socket | None = None
        self.reset(now)

    def reset(self, now: int | None = None) -> None:
        """Forget every object, event and webhook endpoint and end any outage; the two prices are seeded afresh. Lets
        one running server serve many tests (stopping uvicorn takes ~0.2 s)."""
        self.stop_delivering()
        with self._lock:
            self.now = int(time.time()) if now is None else now
            self.outage = False
            self.events: list[Obj] = []
            self._objects: dict[str, Obj] = {}
            self._deleted: set[str] = set()
            self._checkouts: dict[str, Obj] = {}  # what completing a session creates: prices, subscription_data
            self._idempotent: dict[str, tuple[tuple[str, str, Obj], Obj, str]] = {}
            self._request = _NO_REQUEST
            for price_id, lookup_key, name, amount, interval in (
                (WEEKLY_PRICE_ID, "weekly", "Interview Prep Weekly", 900, "week"),
                (MONTHLY_PRICE_ID, "monthly", "Interview Prep Monthly", 2900, "month"),
            ):
                self._seed_price(price_id, lookup_key, name, amount, interval)

    # -- server ---------------------------------------------------------------------------------------------------

    def start(self) -> str:
        """Serve the API on a free port of 127.0.0.1 from a background thread; return its base URL."""
        if self.base_url:
            return self.base_url
        self._socket = socket.socket()
        # accepted connections inherit this; without it Nagle and delayed ACKs add ~40 ms to every response
        self._socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._socket.bind(("127.0.0.1", 0))
        server = uvicorn.Server(uvicorn.Config(self._app(), log_level="warning", access_log=False, lifespan="off"))
        self._server = server
        self._thread = threading.Thread(
            target=server.run, kwargs={"sockets": [self._socket]}, name="stripe-stand-in", daemon=True
        )
        self._thread.start()
        deadline = time.monotonic() + 10
        while not server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the Stripe stand-in's HTTP server did not start")
            time.sleep(0.01)
        self.base_url = f"http://127.0.0.1:{self._socket.getsockname()[1]}"
        return self.base_url

    def stop(self) -> None:
        self.stop_delivering()
        if self._server and self._thread:
            self._server.should_exit = True
            self._thread.join(timeout=10)
        if self._socket:
            self._socket.close()
        self._server, self._thread, self._socket, self.base_url = None, None, None, None

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def deliver_events_to(self, url: str, secret: str) -> None:
        """From now on send every event to the webhook endpoint at `url`, signed with `secret`, as Stripe sends them to
        a registered endpoint (in the background; `wait_for_deliveries` waits for them)."""
        self.stop_delivering()
        self._delivery = WebhookDelivery(WebhookEndpoint(url, secret))

    def wait_for_deliveries(self) -> None:
        if self._delivery:
            self._delivery.wait()

    def stop_delivering(self) -> None:
        if self._delivery:
            self._delivery.close()
            self._delivery = None

    def advance_clock(self, seconds: int) -> int:
        with self._lock:
            self.now += seconds
            return self.now

    def get(self, object_id: str) -> Obj:
        """A copy of any stored object (customer, price, product, checkout session, subscription, invoice)."""
        with self._lock:
            return copy.deepcopy(self._objects[object_id])

    # -- simulation: what happens on Stripe's side ------------------------------------------------------------------

    @_emits
    def complete_checkout(self, session_id: str) -> None:
        """The customer finishes Checkout: the subscription starts (trialing when trial days were asked for) and its
        first invoice is paid ($0 for a trial). Events: checkout.session.completed, customer.subscription.created,
        invoice.paid. Stripe does not guarantee delivery order; handlers must not rely on it."""
        session = self._get(session_id, "checkout.session")
        if session["status"] != "open":
            raise ValueError(f"checkout session {session_id} is {session['status']}, not open")
        plan = self._checkouts[session_id]
        customer = self._get(session["customer"], "customer") if session["customer"] else None
        if customer is None:  # Checkout creates the customer when the session named none
            customer = self._create_customer({"email": session["customer_email"]}, "")
        sub = self._new_subscription(customer["id"], plan)
        trial = sub["status"] == "trialing"
        items = sub["items"]["data"]
        lines = [
            self._line(sub, item, 0 if trial else self._amount(item), self._describe(item, trial)) for item in items
        ]
        invoice = self._new_invoice(sub, "subscription_create", lines)
        sub["latest_invoice"] = invoice["id"]
        paid = self._settle(invoice, "paid")
        session.update(
            customer=customer["id"],
            customer_details={
                "address": None,
                "business_name": None,
                "email": customer["email"],
                "individual_name": None,
                "name": customer["name"],
                "phone": None,
                "tax_exempt": "none",
                "tax_ids": [],
            },
            invoice=invoice["id"],
            payment_status="no_payment_required" if trial else "paid",
            status="complete",
            subscription=sub["id"],
            url=None,  # a completed session has no page to visit
        )
        self._emit("checkout.session.completed", session)
        self._emit("customer.subscription.created", sub)
        self._emit(paid, invoice)

    @_emits
    def trial_will_end(self, sub_id: str) -> None:
        """Three days before the trial ends (the clock moves there if earlier): customer.subscription.trial_will_end."""
        sub = self._subscription(sub_id, "trialing")
        self.now = max(self.now, sub["trial_end"] - TRIAL_WILL_END_LEAD)
        self._emit("customer.subscription.trial_will_end", sub)

    @_emits
    def end_trial(self, sub_id: str, paid: bool = True) -> None:
        """The trial ends (the clock moves to trial_end if earlier): the subscription turns active for its first paid
        period and that invoice is charged. Events: customer.subscription.updated (status, periods), then invoice.paid;
        or, when the charge fails, invoice.payment_failed and customer.subscription.updated (active -> past_due). A
        subscription set to cancel at period end is canceled instead: customer.subscription.deleted."""
        sub = self._subscription(sub_id, "trialing")
        self._cycle(sub, sub["trial_end"], "paid" if paid else "failed")

    @_emits
    def renew(self, sub_id: str, paid: bool = True) -> None:
        """The period ends (the clock moves to its end if earlier) and the next one is invoiced. Events:
        customer.subscription.updated (periods), then invoice.paid, or invoice.payment_failed and
        customer.subscription.updated (-> past_due). Set to cancel at period end: customer.subscription.deleted."""
        sub = self._subscription(sub_id, "active", "past_due")
        self._cycle(sub, self._current_period_end(sub), "paid" if paid else "failed")

    @_emits
    def require_action(self, sub_id: str) -> None:
        """A renewal whose charge needs the customer to authenticate (3-D Secure): customer.subscription.updated
        (periods), invoice.payment_action_required, customer.subscription.updated (-> past_due)."""
        sub = self._subscription(sub_id, "active", "past_due")
        self._cycle(sub, self._current_period_end(sub), "action_required")

    @_emits
    def recover(self, sub_id: str) -> None:
        """A retry (or the customer) pays the open invoice: invoice.paid, customer.subscription.updated (-> active)."""
        sub = self._subscription(sub_id, "past_due", "unpaid")
        invoice = self._objects[sub["latest_invoice"]]
        self._emit(self._settle(invoice, "paid"), invoice)
        with self._updating(sub):
            sub["status"] = "active"

    @_emits
    def mark_unpaid(self, sub_id: str) -> None:
        """The last retry fails (subscription settings: mark unpaid): invoice.payment_failed with no further attempt,
        customer.subscription.updated (past_due -> unpaid)."""
        sub = self._subscription(sub_id, "past_due")
        invoice = self._objects[sub["latest_invoice"]]
        failed = self._settle(invoice, "failed")
        invoice["next_payment_attempt"] = None  # retries are exhausted
        self._emit(failed, invoice)
        with self._updating(sub):
            sub["status"] = "unpaid"

    @_emits
    def change_plan(self, sub_id: str, price_id: str) -> None:
        """Switch the subscription's item to another price, as the billing portal would. See `_reprice` for what
        happens; events: customer.subscription.updated, then invoice.paid when the switch is charged now."""
        sub = self._subscription(sub_id, "active", "trialing", "past_due")
        moves = self._moves(sub, [{"id": sub["items"]["data"][0]["id"], "price": price_id}])
        with self._updating(sub):
            invoice = self._reprice(sub, moves, prorate=True)
        if invoice:
            self._emit(self._settle(invoice, "paid"), invoice)

    @_emits
    def cancel_at_period_end(self, sub_id: str) -> None:
        """The customer cancels in the portal: customer.subscription.updated (cancel_at_period_end, cancel_at)."""
        sub = self._subscription(sub_id, "active", "trialing", "past_due")
        with self._updating(sub):
            self._schedule_cancel(sub, True)

    @_emits
    def undo_cancel(self, sub_id: str) -> None:
        """The customer keeps the plan after all, in the portal: customer.subscription.updated (cancel_at_period_end
        false, cancel_at and canceled_at cleared)."""
        sub = self._subscription(sub_id, "active", "trialing", "past_due")
        with self._updating(sub):
            self._schedule_cancel(sub, False)

    @_emits
    def cancel(self, sub_id: str) -> None:
        """Cancel now: customer.subscription.deleted (status canceled, canceled_at and ended_at now)."""
        self._cancel_now(self._subscription(sub_id, *_LIVE))

    @_emits
    def pause(self, sub_id: str) -> None:
        """Pause (status paused, no invoices while paused): customer.subscription.paused."""
        sub = self._subscription(sub_id, "active", "trialing", "past_due")
        sub["status"] = "paused"
        sub["status_details"] = {
            "paused": {"subscription": {"type": "pause_requested"}, "transitioned_at": self.now, "type": "subscription"}
        }
        self._emit("customer.subscription.paused", sub)

    @_emits
    def resume(self, sub_id: str) -> None:
        """Resume with Stripe's default billing_cycle_anchor=now: a new period starts now and is invoiced.
        Events: customer.subscription.resumed, invoice.paid."""
        sub = self._subscription(sub_id, "paused")
        sub.update(status="active", status_details=None, billing_cycle_anchor=self.now)
        for item in sub["items"]["data"]:
            item["current_period_start"] = self.now
            item["current_period_end"] = _period_end(self.now, item["price"], self.now)
        lines = [self._line(sub, item, self._amount(item), self._describe(item)) for item in sub["items"]["data"]]
        invoice = self._new_invoice(sub, "subscription_update", lines)
        sub["latest_invoice"] = invoice["id"]
        paid = self._settle(invoice, "paid")
        self._emit("customer.subscription.resumed", sub)
        self._emit(paid, invoice)

    @_emits
    def delete_customer(self, customer_id: str) -> None:
        """Delete the customer: customer.subscription.deleted for each live subscription, then customer.deleted."""
        self._remove_customer(self._get(customer_id, "customer"))

    # -- HTTP -------------------------------------------------------------------------------------------------------

    def _app(self) -> Starlette:
        handlers: list[tuple[str, str, Handler]] = [
            ("POST", "/v1/customers", self._create_customer),
            ("GET", "/v1/customers/{id}", self._retrieve_customer),
            ("DELETE", "/v1/customers/{id}", self._delete_customer),
            ("GET", "/v1/prices", self._list_prices),
            ("GET", "/v1/prices/{id}", lambda _, price_id: self._get(price_id, "price")),
            ("POST", "/v1/checkout/sessions", self._create_checkout_session),
            ("GET", "/v1/checkout/sessions/{id}", lambda _, session_id: self._get(session_id, "checkout.session")),
            ("POST", "/v1/billing_portal/sessions", self._create_portal_session),
            ("GET", "/v1/subscriptions", self._list_subscriptions),
            ("GET", "/v1/subscriptions/{id}", lambda _, sub_id: self._get(sub_id, "subscription")),
            ("POST", "/v1/subscriptions/{id}", self._update_subscription),
            ("DELETE", "/v1/subscriptions/{id}", self._delete_subscription),
        ]
        routes = [Route(path, self._endpoint(handler), methods=[method]) for method, path, handler in handlers]
        routes += [
            Route("/checkout/{id}", self._hosted_checkout, methods=["GET", "POST"]),
            Route("/billing_portal/{id}", self._hosted_portal, methods=["GET"]),
            Route("/billing_portal/{id}/{action:str}", self._hosted_portal_action, methods=["POST"]),
        ]
        routes.append(Route("/{path:path}", _unrecognized, methods=["GET", "POST", "DELETE", "PUT", "PATCH"]))
        return Starlette(routes=routes)

    async def _hosted_checkout(self, request: Request) -> Response:
        """A checkout session's `url`, which the customer's browser visits (no API key). GET: the page. POST: the
        customer pays; a form (the page's button) is then redirected to the session's success_url, as Stripe does,
        and any other POST is answered with the events Stripe sends as a result (complete_checkout's). The events go
        to the webhook endpoint, if one is set (`deliver_events_to`)."""
        session_id = request.path_params["id"]
        with self._lock:
            session = self._objects.get(session_id)
            if session is None or session["object"] != "checkout.session":
                return _missing(request, "checkout session", session_id)
            if request.method == "GET":
                if session["status"] != "open":
                    return HTMLResponse(stripe_hosted.closed_checkout_page(session))
                plan = self._checkouts[session_id]
                lines = [
                    (self._product_name(price), price["unit_amount"] * quantity, price["recurring"]["interval"])
                    for price, quantity in plan["lines"]
                ]
                return HTMLResponse(stripe_hosted.checkout_page(session, lines, plan["trial_days"]))
        try:
            events = self.complete_checkout(session_id)
        except ValueError as error:  # the session is already complete or expired
            if _is_form(request):
                return HTMLResponse(stripe_hosted.closed_checkout_page(self.get(session_id)), status_code=400)
            return JSONResponse(StripeApiError(400, str(error)).body, status_code=400)
        if not _is_form(request):
            return JSONResponse(_list(events, request.url.path))
        success_url = self.get(session_id)["success_url"]
        if not success_url:
            return HTMLResponse(stripe_hosted.page("Checkout", "<p>Done: the subscription has started.</p>"))
        return RedirectResponse(success_url.replace("{CHECKOUT_SESSION_ID}", session_id), status_code=303)

    async def _hosted_portal(self, request: Request) -> Response:
        """A billing-portal session's `url`: the customer's subscriptions, each with a button that cancels it at the
        end of its period (or takes that back)."""
        portal_id = request.path_params["id"]
        with self._lock:
            portal = self._objects.get(portal_id)
            if portal is None or portal["object"] != "billing_portal.session":
                return _missing(request, "billing portal session", portal_id)
            subscriptions = [
                (copy.deepcopy(sub), self._product_name(sub["items"]["data"][0]["price"]))
                for sub in self._newest_first("subscription")
                if sub["customer"] == portal["customer"] and sub["status"] != "canceled"
            ]
            return HTMLResponse(stripe_hosted.portal_page(portal, subscriptions))

    async def _hosted_portal_action(self, request: Request) -> Response:
        """The portal's buttons: `cancel` (at period end) or `renew` (undo that) one of the customer's subscriptions,
        then back to the portal page."""
        portal_id, action = request.path_params["id"], request.path_params["action"]
        form = dict(parse_qsl((await request.body()).decode(errors="replace")))
        with self._lock:
            portal = self._objects.get(portal_id)
            sub = self._objects.get(form.get("subscription", ""))
            if portal is None or portal["object"] != "billing_portal.session" or action not in ("cancel", "renew"):
                return _missing(request, "billing portal page", request.url.path)
            if sub is None or sub["object"] != "subscription" or sub["customer"] != portal["customer"]:
                return _missing(request, "subscription", form.get("subscription", ""))
        try:
            (self.cancel_at_period_end if action == "cancel" else self.undo_cancel)(sub["id"])
        except ValueError as error:  # e.g. the subscription ended meanwhile
            return HTMLResponse(stripe_hosted.page("Billing", f"<p>{escape(str(error))}</p>"), status_code=400)
        return RedirectResponse(f"/billing_portal/{portal_id}", status_code=303)

    def _endpoint(self, handler: Handler) -> Callable[[Request], Awaitable[JSONResponse]]:
        async def endpoint(request: Request) -> JSONResponse:
            return self._respond(request, await request.body(), handler)

        return endpoint

    def _respond(self, request: Request, body: bytes, handler: Handler) -> JSONResponse:
        request_id = _id("req")
        key = request.headers.get("idempotency-key") if request.method == "POST" else None
        headers = {"Request-Id": request_id, "Stripe-Version": API_VERSION} | ({"Idempotency-Key": key} if key else {})
        try:
            self._admit(request)
            pairs = parse_qsl(body.decode(), keep_blank_values=True) if request.method == "POST" else []
            params = parse_params(pairs or request.query_params.multi_items())
            fingerprint = (request.method, request.url.path, params)
            with self._lock:
                if key and key in self._idempotent:
                    return self._replay(key, fingerprint)
                self._request = {"id": request_id, "idempotency_key": key}
                try:
                    result = handler(params, request.path_params.get("id", ""))
                    result = self._expand(copy.deepcopy(result), _strings(params.get("expand")))
                finally:
                    self._request = _NO_REQUEST
                if key:  # Stripe saves a key's result once the request has run, and replays it
                    self._idempotent[key] = (fingerprint, result, request_id)
            return JSONResponse(result, headers=headers)
        except StripeApiError as error:
            return JSONResponse(error.body, status_code=error.status, headers=headers)

    def _admit(self, request: Request) -> None:
        """Refuse what Stripe refuses before running a request: an outage, a missing or bad key, another version."""
        if self.outage:
            raise StripeApiError(500, "An unknown error occurred while processing your request.", kind="api_error")
        scheme, _, key = request.headers.get("authorization", "").partition(" ")
        if scheme != "Bearer" or not key:
            raise StripeApiError(
                401,
                "You did not provide an API key. You need to provide your API key in the Authorization header, "
                "using Bearer auth (e.g. 'Authorization: Bearer YOUR_SECRET_KEY'). See "
                "https://stripe.com/docs/api#authentication for details, or we can help at https://support.stripe.com/.",
            )
        if not key.startswith(("sk_test_", "rk_test_")):  # a live key never belongs here
            raise StripeApiError(401, f"Invalid API Key provided: {key[:8]}{'*' * max(len(key) - 12, 0)}{key[-4:]}")
        version = request.headers.get("stripe-version", API_VERSION)
        if version != API_VERSION:  # other versions shape objects differently; refuse rather than answer wrongly
            raise StripeApiError(400, f"The Stripe stand-in renders API version {API_VERSION} only, not {version}.")

    def _replay(self, key: str, fingerprint: tuple[str, str, Obj]) -> JSONResponse:
        first, result, request_id = self._idempotent[key]
        if first != fingerprint:
            raise StripeApiError(
                400,
                "Keys for idempotent requests can only be used with the same parameters they were first used with. "
                f"Try using a key other than '{key}' if you meant to execute a different request.",
                kind="idempotency_error",
            )
        headers = {"Request-Id": request_id, "Stripe-Version": API_VERSION, "Idempotency-Key": key}
        return JSONResponse(result, headers=headers | {"Idempotent-Replayed": "true"})

    def _expand(self, node: Any, paths: list[str]) -> Any:
        """Replace the IDs named by `expand` paths ("latest_invoice", "data.customer") with their objects."""
        for path in paths:
            head, _, rest = path.partition(".")
            if node.get("object") == "list" and head == "data":
                node["data"] = [self._expand(item, [rest]) for item in node["data"]]
                continue
            target = node.get(head)
            if isinstance(target, str) and target in self._objects:
                node[head] = copy.deepcopy(self._objects[target])
            elif not isinstance(target, dict):
                raise StripeApiError(400, f"This property cannot be expanded ({path}).", param="expand")
            if rest:
                node[head] = self._expand(node[head], [rest])
        return node

    # -- HTTP handlers ----------------------------------------------------------------------------------------------

    def _create_customer(self, params: Obj, _: str) -> Obj:
        customer = _shape(
            _id("cus"),
            "customer",
            "address currency customer_account default_source discount shipping test_clock",
            balance=0,
            created=self.now,
            delinquent=False,
            description=params.get("description"),
            email=params.get("email"),
            invoice_prefix=secrets.token_hex(4).upper(),
            invoice_settings=dict.fromkeys(("custom_fields", "default_payment_method", "footer", "rendering_options")),
            livemode=False,
            metadata=_metadata(params.get("metadata")),
            name=params.get("name"),
            next_invoice_sequence=1,
            phone=params.get("phone"),
            preferred_locales=[],
            tax_exempt="none",
        )
        self._objects[customer["id"]] = customer
        self._emit("customer.created", customer)
        return customer

    def _retrieve_customer(self, _: Obj, customer_id: str) -> Obj:
        if customer_id in self._deleted:  # Stripe keeps answering for a deleted customer, with this stub
            return {"id": customer_id, "object": "customer", "deleted": True}
        return self._get(customer_id, "customer")

    def _delete_customer(self, _: Obj, customer_id: str) -> Obj:
        self._remove_customer(self._get(customer_id, "customer"))
        return {"id": customer_id, "object": "customer", "deleted": True}

    def _list_prices(self, params: Obj, _: str) -> Obj:
        lookup_keys = _strings(params.get("lookup_keys"))
        active = _bool(params["active"], "active") if "active" in params else None

        def keep(price: Obj) -> bool:
            return (
                (not lookup_keys or price["lookup_key"] in lookup_keys)
                and active in (None, price["active"])
                and params.get("product", price["product"]) == price["product"]
            )

        return self._page(self._newest_first("price"), keep, params, "/v1/prices")

    def _create_checkout_session(self, params: Obj, _: str) -> Obj:
        if params.get("mode") != "subscription":
            raise StripeApiError(400, "The Stripe stand-in supports mode=subscription only.", param="mode")
        if params.get("customer"):
            self._get(params["customer"], "customer", "customer")
        if not params.get("line_items"):
            raise StripeApiError(
                400, "You must provide at least one recurring price in `subscription` mode when using prices."
            )
        lines = [
            (
                self._get(line.get("price", ""), "price", f"line_items[{n}][price]"),
                _int(line.get("quantity"), f"line_items[{n}][quantity]", 1),
            )
            for n, line in enumerate(params["line_items"])
        ]
        data = params.get("subscription_data") or {}
        trial_param = "subscription_data[trial_period_days]"
        trial_days = _int(data.get("trial_period_days"), trial_param, 0)
        if data.get("trial_period_days") is not None and not 1 <= trial_days <= 730:
            raise StripeApiError(400, "Trial period days must be between 1 and 730.", param=trial_param)
        session_id = _id("cs_test")
        self._checkouts[session_id] = {
            "lines": lines,
            "trial_days": trial_days,
            "metadata": _metadata(data.get("metadata")),
            "description": data.get("description"),
        }
        total = 0 if trial_days else sum(price["unit_amount"] * quantity for price, quantity in lines)
        customer = params.get("customer")
        session = _shape(
            session_id,
            "checkout.session",
            "after_expiration allow_promotion_codes billing_address_collection client_secret consent"
            " consent_collection customer_details invoice invoice_creation payment_intent payment_link recovered_from"
            " setup_intent shipping_address_collection shipping_cost submit_type subscription",
            amount_subtotal=total,
            amount_total=total,  # due today: nothing when the subscription starts with a trial
            automatic_tax={"enabled": False, "liability": None, "provider": None, "status": None},
            cancel_url=params.get("cancel_url"),
            client_reference_id=params.get("client_reference_id"),
            created=self.now,
            currency="usd",
            custom_fields=[],
            custom_text=dict.fromkeys(("after_submit", "shipping_address", "submit", "terms_of_service_acceptance")),
            customer=customer,
            customer_creation=None if customer else "always",
            customer_email=params.get("customer_email"),
            discounts=[],
            expires_at=self.now + DAY,
            livemode=False,
            locale=params.get("locale"),
            metadata=_metadata(params.get("metadata")),
            mode="subscription",
            payment_method_collection=params.get("payment_method_collection", "always"),
            payment_method_options={"card": {"request_three_d_secure": "automatic"}},
            payment_method_types=["card"],
            payment_status="unpaid",
            phone_number_collection={"enabled": False},
            shipping_options=[],
            status="open",
            success_url=params.get("success_url"),
            total_details={"amount_discount": 0, "amount_shipping": 0, "amount_tax": 0},
            ui_mode="hosted_page",
            url=f"{self.base_url or ''}/checkout/{session_id}",
        )
        self._objects[session_id] = session
        return session

    def _create_portal_session(self, params: Obj, _: str) -> Obj:
        customer = self._get(params.get("customer", ""), "customer", "customer")
        session_id = _id("bps")
        self._objects[session_id] = _shape(
            session_id,
            "billing_portal.session",
            "customer_account flow on_behalf_of",
            configuration="bpc_local_default",
            created=self.now,
            customer=customer["id"],
            livemode=False,
            locale=params.get("locale"),
            return_url=params.get("return_url"),
            url=f"{self.base_url or ''}/billing_portal/{session_id}",
        )
        return self._objects[session_id]

    def _list_subscriptions(self, params: Obj, _: str) -> Obj:
        status, customer, price = params.get("status"), params.get("customer"), params.get("price")

        def keep(sub: Obj) -> bool:
            if customer and sub["customer"] != customer:
                return False
            if price and all(item["price"]["id"] != price for item in sub["items"]["data"]):
                return False
            if status == "all":
                return True
            if status == "ended":
                return sub["status"] in ("canceled", "incomplete_expired")
            return sub["status"] == status if status else sub["status"] != "canceled"

        return self._page(self._newest_first("subscription"), keep, params, "/v1/subscriptions")

    def _update_subscription(self, params: Obj, sub_id: str) -> Obj:
        sub = self._get(sub_id, "subscription")
        unsupported = sorted(set(params) - _UPDATABLE)
        if unsupported:  # an ignored parameter would let a test pass that Stripe would not
            raise StripeApiError(400, f"The Stripe stand-in does not support {', '.join(unsupported)}.")
        if sub["status"] == "canceled" and set(params) - {"metadata", "cancellation_details", "expand"}:
            raise StripeApiError(400, "A canceled subscription can only update its cancellation_details and metadata.")
        # validate everything before changing anything, as Stripe does
        moves = self._moves(sub, params.get("items") or [])
        cancel = params.get("cancel_at_period_end")
        at_period_end = None if cancel is None else _bool(cancel, "cancel_at_period_end")
        update = params.get("metadata", {})
        metadata = _metadata({**sub["metadata"], **update} if isinstance(update, dict) else update)
        details = params.get("cancellation_details") or {}
        with self._updating(sub):  # one customer.subscription.updated for the whole request
            sub["metadata"] = metadata
            sub["cancellation_details"] |= {
                key: details[key] or None for key in ("comment", "feedback") if key in details
            }
            if at_period_end is not None:
                self._schedule_cancel(sub, at_period_end)
            invoice = self._reprice(sub, moves, prorate=params.get("proration_behavior") != "none")
        if invoice:
            self._emit(self._settle(invoice, "paid"), invoice)
        return sub

    def _delete_subscription(self, params: Obj, sub_id: str) -> Obj:
        sub = self._get(sub_id, "subscription")
        unsupported = sorted(set(params) - {"prorate", "invoice_now", "expand"})
        if unsupported:
            raise StripeApiError(400, f"The Stripe stand-in does not support {', '.join(unsupported)}.")
        # Stripe's defaults: no proration credit, no final invoice. Only those are simulated; asking for a credit or
        # an invoice here fails rather than pretending.
        for flag in ("prorate", "invoice_now"):
            if flag in params and _bool(params[flag], flag):
                raise StripeApiError(400, f"The Stripe stand-in cancels with {flag}=false only.", param=flag)
        if sub["status"] == "canceled":
            raise StripeApiError(400, f"The subscription {sub_id} has already been canceled.")
        self._cancel_now(sub)
        return sub

    # -- state ------------------------------------------------------------------------------------------------------

    def _seed_price(self, price_id: str, lookup_key: str, name: str, amount: int, interval: str) -> None:
        product_id = _id("prod")
        self._objects[product_id] = _shape(
            product_id,
            "product",
            "description package_dimensions shippable statement_descriptor tax_code unit_label url",
            active=True,
            created=self.now,
            default_price=price_id,
            images=[],
            livemode=False,
            marketing_features=[],
            metadata={},
            name=name,
            type="service",
            updated=self.now,
        )
        recurring = {"interval": interval, "interval_count": 1, "meter": None, "trial_period_days": None}
        self._objects[price_id] = _shape(
            price_id,
            "price",
            "custom_unit_amount nickname tiers_mode transform_quantity",
            active=True,
            billing_scheme="per_unit",
            created=self.now,
            currency="usd",
            livemode=False,
            lookup_key=lookup_key,
            metadata={},
            product=product_id,
            recurring=recurring | {"usage_type": "licensed"},
            tax_behavior="unspecified",
            type="recurring",
            unit_amount=amount,
            unit_amount_decimal=str(amount),
        )

    def _get(self, object_id: str, kind: str, param: str = "id") -> Obj:
        found = self._objects.get(object_id)
        if found is None or found["object"] != kind or object_id in self._deleted:
            # a missing object in the URL is a 404; one named in a parameter is a 400
            status = 404 if param == "id" else 400
            raise StripeApiError(status, f"No such {kind}: '{object_id}'", code="resource_missing", param=param)
        return found

    def _subscription(self, sub_id: str, *statuses: str) -> Obj:
        sub = self._get(sub_id, "subscription")
        if sub["status"] not in statuses:
            raise ValueError(f"subscription {sub_id} is {sub['status']}; this step needs {' or '.join(statuses)}")
        return sub

    def _newest_first(self, kind: str) -> list[Obj]:
        found = [obj for obj in reversed(self._objects.values()) if obj["object"] == kind]
        return sorted(found, key=lambda obj: obj["created"], reverse=True)  # stable: ties stay newest first

    def _page(self, objects: list[Obj], keep: Callable[[Obj], bool], params: Obj, url: str) -> Obj:
        limit = _int(params.get("limit"), "limit", 10)
        if not 1 <= limit <= 100:
            raise StripeApiError(400, "This value must be greater than or equal to 1 and at most 100.", param="limit")
        ids = [obj["id"] for obj in objects]
        for param in ("starting_after", "ending_before"):
            if params.get(param) and params[param] not in ids:
                raise StripeApiError(400, f"No such object: '{params[param]}'", code="resource_missing", param=param)
        if params.get("ending_before"):
            matching = [obj for obj in objects[: ids.index(params["ending_before"])] if keep(obj)]
            page = matching[-limit:]
        else:
            start = ids.index(params["starting_after"]) + 1 if params.get("starting_after") else 0
            matching = [obj for obj in objects[start:] if keep(obj)]
            page = matching[:limit]
        return {"object": "list", "data": page, "has_more": len(matching) > limit, "url": url}

    def _emit(self, kind: str, obj: Obj, previous: Obj | None = None) -> None:
        data: Obj = {"object": copy.deepcopy(obj)}
        if previous is not None:
            data["previous_attributes"] = copy.deepcopy(previous)
        event = {
            "id": _id("evt"),
            "object": "event",
            "api_version": API_VERSION,
            "created": self.now,
            "data": data,
            "livemode": False,
            "pending_webhooks": 1,
            "request": dict(self._request),
            "type": kind,
        }
        self.events.append(event)
        if self._delivery:
            self._delivery.send(event_payload(event))

    @contextmanager
    def _updating(self, sub: Obj) -> Iterator[None]:
        """Emit customer.subscription.updated with previous_attributes if the block changed the subscription."""
        before = copy.deepcopy(sub)
        yield
        if previous := _changes(before, sub):
            self._emit("customer.subscription.updated", sub, previous)

    def _new_subscription(self, customer_id: str, plan: Obj) -> Obj:
        sub_id = _id("sub")
        trial_end = self.now + plan["trial_days"] * DAY if plan["trial_days"] else None
        anchor = trial_end or self.now
        items = [
            _shape(
                _id("si"),
                "subscription_item",
                "current_trial",
                created=self.now,
                current_period_end=trial_end or _period_end(anchor, price, self.now),
                current_period_start=self.now,
                discounts=[],
                metadata={},
                plan=_plan(price),
                price=copy.deepcopy(price),
                quantity=quantity,
                subscription=sub_id,
                tax_rates=[],
            )
            for price, quantity in plan["lines"]
        ]
        sub = _shape(
            sub_id,
            "subscription",
            "application application_fee_percent billing_cycle_anchor_config cancel_at canceled_at customer_account"
            " days_until_due default_source ended_at latest_invoice next_pending_invoice_item_invoice on_behalf_of"
            " pause_collection pending_invoice_item_interval pending_setup_intent pending_update schedule"
            " status_details test_clock transfer_data",
            automatic_tax={"disabled_reason": None, "enabled": False, "liability": None},
            billing_cycle_anchor=anchor,  # a trial's end anchors the billing cycle
            billing_mode={"flexible": {"proration_discounts": "included"}, "type": "flexible", "updated_at": None},
            billing_schedules=[],
            cancel_at_period_end=False,
            cancellation_details={"comment": None, "feedback": None, "reason": None},
            collection_method="charge_automatically",
            created=self.now,
            currency="usd",
            customer=customer_id,
            default_payment_method=_id("pm"),  # the card Checkout collected
            default_tax_rates=[],
            description=plan["description"],
            discounts=[],
            invoice_settings=dict.fromkeys(("account_tax_ids", "custom_fields", "description", "footer"))
            | {"issuer": {"type": "self"}},
            items=_list(items, f"/v1/subscription_items?subscription={sub_id}"),
            livemode=False,
            metadata=dict(plan["metadata"]),
            payment_settings={
                "payment_method_options": None,
                "payment_method_types": None,
                "save_default_payment_method": "off",
            },
            start_date=self.now,
            status="trialing" if trial_end else "active",
            trial_end=trial_end,
            trial_settings={"end_behavior": {"missing_payment_method": "create_invoice"}},
            trial_start=self.now if trial_end else None,
        )
        self._objects[sub_id] = sub
        return sub

    def _current_period_end(self, sub: Obj) -> int:
        return min(item["current_period_end"] for item in sub["items"]["data"])

    def _cycle(self, sub: Obj, boundary: int, outcome: Outcome) -> None:
        """Cross a period boundary (or a trial's end): start and invoice the next period, then charge it."""
        self.now = max(self.now, boundary)
        if sub["cancel_at_period_end"]:
            sub.update(status="canceled", ended_at=boundary)
            self._emit("customer.subscription.deleted", sub)
            return
        previous = (sub["items"]["data"][0]["current_period_start"], boundary)
        with self._updating(sub):
            if sub["status"] == "trialing":
                sub["status"] = "active"
            for item in sub["items"]["data"]:
                item["current_period_start"] = boundary
                item["current_period_end"] = _period_end(sub["billing_cycle_anchor"], item["price"], boundary)
            lines = [self._line(sub, i, self._amount(i), self._describe(i)) for i in sub["items"]["data"]]
            invoice = self._new_invoice(sub, "subscription_cycle", lines, previous)
            sub["latest_invoice"] = invoice["id"]
        self._emit(self._settle(invoice, outcome), invoice)
        with self._updating(sub):
            sub["status"] = "active" if outcome == "paid" else "past_due"

    def _moves(self, sub: Obj, changes: list[Obj]) -> list[tuple[Obj, Obj]]:
        """The (item, new price) pairs an `items` parameter asks for."""
        moves = []
        for n, change in enumerate(changes):
            if not change.get("id"):  # without an id Stripe adds a second item; the platform never wants that
                raise StripeApiError(
                    400, "The Stripe stand-in needs items[][id] to change a price.", param=f"items[{n}]"
                )
            item = next((i for i in sub["items"]["data"] if i["id"] == change["id"]), None)
            if item is None:
                raise StripeApiError(400, f"No such subscription_item: '{change['id']}'", param=f"items[{n}][id]")
            moves.append((item, self._get(change.get("price", ""), "price", f"items[{n}][price]")))
        return moves

    def _reprice(self, sub: Obj, moves: list[tuple[Obj, Obj]], *, prorate: bool) -> Obj | None:
        """Move items to new prices; return the invoice to charge now, if any. Within a trial, or to a price with the
        same interval, only the price changes (a same-interval proration waits for the next invoice). Across
        intervals Stripe credits the unused time, charges the new price now and restarts the billing period."""
        lines = []
        for item, price in moves:
            old, start, end = item["price"], item["current_period_start"], item["current_period_end"]
            item.update(price=copy.deepcopy(price), plan=_plan(price))
            if sub["status"] == "trialing" or old["recurring"] == price["recurring"]:
                continue
            if prorate and end > self.now:
                unused = -round(self._amount(item, old) * (end - self.now) / (end - start))
                on = datetime.fromtimestamp(self.now, UTC).strftime("%d %b %Y")
                description = f"Unused time on {item['quantity']} {_TIMES} {self._product_name(old)} after {on}"
                lines.append(self._line(sub, item, unused, description, old, proration=True))
            sub["billing_cycle_anchor"] = item["current_period_start"] = self.now
            item["current_period_end"] = _period_end(self.now, price, self.now)
            lines.append(self._line(sub, item, self._amount(item), self._describe(item)))
        if not lines:
            return None
        invoice = self._new_invoice(sub, "subscription_update", lines)
        sub["latest_invoice"] = invoice["id"]
        return invoice

    def _schedule_cancel(self, sub: Obj, at_period_end: bool) -> None:
        # canceled_at records when the cancellation was asked for, not when it takes effect (Stripe's documented rule)
        sub.update(
            cancel_at_period_end=at_period_end,
            cancel_at=self._current_period_end(sub) if at_period_end else None,
            canceled_at=self.now if at_period_end else None,
        )
        sub["cancellation_details"]["reason"] = "cancellation_requested" if at_period_end else None

    def _cancel_now(self, sub: Obj) -> None:
        sub.update(status="canceled", canceled_at=self.now, ended_at=self.now)
        sub["cancellation_details"]["reason"] = "cancellation_requested"
        self._emit("customer.subscription.deleted", sub)

    def _remove_customer(self, customer: Obj) -> None:
        for sub in self._newest_first("subscription"):
            if sub["customer"] == customer["id"] and sub["status"] in _LIVE:
                self._cancel_now(sub)
        self._deleted.add(customer["id"])
        self._emit("customer.deleted", customer)

    # -- invoices ---------------------------------------------------------------------------------------------------

    def _amount(self, item: Obj, price: Obj | None = None) -> int:
        return int((price or item["price"])["unit_amount"]) * int(item["quantity"])

    def _product_name(self, price: Obj) -> str:
        return str(self._objects[price["product"]]["name"])

    def _describe(self, item: Obj, trial: bool = False) -> str:
        price = item["price"]
        if trial:
            return f"Trial period for {self._product_name(price)}"
        cost = f"${price['unit_amount'] / 100:.2f} / {price['recurring']['interval']}"
        return f"{item['quantity']} {_TIMES} {self._product_name(price)} (at {cost})"

    def _line(
        self,
        sub: Obj,
        item: Obj,
        amount: int,
        description: str,
        price: Obj | None = None,
        *,
        proration: bool = False,
    ) -> Obj:
        price = price or item["price"]
        return _shape(
            _id("il"),
            "line_item",
            "invoice",
            amount=amount,
            currency="usd",
            description=description,
            discount_amounts=[],
            discountable=not proration,
            discounts=[],
            livemode=False,
            metadata=dict(sub["metadata"]),
            parent={
                "invoice_item_details": None,
                "subscription_item_details": {
                    "invoice_item": None,
                    "proration": proration,
                    "proration_details": {"credited_items": None},
                    "subscription": sub["id"],
                    "subscription_item": item["id"],
                },
                "type": "subscription_item_details",
            },
            # a proration covers the rest of the current period
            period={
                "end": item["current_period_end"],
                "start": self.now if proration else item["current_period_start"],
            },
            pretax_credit_amounts=[],
            pricing={
                "price_details": {"price": price["id"], "product": price["product"]},
                "type": "price_details",
                "unit_amount_decimal": price["unit_amount_decimal"],
            },
            quantity=item["quantity"],
            subscription=sub["id"],
            subtotal=amount,
            taxes=[],
        )

    def _new_invoice(self, sub: Obj, reason: str, lines: list[Obj], period: tuple[int, int] | None = None) -> Obj:
        """A finalized (open) invoice for `lines`; a negative total leaves a credit on the customer's balance."""
        customer = self._objects[sub["customer"]]
        invoice_id = _id("in")
        total = sum(line["amount"] for line in lines)
        for line in lines:
            line["invoice"] = invoice_id
        start, end = period or (self.now, self.now)
        invoice = _shape(
            invoice_id,
            "invoice",
            "account_tax_ids application automatically_finalizes_at confirmation_secret custom_fields customer_account"
            " customer_address customer_phone customer_shipping default_payment_method default_source description"
            " due_date footer from_invoice last_finalization_error latest_revision next_payment_attempt on_behalf_of"
            " receipt_number rendering shipping_cost shipping_details statement_descriptor test_clock threshold_reason",
            account_country="US",
            account_name="Interview Prep (local)",
            amount_due=max(total, 0),
            amount_overpaid=0,
            amount_paid=0,
            amount_remaining=max(total, 0),
            amount_shipping=0,
            attempt_count=0,
            attempted=False,
            auto_advance=True,
            automatic_tax=dict.fromkeys(("disabled_reason", "liability", "provider", "status")) | {"enabled": False},
            billing_reason=reason,
            collection_method="charge_automatically",
            created=self.now,
            currency="usd",
            customer=customer["id"],
            customer_email=customer["email"],
            customer_name=customer["name"],
            customer_tax_exempt="none",
            customer_tax_ids=[],
            default_tax_rates=[],
            discounts=[],
            effective_at=self.now,
            ending_balance=min(total, 0),
            hosted_invoice_url=f"https://invoice.stripe.com/i/local/{invoice_id}",
            invoice_pdf=f"https://pay.stripe.com/invoice/local/{invoice_id}/pdf",
            issuer={"type": "self"},
            lines=_list(lines, f"/v1/invoices/{invoice_id}/lines"),
            livemode=False,
            metadata={},
            number=f"{customer['invoice_prefix']}-{customer['next_invoice_sequence']:04d}",
            parent={
                "quote_details": None,
                "subscription_details": {
                    "metadata": dict(sub["metadata"]),
                    "subscription": sub["id"],
                    "subscription_proration_date": None,
                },
                "type": "subscription_details",
            },
            payment_settings=dict.fromkeys(("default_mandate", "payment_method_options", "payment_method_types")),
            period_end=end,
            period_start=start,
            post_payment_credit_notes_amount=0,
            pre_payment_credit_notes_amount=0,
            starting_balance=0,
            status="open",
            status_transitions={
                "finalized_at": self.now,
                "marked_uncollectible_at": None,
                "paid_at": None,
                "voided_at": None,
            },
            subtotal=total,
            subtotal_excluding_tax=total,
            total=total,
            total_discount_amounts=[],
            total_excluding_tax=total,
            total_pretax_credit_amounts=[],
            total_taxes=[],
            webhooks_delivered_at=self.now,
        )
        customer["next_invoice_sequence"] += 1
        self._objects[invoice_id] = invoice
        return invoice

    def _settle(self, invoice: Obj, outcome: Outcome) -> str:
        """Attempt the invoice's payment; return the event type Stripe sends for the outcome."""
        invoice["attempted"] = True
        if invoice["amount_due"]:  # nothing is charged on a $0 invoice
            invoice["attempt_count"] += 1
        if outcome == "paid":
            invoice.update(
                status="paid", amount_paid=invoice["amount_due"], amount_remaining=0, next_payment_attempt=None
            )
            invoice["status_transitions"]["paid_at"] = self.now
            return "invoice.paid"
        invoice["next_payment_attempt"] = self.now + RETRY_DELAY if outcome == "failed" else None
        return "invoice.payment_failed" if outcome == "failed" else "invoice.payment_action_required"


def _plan(price: Obj) -> Obj:
    """The legacy `plan` view of a recurring price that subscription items still carry."""
    return _shape(
        price["id"],
        "plan",
        "tiers_mode transform_usage trial_period_days meter",
        active=price["active"],
        amount=price["unit_amount"],
        amount_decimal=price["unit_amount_decimal"],
        billing_scheme="per_unit",
        created=price["created"],
        currency=price["currency"],
        interval=price["recurring"]["interval"],
        interval_count=price["recurring"]["interval_count"],
        livemode=False,
        metadata={},
        nickname=price["nickname"],
        product=price["product"],
        usage_type="licensed",
    )


def _is_form(request: Request) -> bool:
    return request.headers.get("content-type", "").startswith("application/x-www-form-urlencoded")


def _missing(request: Request, kind: str, name: str) -> Response:
    if request.method == "GET" or _is_form(request):
        return HTMLResponse(stripe_hosted.page("Not found", f"<p>No such {kind}: {escape(name)}</p>"), status_code=404)
    return JSONResponse(StripeApiError(404, f"No such {kind}: '{name}'", code="resource_missing").body, status_code=404)


async def _unrecognized(request: Request) -> JSONResponse:
    message = (
        f"Unrecognized request URL ({request.method}: {request.url.path}). "
        "Please see https://stripe.com/docs or we can help at https://support.stripe.com/."
    )
    return JSONResponse(StripeApiError(404, message).body, status_code=404)
