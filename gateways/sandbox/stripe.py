"""Starlette routes emulating Stripe's v1 PaymentIntents and Refunds API.

Only what our adapter and tests use is modelled, but that part follows Stripe closely enough
for the official SDK to work unmodified: form-encoded requests, Bearer keys, Stripe's error
envelope and HTTP statuses (so the SDK raises its own `CardError`, `IdempotencyError`, ...),
and Stripe's idempotency rules. Unknown parameters are rejected as Stripe does, so a typo in
the adapter fails here rather than in production.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
import secrets
import string
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, TypeAlias
from urllib.parse import parse_qsl

import stripe
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from gateways.sandbox import cards
from gateways.sandbox.config import SandboxConfig
from gateways.sandbox.faults import Faults, InjectedFault
from gateways.sandbox.ledger import IdempotencyStore, Ledger, LedgerKind
from gateways.sandbox.webhooks import WebhookSender

__all__ = ["PaymentIntent", "PaymentIntentStatus", "Refund", "StripeSandbox", "parse_form"]

GATEWAY = "stripe"

# Stripe's form encoding nests with brackets: `metadata[k]=v`, `payment_method_types[0]=card`.
# Lists stay as dicts keyed "0", "1", ... until a parameter is read as a list, so that a
# metadata key that happens to be a number is not mistaken for a list index.
FormValue: TypeAlias = "str | dict[str, FormValue]"
Params: TypeAlias = dict[str, FormValue]
JSON: TypeAlias = dict[str, Any]
Handler: TypeAlias = Callable[[Request, Params], JSON]

API_VERSION = "2026-10-28.endive"
MAX_AMOUNT = 99_999_999  # Stripe's ceiling for most currencies, in minor units
_ID_ALPHABET = string.ascii_letters + string.digits
_BRACKETS = re.compile(r"\[([^\[\]]*)\]")
_INTEGER = re.compile(r"-?[0-9]+")
_CURRENCY = re.compile(r"[a-z]{3}")
_METADATA_CLAUSE = re.compile(r"metadata\['(?P<key>[^']+)'\]:'(?P<value>[^']*)'")
_ALL_METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"]


class PaymentIntentStatus(StrEnum):
    REQUIRES_PAYMENT_METHOD = "requires_payment_method"
    REQUIRES_CONFIRMATION = "requires_confirmation"
    REQUIRES_ACTION = "requires_action"
    PROCESSING = "processing"
    REQUIRES_CAPTURE = "requires_capture"
    CANCELED = "canceled"
    SUCCEEDED = "succeeded"


_S = PaymentIntentStatus
_CONFIRMABLE = (_S.REQUIRES_PAYMENT_METHOD, _S.REQUIRES_CONFIRMATION, _S.REQUIRES_ACTION)
_CANCELABLE = (
    _S.REQUIRES_PAYMENT_METHOD,
    _S.REQUIRES_CAPTURE,
    _S.REQUIRES_CONFIRMATION,
    _S.REQUIRES_ACTION,
    _S.PROCESSING,
)
_SETTLEABLE = (_S.PROCESSING, _S.REQUIRES_ACTION)
_CAPTURE_METHODS = ("automatic", "automatic_async", "manual")
_CANCELLATION_REASONS = ("duplicate", "fraudulent", "requested_by_customer", "abandoned")
_REFUND_REASONS = ("duplicate", "fraudulent", "requested_by_customer")
# Parameters each endpoint accepts; anything else is `parameter_unknown`, as on Stripe.
_CREATE_PARAMS = frozenset(
    {"amount", "currency", "payment_method", "confirm", "capture_method", "metadata"}
    | {"description", "payment_method_types", "expand", "return_url"}
)


def new_id(prefix: str, length: int = 24) -> str:
    return f"{prefix}_{''.join(secrets.choice(_ID_ALPHABET) for _ in range(length))}"


@dataclass(slots=True)
class PaymentIntent:
    id: str
    amount: int
    currency: str
    capture_method: str
    metadata: dict[str, str]
    description: str | None
    payment_method_types: list[str]
    created: int = field(default_factory=lambda: int(time.time()))
    client_secret: str = ""
    status: PaymentIntentStatus = PaymentIntentStatus.REQUIRES_PAYMENT_METHOD
    payment_method: str | None = None
    amount_capturable: int = 0
    amount_received: int = 0
    latest_charge: str | None = None
    last_payment_error: JSON | None = None
    next_action: JSON | None = None
    cancellation_reason: str | None = None
    canceled_at: int | None = None
    # On Stripe this lives on the Charge; we keep it here to bound refunds.
    amount_refunded: int = 0

    def __post_init__(self) -> None:
        if not self.client_secret:
            self.client_secret = f"{self.id}_secret_{new_id('s')[2:]}"

    @property
    def payment_id(self) -> str | None:
        return self.metadata.get("payment_id")

    def to_json(self) -> JSON:
        return {
            "id": self.id,
            "object": "payment_intent",
            "amount": self.amount,
            "amount_capturable": self.amount_capturable,
            "amount_received": self.amount_received,
            "cancellation_reason": self.cancellation_reason,
            "canceled_at": self.canceled_at,
            "capture_method": self.capture_method,
            "client_secret": self.client_secret,
            "confirmation_method": "automatic",
            "created": self.created,
            "currency": self.currency,
            "description": self.description,
            "last_payment_error": self.last_payment_error,
            "latest_charge": self.latest_charge,
            "livemode": False,
            "metadata": dict(self.metadata),
            "next_action": self.next_action,
            "payment_method": self.payment_method,
            "payment_method_types": list(self.payment_method_types),
            "status": self.status.value,
        }


@dataclass(frozen=True, slots=True)
class Refund:
    id: str
    amount: int
    currency: str
    payment_intent: str
    charge: str | None
    reason: str | None
    metadata: dict[str, str]
    created: int = field(default_factory=lambda: int(time.time()))

    def to_json(self) -> JSON:
        return {
            "id": self.id,
            "object": "refund",
            "amount": self.amount,
            "charge": self.charge,
            "created": self.created,
            "currency": self.currency,
            "metadata": dict(self.metadata),
            "payment_intent": self.payment_intent,
            "reason": self.reason,
            "status": "succeeded",
        }


class StripeApiError(Exception):
    """An error response in Stripe's envelope.

    `persist` is False for requests rejected before they started executing (bad parameters):
    Stripe does not save those under the idempotency key, so a corrected retry can reuse it.
    """

    def __init__(self, status: int, error: JSON, *, persist: bool = True) -> None:
        super().__init__(error.get("message"))
        self.status = status
        self.error = error
        self.persist = persist


def _error(
    message: str,
    *,
    code: str | None = None,
    param: str | None = None,
    status: int = 400,
    persist: bool = True,
    error_type: str = "invalid_request_error",
    **extra: Any,
) -> StripeApiError:
    body: JSON = {"type": error_type, "message": message}
    if code is not None:
        body["code"] = code
    if param is not None:
        body["param"] = param
    body.update(extra)
    return StripeApiError(status, body, persist=persist)


def _bad_param(message: str, param: str, code: str | None = None) -> StripeApiError:
    return _error(message, code=code, param=param, persist=False)


_PAST_TENSE = {
    "confirm": "confirmed",
    "capture": "captured",
    "cancel": "canceled",
    "settle": "settled",
}


def _unexpected_state(pi: PaymentIntent, action: str, allowed: tuple[str, ...]) -> StripeApiError:
    return _error(
        f"You cannot {action} this PaymentIntent because it has a status of {pi.status.value}. "
        f"Only a PaymentIntent with one of the following statuses may be "
        f"{_PAST_TENSE[action]}: {', '.join(allowed)}.",
        code="payment_intent_unexpected_state",
        payment_intent=pi.to_json(),
    )


# --- form decoding and parameter readers ------------------------------------------------


def parse_form(raw: str) -> Params:
    """Decode Stripe's bracketed form encoding into nested dicts."""
    tree: Params = {}
    for key, value in parse_qsl(raw, keep_blank_values=True):
        path = _split_key(key)
        node = tree
        for segment in path[:-1]:
            # `a[]` appends, as in Rack (which Stripe's own decoder follows).
            child = node.setdefault(segment or str(len(node)), {})
            if not isinstance(child, dict):
                raise _bad_param(f"Invalid parameter: {key} conflicts with another", key)
            node = child
        leaf = path[-1] or str(len(node))
        if leaf in node:
            raise _bad_param(f"Received duplicate parameter: {key}", key)
        node[leaf] = value
    return tree


def _split_key(key: str) -> list[str]:
    head, bracket, _ = key.partition("[")
    if not bracket:
        return [key]
    segments = _BRACKETS.findall(key, len(head))
    if not head or head + "".join(f"[{s}]" for s in segments) != key:
        raise _bad_param(f"Invalid parameter name: {key}", key)
    return [head, *segments]


def _reject_unknown(params: Params, allowed: frozenset[str]) -> None:
    for name in params:
        if name not in allowed:
            raise _bad_param(f"Received unknown parameter: {name}", name, code="parameter_unknown")


def _str(params: Params, name: str, *, required: bool = False) -> str | None:
    value = params.get(name)
    if value is None:
        if required:
            raise _bad_param(f"Missing required param: {name}.", name, code="parameter_missing")
        return None
    if not isinstance(value, str):
        raise _bad_param(f"Invalid string: {name} must be a string, not a hash", name)
    return value


def _int(params: Params, name: str, *, required: bool = False) -> int | None:
    value = _str(params, name, required=required)
    if value is None:
        return None
    if not _INTEGER.fullmatch(value):
        raise _bad_param(f"Invalid integer: {value}", name, code="parameter_invalid_integer")
    return int(value)


def _positive_int(params: Params, name: str, *, required: bool = False) -> int | None:
    value = _int(params, name, required=required)
    if value is None:
        return None
    if value < 1:
        raise _bad_param(
            f"This value must be greater than or equal to 1: {name}", name, "amount_too_small"
        )
    if value > MAX_AMOUNT:
        raise _bad_param(f"Amount must be no more than {MAX_AMOUNT}", name, "amount_too_large")
    return value


def _bool(params: Params, name: str) -> bool | None:
    value = _str(params, name)
    if value is None:
        return None
    if value not in ("true", "false"):
        raise _bad_param(f"Invalid boolean: {value}", name)
    return value == "true"


def _choice(params: Params, name: str, choices: tuple[str, ...]) -> str | None:
    value = _str(params, name)
    if value is not None and value not in choices:
        raise _bad_param(
            f"Invalid {name}: must be one of {', '.join(choices)}", name, "parameter_invalid"
        )
    return value


def _str_list(params: Params, name: str) -> list[str] | None:
    value = params.get(name)
    if value is None:
        return None
    if not isinstance(value, dict) or not all(k.isdigit() for k in value):
        raise _bad_param(f"Invalid array: {name}", name)
    items = [value[k] for k in sorted(value, key=int)]
    if not all(isinstance(item, str) for item in items):
        raise _bad_param(f"Invalid array: {name} must hold strings", name)
    return [item for item in items if isinstance(item, str)]


def _metadata(params: Params) -> dict[str, str] | None:
    """Metadata updates; an empty value means "delete this key", as on Stripe."""
    value = params.get("metadata")
    if value is None:
        return None
    if value == "":  # `metadata=` clears everything
        return {}
    if not isinstance(value, dict):
        raise _bad_param("Invalid hash: metadata", "metadata")
    out: dict[str, str] = {}
    for key, item in value.items():
        if not isinstance(item, str):
            raise _bad_param(f"Invalid value for metadata[{key}]: must be a string", "metadata")
        if len(key) > 40 or len(item) > 500:
            raise _bad_param("Metadata keys are at most 40 and values 500 characters", "metadata")
        out[key] = item
    if len(out) > 50:
        raise _bad_param("Metadata can have at most 50 keys", "metadata")
    return out


def _merge_metadata(current: dict[str, str], update: dict[str, str] | None) -> dict[str, str]:
    if update is None:
        return current
    if not update:
        return {}
    merged = {**current, **update}
    return {k: v for k, v in merged.items() if v != ""}


# --- HTTP plumbing ----------------------------------------------------------------------


def _json_bytes(obj: JSON) -> bytes:
    return json.dumps(obj, indent=2).encode()


def _respond(status: int, body: bytes, headers: Mapping[str, str]) -> Response:
    return Response(body, status_code=status, media_type="application/json", headers=headers)


def _api_key(request: Request) -> str:
    """The secret key from `Authorization: Bearer sk_...` (or Basic, as `curl -u sk_...:`)."""
    header = request.headers.get("authorization", "")
    scheme, _, credentials = header.partition(" ")
    key = ""
    if scheme.lower() == "bearer":
        key = credentials.strip()
    elif scheme.lower() == "basic":
        try:
            key = base64.b64decode(credentials, validate=True).decode().partition(":")[0]
        except (binascii.Error, UnicodeDecodeError):
            key = ""
    if not key:
        raise _error(
            "You did not provide an API key. You need to provide your API key in the "
            "Authorization header, using Bearer auth ('Authorization: Bearer YOUR_SECRET_KEY').",
            code="api_key_invalid",
            status=401,
            persist=False,
        )
    if not key.startswith("sk_test_"):
        raise _error(
            f"Invalid API Key provided: {key[:8]}{'*' * max(len(key) - 12, 0)}{key[-4:]}",
            code="api_key_invalid",
            status=401,
            persist=False,
        )
    return key


def _decode(body: bytes) -> str:
    try:
        return body.decode()
    except UnicodeDecodeError:
        raise _error("The request body is not valid UTF-8.", persist=False) from None


def _fingerprint(method: str, path: str, raw: str) -> str:
    # Parameter order carries no meaning, so it must not make a retry look different.
    pairs = sorted(parse_qsl(raw, keep_blank_values=True))
    return hashlib.sha256(json.dumps([method, path, pairs]).encode()).hexdigest()


class StripeSandbox:
    """State and routes of the emulated Stripe account (one account: every test key shares it)."""

    def __init__(
        self,
        *,
        ledger: Ledger,
        idempotency: IdempotencyStore,
        faults: Faults,
        webhooks: WebhookSender,
        config: SandboxConfig,
    ) -> None:
        self._ledger = ledger
        self._idempotency = idempotency
        self._faults = faults
        self._webhooks = webhooks
        secret = config.stripe_webhook_secret
        webhooks.register(
            GATEWAY,
            url=config.webhook_url(GATEWAY),
            sign=lambda body: {
                "Stripe-Signature": stripe.WebhookSignature.generate_signature_header(
                    body.decode(), secret
                )
            },
        )
        self.payment_intents: dict[str, PaymentIntent] = {}
        self.refunds: dict[str, Refund] = {}

    def reset(self) -> None:
        self.payment_intents.clear()
        self.refunds.clear()

    def routes(self) -> list[BaseRoute]:
        """The API; mount it at the prefix that clients use as their Stripe base address."""
        api = self._endpoint
        return [
            Route("/v1/payment_intents", api(self._create_intent), methods=["POST"]),
            Route("/v1/payment_intents", api(self._list_intents), methods=["GET"]),
            # Before `{intent}`: "search" is not an intent id.
            Route("/v1/payment_intents/search", api(self._search_intents), methods=["GET"]),
            Route("/v1/payment_intents/{intent}", api(self._retrieve_intent), methods=["GET"]),
            Route(
                "/v1/payment_intents/{intent}/confirm", api(self._confirm_intent), methods=["POST"]
            ),
            Route(
                "/v1/payment_intents/{intent}/capture", api(self._capture_intent), methods=["POST"]
            ),
            Route(
                "/v1/payment_intents/{intent}/cancel", api(self._cancel_intent), methods=["POST"]
            ),
            Route("/v1/refunds", api(self._create_refund), methods=["POST"]),
            Route("/v1/refunds/{refund}", api(self._retrieve_refund), methods=["GET"]),
            # Last: anything else gets Stripe's JSON 404 rather than Starlette's plain text,
            # which the SDK could not parse.
            Route("/{path:path}", _unrecognized, methods=_ALL_METHODS),
        ]

    def control_routes(self) -> list[BaseRoute]:
        """Test-only levers that Stripe itself would pull (settlements, 3DS results, disputes)."""
        return [
            Route("/payment_intents/{intent}/settle", self._settle, methods=["POST"]),
            Route("/payment_intents/{intent}/dispute", self._dispute, methods=["POST"]),
        ]

    # --- request pipeline: latency, auth, parsing, idempotency --------------------------

    def _endpoint(self, handler: Handler) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            try:
                return await self._handle(request, handler)
            except InjectedFault as fault:
                error = {"type": "api_error", "message": f"Sandbox fault: {fault.kind}."}
                headers = {"Request-Id": new_id("req", 14)}
                return _respond(fault.status, _json_bytes({"error": error}), headers)

        return endpoint

    async def _handle(self, request: Request, handler: Handler) -> Response:
        headers = {"Request-Id": new_id("req", 14)}
        try:
            api_key = _api_key(request)
            if request.method == "POST":
                raw = _decode(await request.body())
                key = request.headers.get("idempotency-key") or None
            else:
                raw, key = request.url.query, None
            if key is not None and len(key) > 255:
                raise _error("Idempotency-Key must be at most 255 characters.", persist=False)
            params = parse_form(raw)
        except StripeApiError as exc:
            await self._pause()
            return _respond(exc.status, _json_bytes({"error": exc.error}), headers)

        if key is None:
            await self._pause()
            status, body, _ = self._execute(handler, request, params)
            await self._faults.after(GATEWAY)
            return _respond(status, body, headers)

        headers["Idempotency-Key"] = key
        scope = f"{GATEWAY}:{api_key}:{key}"
        fingerprint = _fingerprint(request.method, request.url.path, raw)
        async with self._idempotency.lock(scope):
            stored = self._idempotency.get(scope)
            # The latency sits between the lookup and the execution, where a slow gateway is
            # slow: only the lock keeps a duplicate that arrives meanwhile from executing too.
            await self._pause()
            if stored is not None:
                if stored.fingerprint != fingerprint:
                    error = _error(
                        "Keys for idempotent requests can only be used with the same parameters "
                        "they were first used with. Try using a key other than "
                        f"'{key}' if you meant to execute a different request.",
                        error_type="idempotency_error",
                    ).error
                    return _respond(400, _json_bytes({"error": error}), headers)
                headers["Idempotent-Replayed"] = "true"
                return _respond(stored.status, stored.body, headers)
            status, body, persist = self._execute(handler, request, params)
            if persist:
                self._idempotency.put(scope, fingerprint=fingerprint, status=status, body=body)
        await self._faults.after(GATEWAY)  # the work is done; the answer may still be lost
        return _respond(status, body, headers)

    @staticmethod
    def _execute(handler: Handler, request: Request, params: Params) -> tuple[int, bytes, bool]:
        # Handlers are synchronous on purpose: with no await inside, each one mutates the
        # state atomically with respect to every other request on the loop.
        try:
            return 200, _json_bytes(_expanded(handler(request, params), params)), True
        except StripeApiError as exc:
            return exc.status, _json_bytes({"error": exc.error}), exc.persist

    async def _pause(self) -> None:
        """Injected latency, errors, timeouts and outages (see `faults.py`)."""
        await self._faults.before(GATEWAY)

    # --- webhooks -------------------------------------------------------------------------

    def _event(self, event_type: str, obj: JSON) -> None:
        event_id = new_id("evt")
        event = {
            "id": event_id,
            "object": "event",
            "api_version": API_VERSION,
            "created": int(time.time()),
            "livemode": False,
            "pending_webhooks": 1,
            "type": event_type,
            "data": {"object": obj},
        }
        self._webhooks.emit(GATEWAY, event, event_id=event_id, event_type=event_type)

    def _charge_json(self, pi: PaymentIntent) -> JSON:
        return {
            "id": pi.latest_charge,
            "object": "charge",
            "amount": pi.amount,
            "amount_captured": pi.amount_received,
            "amount_refunded": pi.amount_refunded,
            "currency": pi.currency,
            "metadata": dict(pi.metadata),
            "payment_intent": pi.id,
            "refunded": pi.amount_refunded >= pi.amount_received > 0,
            "status": "succeeded",
        }

    # --- PaymentIntents -----------------------------------------------------------------

    def _create_intent(self, request: Request, params: Params) -> JSON:
        _reject_unknown(params, _CREATE_PARAMS)
        amount = _positive_int(params, "amount", required=True)
        currency = (_str(params, "currency", required=True) or "").lower()
        if not _CURRENCY.fullmatch(currency):
            raise _bad_param(f"Invalid currency: {currency}.", "currency")
        capture_method = _choice(params, "capture_method", _CAPTURE_METHODS) or "automatic"
        confirm = _bool(params, "confirm") or False
        token = _str(params, "payment_method")
        if token is not None:
            _card(token)
        elif confirm:
            raise _missing_payment_method()
        assert amount is not None  # required=True
        pi = PaymentIntent(
            id=new_id("pi"),
            amount=amount,
            currency=currency,
            capture_method=capture_method,
            metadata=_merge_metadata({}, _metadata(params)),
            description=_str(params, "description"),
            payment_method_types=_str_list(params, "payment_method_types") or ["card"],
            payment_method=token,
        )
        if token is not None:
            pi.status = _S.REQUIRES_CONFIRMATION
        self.payment_intents[pi.id] = pi
        if confirm:
            assert token is not None
            self._confirm(pi, token)  # a decline raises, but the intent exists, as on Stripe
        return pi.to_json()

    def _retrieve_intent(self, request: Request, params: Params) -> JSON:
        _reject_unknown(params, frozenset({"expand", "client_secret"}))
        return self._intent(request).to_json()

    def _list_intents(self, request: Request, params: Params) -> JSON:
        """List PaymentIntents, newest first: `created[gte|gt|lte|lt]` (unix seconds), `limit`
        (1..100, default 10) and `starting_after` (the last id of the previous page)."""
        _reject_unknown(params, frozenset({"created", "limit", "starting_after", "expand"}))
        created = params.get("created") or {}
        if not isinstance(created, dict):
            created = {"eq": created}
        bounds = {op: _int(created, op) for op in created}
        unknown = set(bounds) - {"gte", "gt", "lte", "lt", "eq"}
        if unknown:
            raise _bad_param(f"Invalid created filter: {sorted(unknown)}", "created")
        limit = min(_positive_int(params, "limit") or 10, 100)
        tests = {
            "gte": lambda c, v: c >= v,
            "gt": lambda c, v: c > v,
            "lte": lambda c, v: c <= v,
            "lt": lambda c, v: c < v,
            "eq": lambda c, v: c == v,
        }
        intents = sorted(
            (
                pi
                for pi in self.payment_intents.values()
                if all(tests[op](pi.created, v) for op, v in bounds.items() if v is not None)
            ),
            key=lambda pi: (pi.created, pi.id),
            reverse=True,
        )
        after = _str(params, "starting_after")
        if after is not None:
            ids = [pi.id for pi in intents]
            if after not in ids:
                raise _bad_param(f"No such payment_intent: '{after}'", "starting_after")
            intents = intents[ids.index(after) + 1 :]
        return {
            "object": "list",
            "url": "/v1/payment_intents",
            "data": [pi.to_json() for pi in intents[:limit]],
            "has_more": len(intents) > limit,
        }

    def _search_intents(self, request: Request, params: Params) -> JSON:
        """Stripe's Search Query Language, the part we use: `metadata['k']:'v'` clauses joined
        by AND. Anything else is refused, as an unsupported query is on Stripe."""
        _reject_unknown(params, frozenset({"query", "limit", "page", "expand"}))
        query = _str(params, "query", required=True) or ""
        wanted: dict[str, str] = {}
        for clause in re.split(r"\s+AND\s+", query.strip()):
            match = _METADATA_CLAUSE.fullmatch(clause.strip())
            if match is None:
                raise _bad_param(f"Invalid search query: {clause!r}.", "query")
            wanted[match["key"]] = match["value"]
        limit = _positive_int(params, "limit") or 10
        found = [
            pi.to_json()
            for pi in sorted(self.payment_intents.values(), key=lambda pi: pi.created, reverse=True)
            if all(pi.metadata.get(k) == v for k, v in wanted.items())
        ]
        return {
            "object": "search_result",
            "url": "/v1/payment_intents/search",
            "data": found[:limit],
            "has_more": len(found) > limit,
            "next_page": None,
        }

    def _confirm_intent(self, request: Request, params: Params) -> JSON:
        _reject_unknown(
            params, frozenset({"payment_method", "capture_method", "expand", "return_url"})
        )
        token = _str(params, "payment_method")
        if token is not None:
            _card(token)
        capture_method = _choice(params, "capture_method", _CAPTURE_METHODS)
        pi = self._intent(request)
        if pi.status not in _CONFIRMABLE:
            raise _unexpected_state(pi, "confirm", _CONFIRMABLE)
        token = token or pi.payment_method
        if token is None:
            raise _missing_payment_method()
        if capture_method is not None:
            pi.capture_method = capture_method
        self._confirm(pi, token)
        return pi.to_json()

    def _capture_intent(self, request: Request, params: Params) -> JSON:
        _reject_unknown(params, frozenset({"amount_to_capture", "metadata", "expand"}))
        requested = _positive_int(params, "amount_to_capture")
        metadata = _metadata(params)
        pi = self._intent(request)
        if pi.status is not _S.REQUIRES_CAPTURE:
            raise _unexpected_state(pi, "capture", (_S.REQUIRES_CAPTURE,))
        amount = pi.amount_capturable if requested is None else requested
        if amount > pi.amount_capturable:
            raise _error(
                f"The amount to capture ({amount}) is greater than the amount capturable "
                f"({pi.amount_capturable}).",
                code="amount_too_large",
                param="amount_to_capture",
            )
        released = pi.amount_capturable - amount
        pi.metadata = _merge_metadata(pi.metadata, metadata)
        pi.status = _S.SUCCEEDED
        pi.amount_received = amount
        pi.amount_capturable = 0
        self._record(pi, LedgerKind.CAPTURE, amount)
        if released:
            # A partial capture releases the rest of the authorization for good.
            self._record(pi, LedgerKind.VOID, released)
        self._event("payment_intent.succeeded", pi.to_json())
        return pi.to_json()

    def _cancel_intent(self, request: Request, params: Params) -> JSON:
        _reject_unknown(params, frozenset({"cancellation_reason", "expand"}))
        reason = _choice(params, "cancellation_reason", _CANCELLATION_REASONS)
        pi = self._intent(request)
        if pi.status not in _CANCELABLE:
            raise _unexpected_state(pi, "cancel", _CANCELABLE)
        if pi.status is _S.REQUIRES_CAPTURE:
            self._record(pi, LedgerKind.VOID, pi.amount_capturable)
        pi.status = _S.CANCELED
        pi.amount_capturable = 0
        pi.next_action = None
        pi.cancellation_reason = reason
        pi.canceled_at = int(time.time())
        self._event("payment_intent.canceled", pi.to_json())
        return pi.to_json()

    # --- Refunds ------------------------------------------------------------------------

    def _create_refund(self, request: Request, params: Params) -> JSON:
        _reject_unknown(
            params,
            frozenset({"payment_intent", "charge", "amount", "reason", "metadata", "expand"}),
        )
        pi_id = _str(params, "payment_intent")
        charge = _str(params, "charge")
        requested = _positive_int(params, "amount")
        reason = _choice(params, "reason", _REFUND_REASONS)
        metadata = _merge_metadata({}, _metadata(params))
        pi = self._refundable_intent(pi_id, charge)
        remaining = pi.amount_received - pi.amount_refunded
        if remaining == 0:
            raise _error(
                f"Charge {pi.latest_charge} has already been refunded.",
                code="charge_already_refunded",
            )
        amount = remaining if requested is None else requested
        if amount > remaining:
            raise _error(
                f"Refund amount ({amount}) is greater than unrefunded amount on charge "
                f"({remaining}).",
                code="amount_too_large",
                param="amount",
            )
        refund = Refund(
            id=new_id("re"),
            amount=amount,
            currency=pi.currency,
            payment_intent=pi.id,
            charge=pi.latest_charge,
            reason=reason,
            metadata=metadata,
        )
        pi.amount_refunded += amount
        self.refunds[refund.id] = refund
        self._record(pi, LedgerKind.REFUND, amount, object_id=refund.id)
        charged = self._charge_json(pi)
        charged["refunds"] = {"object": "list", "data": [refund.to_json()]}
        self._event("charge.refunded", charged)
        return refund.to_json()

    def _retrieve_refund(self, request: Request, params: Params) -> JSON:
        _reject_unknown(params, frozenset({"expand"}))
        refund_id = request.path_params["refund"]
        refund = self.refunds.get(refund_id)
        if refund is None:
            raise _no_such("refund", refund_id, param="id", status=404)
        return refund.to_json()

    def _refundable_intent(self, pi_id: str | None, charge: str | None) -> PaymentIntent:
        if pi_id is None and charge is None:
            raise _bad_param(
                "One of `charge` or `payment_intent` is required.",
                "payment_intent",
                code="parameter_missing",
            )
        if pi_id is not None:
            pi = self.payment_intents.get(pi_id)
            if pi is None:
                raise _no_such("payment_intent", pi_id, param="payment_intent")
        else:
            found = [p for p in self.payment_intents.values() if p.latest_charge == charge]
            if not found:
                raise _no_such("charge", str(charge), param="charge")
            pi = found[0]
        if charge is not None and pi.latest_charge != charge:
            raise _bad_param("The charge does not belong to this PaymentIntent.", "charge")
        if pi.amount_received == 0:
            raise _error(
                f"This PaymentIntent ({pi.id}) does not have a successful charge to refund.",
                code="charge_not_refundable",
                param="payment_intent",
            )
        return pi

    # --- confirmation and its outcomes --------------------------------------------------

    def _confirm(self, pi: PaymentIntent, token: str) -> None:
        card = _card(token)
        pi.payment_method = token
        pi.last_payment_error = None
        pi.next_action = None
        match card.outcome:
            case cards.Outcome.SUCCEED:
                self._authorize(pi)
            case cards.Outcome.REQUIRES_ACTION:
                pi.status = _S.REQUIRES_ACTION
                pi.next_action = {"type": "use_stripe_sdk", "use_stripe_sdk": {}}
                self._event("payment_intent.requires_action", pi.to_json())
            case cards.Outcome.PROCESSING:
                pi.status = _S.PROCESSING
                self._event("payment_intent.processing", pi.to_json())
            case cards.Outcome.DECLINE:
                error = _decline_error(token, card.code, card.decline_code, card.message)
                self._fail(pi, error)
                raise StripeApiError(402, {**error, "payment_intent": pi.to_json()})

    def _authorize(self, pi: PaymentIntent) -> None:
        """The card said yes: charge now, or hold the funds for a later capture."""
        pi.latest_charge = new_id("ch")
        if pi.capture_method == "manual":
            pi.status = _S.REQUIRES_CAPTURE
            pi.amount_capturable = pi.amount
            self._record(pi, LedgerKind.AUTHORIZATION, pi.amount)
            self._event("payment_intent.amount_capturable_updated", pi.to_json())
        else:
            pi.status = _S.SUCCEEDED
            pi.amount_received = pi.amount
            self._record(pi, LedgerKind.CAPTURE, pi.amount)
            self._event("payment_intent.succeeded", pi.to_json())

    def _record(
        self, pi: PaymentIntent, kind: LedgerKind, amount: int, *, object_id: str | None = None
    ) -> None:
        self._ledger.record(
            gateway=GATEWAY,
            kind=kind,
            object_id=object_id or pi.latest_charge or pi.id,
            payment_intent=pi.id,
            amount=amount,
            currency=pi.currency,
            payment_id=pi.payment_id,
        )

    def _intent(self, request: Request) -> PaymentIntent:
        intent_id = request.path_params["intent"]
        pi = self.payment_intents.get(intent_id)
        if pi is None:
            raise _no_such("payment_intent", intent_id, param="intent", status=404)
        return pi

    def _fail(self, pi: PaymentIntent, error: JSON) -> None:
        # Stripe detaches a failed method: the customer must supply another one.
        pi.status = _S.REQUIRES_PAYMENT_METHOD
        pi.payment_method = None
        pi.last_payment_error = error
        self._event("payment_intent.payment_failed", pi.to_json())

    # --- control --------------------------------------------------------------------------

    async def _dispute(self, request: Request) -> Response:
        """The cardholder disputes a captured charge: `charge.dispute.created`."""
        headers = {"Request-Id": new_id("req", 14)}
        try:
            pi = self._intent(request)
            if pi.amount_received == 0:
                raise _error(
                    "Only a captured charge can be disputed.", code="charge_not_disputable"
                )
        except StripeApiError as exc:
            return _respond(exc.status, _json_bytes({"error": exc.error}), headers)
        dispute = {
            "id": new_id("dp"),
            "object": "dispute",
            "amount": pi.amount_received,
            "charge": pi.latest_charge,
            "currency": pi.currency,
            "payment_intent": pi.id,
            "reason": "fraudulent",
            "status": "needs_response",
            "created": int(time.time()),
            # Real disputes carry their own (empty) metadata; the sandbox copies the
            # payment's so the ingress can key the event without a lookup.
            "metadata": dict(pi.metadata),
        }
        self._event("charge.dispute.created", dispute)
        return _respond(200, _json_bytes(dispute), headers)

    async def _settle(self, request: Request) -> Response:
        """Finish a `processing` (or `requires_action`) intent as the network or 3DS would."""
        headers = {"Request-Id": new_id("req", 14)}
        try:
            outcome = await _control_param(request, "outcome")
            if outcome not in ("succeeded", "failed"):
                raise _bad_param("outcome must be 'succeeded' or 'failed'", "outcome")
            pi = self._intent(request)
            if pi.status not in _SETTLEABLE:
                raise _unexpected_state(pi, "settle", _SETTLEABLE)
            pi.next_action = None
            if outcome == "succeeded":
                self._authorize(pi)
            elif pi.status is _S.REQUIRES_ACTION:
                self._fail(pi, _authentication_error(pi.payment_method))
            else:
                self._fail(pi, _decline_error(pi.payment_method))
        except StripeApiError as exc:
            return _respond(exc.status, _json_bytes({"error": exc.error}), headers)
        return _respond(200, _json_bytes(pi.to_json()), headers)


def _card(token: str) -> cards.CardBehaviour:
    card = cards.lookup(token)
    if card is None:
        raise _error(
            f"No such PaymentMethod: '{token}'",
            code="resource_missing",
            param="payment_method",
            persist=False,
        )
    return card


def _payment_method_json(token: str | None) -> JSON | None:
    if token is None:
        return None
    card = cards.lookup(token)
    return {
        "id": token,
        "object": "payment_method",
        "type": "card",
        "card": {"brand": card.brand, "last4": card.last4, "exp_month": 12, "exp_year": 2034}
        if card
        else None,
    }


def _expanded(result: JSON, params: Params) -> JSON:
    """Honour `expand[]=payment_method` on PaymentIntent responses, as Stripe does."""
    expand = _str_list(params, "expand") or []
    if "payment_method" in expand and result.get("object") == "payment_intent":
        token = result.get("payment_method")
        result = {**result, "payment_method": _payment_method_json(token)}
    return result


def _decline_error(
    token: str | None,
    code: str | None = None,
    decline_code: str | None = None,
    message: str | None = None,
) -> JSON:
    return {
        "type": "card_error",
        "code": code or "card_declined",
        "decline_code": decline_code or "generic_decline",
        "message": message or "Your card was declined.",
        "payment_method": _payment_method_json(token),
    }


def _authentication_error(token: str | None) -> JSON:
    return {
        "type": "invalid_request_error",
        "code": "payment_intent_authentication_failure",
        "message": "We are unable to authenticate your payment method. Please choose a "
        "different payment method and try again.",
        "payment_method": _payment_method_json(token),
    }


def _missing_payment_method() -> StripeApiError:
    return _error(
        "You cannot confirm this PaymentIntent because it's missing a payment method. "
        "Update the payment_method and try again.",
        code="payment_intent_unexpected_state",
        persist=False,
    )


def _no_such(kind: str, object_id: str, *, param: str, status: int = 400) -> StripeApiError:
    return _error(
        f"No such {kind}: '{object_id}'", code="resource_missing", param=param, status=status
    )


async def _control_param(request: Request, name: str) -> str | None:
    """Read one field from a JSON or form body: control routes are called by hand too."""
    raw = (await request.body()).decode(errors="replace")
    if request.headers.get("content-type", "").startswith("application/json"):
        try:
            data = json.loads(raw or "{}")
        except json.JSONDecodeError:
            raise _bad_param("Body is not valid JSON.", name) from None
        value = data.get(name) if isinstance(data, dict) else None
        return value if isinstance(value, str) else None
    return _str(parse_form(raw), name)


async def _unrecognized(request: Request) -> Response:
    error = _error(
        f"Unrecognized request URL ({request.method}: {request.url.path}). The sandbox emulates "
        "only PaymentIntents and Refunds.",
        status=404,
    )
    return _respond(404, _json_bytes({"error": error.error}), {})
