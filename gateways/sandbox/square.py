"""Starlette routes emulating Square's v2 Payments and Refunds API, as `squareup` 46 calls it.

Only what our adapter and tests use is modelled, but that part follows Square closely enough
for the official SDK (`AsyncSquare`) to work unmodified: JSON bodies with the idempotency key
*inside* the body, Bearer tokens, the `Square-Version` header, Square's error envelope
`{"errors": [{"category", "code", "detail", "field"}]}` with Square's HTTP statuses (so the SDK
raises its own `ApiError` with parsed `.errors`), a declined payment returned *in* the error
body with status FAILED, and Square's idempotency rules (same key + same body replays the
first answer; same key + another body is `IDEMPOTENCY_KEY_REUSED`).

Test nonces (`source_id`). Square documents the first six for its own Sandbox; the ones marked
"ours" do not exist on Square and are here so that every outcome our pipeline knows can be
produced on demand:

| source_id                               | outcome                                          |
|-----------------------------------------|--------------------------------------------------|
| `cnon:card-nonce-ok`                    | COMPLETED (APPROVED with `autocomplete: false`)  |
| `cnon:card-nonce-declined`              | 402 `GENERIC_DECLINE`, payment FAILED            |
| `cnon:card-nonce-rejected-cvv`          | 402 `CVV_FAILURE`, payment FAILED                |
| `cnon:card-nonce-rejected-postalcode`   | 402 `ADDRESS_VERIFICATION_FAILURE`, FAILED       |
| `cnon:card-nonce-rejected-expiration`   | 402 `INVALID_EXPIRATION`, payment FAILED         |
| `cnon:card-nonce-already-used`          | 400 `CARD_TOKEN_USED`, no payment                |
| `cnon:card-nonce-insufficient-funds`    | (ours) 402 `INSUFFICIENT_FUNDS`, payment FAILED  |
| `cnon:card-nonce-requires-verification` | (ours) 402 `CARD_DECLINED_VERIFICATION_REQUIRED` |
|                                         | payment FAILED; APPROVED/COMPLETED instead when  |
|                                         | the body has a `verification_token` (verifyBuyer)|
| `cnon:card-nonce-pending`               | (ours) PENDING until the settle control route    |
| anything else                           | 400 `INVALID_CARD_DATA`, no payment              |

Declines carry category PAYMENT_METHOD_ERROR, rejections INVALID_REQUEST_ERROR. Any non-empty
Bearer token is accepted except `wrong-token` (401 UNAUTHORIZED). A replayed answer carries the
header `x-sandbox-idempotent-replayed: true` (ours: Square marks replays in no way).

Control routes, mounted at `/_sandbox/square`:
- `POST /payments/{id}/settle` with `outcome=completed|failed` (form or JSON) finishes a
  PENDING payment: COMPLETED (APPROVED if it was created with `autocomplete: false`) or FAILED.
- `POST /payments/{id}/dispute` disputes a COMPLETED payment (`dispute.created`).

Webhooks: `payment.created` when a payment is created, `payment.updated` on every later change
(status, refunded money), `refund.created` / `refund.updated`, and `dispute.created` from the
control route. Every event is signed as Square signs: `x-square-hmacsha256-signature` =
base64(HMAC-SHA256(signature key, notification URL + raw body)).

Where Square gives the ingress no way to find our payment id, the sandbox adds one. Real Square
carries `reference_id` only on the Payment; a Refund or a Dispute names the Square payment
(`payment_id`, `disputed_payment.payment_id`) and nothing of ours. The sandbox copies the
payment's `reference_id` onto refund and dispute objects as a top-level `reference_id` field
(a sandbox extension, not part of Square's schema); against real Square the ingress needs a
lookup from the Square payment id to our payment id instead.

Refunds start PENDING, as Square's card refunds do, and complete on the next turn of the event
loop (`refund.updated` COMPLETED, then `payment.updated` with the new `refunded_money`).
"""

from __future__ import annotations

import asyncio
import base64
import bisect
import hashlib
import hmac
import json
import re
import secrets
import string
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from types import MappingProxyType
from typing import Any, Final, TypeAlias
from urllib.parse import parse_qsl

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from gateways.sandbox.config import SandboxConfig
from gateways.sandbox.faults import Faults, InjectedFault
from gateways.sandbox.ledger import IdempotencyStore, Ledger, LedgerKind
from gateways.sandbox.webhooks import WebhookSender

__all__ = [
    "NONCES",
    "SIGNATURE_HEADER",
    "CardStatus",
    "NonceBehaviour",
    "Outcome",
    "Payment",
    "PaymentStatus",
    "Refund",
    "RefundStatus",
    "SquareSandbox",
    "signature_headers",
]

GATEWAY = "square"
SIGNATURE_HEADER = "x-square-hmacsha256-signature"
MERCHANT_ID = "SANDBOX_MERCHANT"
DEFAULT_LOCATION = "SANDBOX_LOCATION"
WRONG_TOKEN = "wrong-token"  # the one token the sandbox refuses, to exercise 401s

# Square's documented limits, enforced so that the adapter fails here rather than in production.
MAX_IDEMPOTENCY_KEY = 45
MAX_REFERENCE_ID = 40
MAX_NOTE = 500
MAX_REFUND_REASON = 192
# Square voids an uncompleted card authorization after this long (its default delay_duration).
AUTHORIZATION_HOLD = timedelta(days=7)
# ListPayments: at most 100 a page (the default), and without begin_time one year back.
LIST_PAGE = 100
LIST_DEFAULT_SPAN = timedelta(days=365)

JSON: TypeAlias = dict[str, Any]
Handler: TypeAlias = Callable[[Request, JSON], JSON]

_ID_ALPHABET = string.ascii_letters + string.digits
_CURRENCY = re.compile(r"[A-Z]{3}")
_SQUARE_VERSION = re.compile(r"\d{4}-\d{2}-\d{2}")
_ALL_METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"]
# HTTP status of an injected fault -> the code Square answers it with.
_FAULT_CODES = {500: "INTERNAL_SERVER_ERROR", 503: "SERVICE_UNAVAILABLE", 504: "GATEWAY_TIMEOUT"}

# Body fields each endpoint accepts. Anything else is `UNKNOWN_BODY_PARAMETER`: a field Square
# knows but the sandbox does not model would otherwise be silently ignored.
_CREATE_FIELDS = frozenset(
    {"source_id", "idempotency_key", "amount_money", "autocomplete", "reference_id"}
    | {"location_id", "note", "verification_token", "buyer_email_address", "customer_id"}
    | {"statement_description_identifier"}
)
_COMPLETE_FIELDS = frozenset({"version_token"})
_REFUND_FIELDS = frozenset(
    {"idempotency_key", "amount_money", "payment_id", "reason", "location_id"}
    | {"payment_version_token", "team_member_id"}
)


class PaymentStatus(StrEnum):
    APPROVED = "APPROVED"
    PENDING = "PENDING"
    COMPLETED = "COMPLETED"
    CANCELED = "CANCELED"
    FAILED = "FAILED"


class CardStatus(StrEnum):
    AUTHORIZED = "AUTHORIZED"
    CAPTURED = "CAPTURED"
    VOIDED = "VOIDED"
    FAILED = "FAILED"


class RefundStatus(StrEnum):
    PENDING = "PENDING"
    COMPLETED = "COMPLETED"
    REJECTED = "REJECTED"
    FAILED = "FAILED"


class Outcome(StrEnum):
    APPROVE = "approve"
    DECLINE = "decline"  # a payment is created, FAILED, and returned inside a 402
    REJECT = "reject"  # the request is refused before any payment exists
    PENDING = "pending"


@dataclass(frozen=True, slots=True)
class NonceBehaviour:
    outcome: Outcome
    brand: str = "VISA"
    last4: str = "1111"
    exp_month: int = 12
    exp_year: int = 2032
    code: str | None = None  # Square's error code for declines and rejections
    sandbox_only: bool = False  # not one of Square's own Sandbox values


def _decline(code: str, last4: str, *, sandbox_only: bool = False) -> NonceBehaviour:
    return NonceBehaviour(Outcome.DECLINE, last4=last4, code=code, sandbox_only=sandbox_only)


NONCES: Final[Mapping[str, NonceBehaviour]] = MappingProxyType(
    {
        "cnon:card-nonce-ok": NonceBehaviour(Outcome.APPROVE),
        "cnon:card-nonce-declined": _decline("GENERIC_DECLINE", "0002"),
        "cnon:card-nonce-rejected-cvv": _decline("CVV_FAILURE", "0101"),
        "cnon:card-nonce-rejected-postalcode": _decline("ADDRESS_VERIFICATION_FAILURE", "0036"),
        "cnon:card-nonce-rejected-expiration": _decline("INVALID_EXPIRATION", "0069"),
        "cnon:card-nonce-already-used": NonceBehaviour(Outcome.REJECT, code="CARD_TOKEN_USED"),
        "cnon:card-nonce-insufficient-funds": _decline(
            "INSUFFICIENT_FUNDS", "9995", sandbox_only=True
        ),
        "cnon:card-nonce-requires-verification": _decline(
            "CARD_DECLINED_VERIFICATION_REQUIRED", "3220", sandbox_only=True
        ),
        "cnon:card-nonce-pending": NonceBehaviour(Outcome.PENDING, last4="0077", sandbox_only=True),
    }
)


def new_id(length: int = 29) -> str:
    return "".join(secrets.choice(_ID_ALPHABET) for _ in range(length))


def _now() -> str:
    """RFC 3339 in UTC with milliseconds, as Square writes its timestamps."""
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _list_time(value: str | None, name: str) -> datetime | None:
    """An RFC 3339 time: with `Z` or an offset (a time without one is no RFC 3339 time)."""
    if not value:
        return None
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        moment = None
    if moment is None or moment.tzinfo is None:
        raise _error("INVALID_TIME", f"{name} must be an RFC 3339 timestamp", status=400)
    return moment


def _money(amount: int, currency: str) -> JSON:
    return {"amount": amount, "currency": currency}


def signature_headers(body: bytes, *, signature_key: str, notification_url: str) -> dict[str, str]:
    """The headers Square sends with a webhook: an HMAC over the notification URL + raw body."""
    digest = hmac.new(
        signature_key.encode(), notification_url.encode() + body, hashlib.sha256
    ).digest()
    return {SIGNATURE_HEADER: base64.b64encode(digest).decode(), "square-environment": "Sandbox"}


# --- objects ----------------------------------------------------------------------------


@dataclass(slots=True)
class Payment:
    id: str
    amount: int
    currency: str
    location_id: str
    reference_id: str | None
    note: str | None
    nonce: str
    card: NonceBehaviour
    autocomplete: bool
    status: PaymentStatus = PaymentStatus.PENDING
    card_status: CardStatus | None = None
    created_at: str = field(default_factory=_now)
    updated_at: str = ""
    version_token: str = field(default_factory=new_id)
    approved: bool = False  # the card network said yes at some point
    refunded: int = 0  # completed refunds
    refund_pending: int = 0  # refunds not yet completed: they still count against the total
    refund_ids: list[str] = field(default_factory=list)
    errors: list[JSON] = field(default_factory=list)
    authorized_at: str | None = None
    captured_at: str | None = None
    voided_at: str | None = None
    disputed: bool = False

    def __post_init__(self) -> None:
        self.updated_at = self.updated_at or self.created_at

    def touch(self) -> None:
        """Every change gets a new `updated_at` and `version_token`, as on Square."""
        self.updated_at = _now()
        self.version_token = new_id()

    @property
    def refundable(self) -> int:
        return self.amount - self.refunded - self.refund_pending

    def to_json(self) -> JSON:
        out: JSON = {
            "id": self.id,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
            "amount_money": _money(self.amount, self.currency),
            "total_money": _money(self.amount, self.currency),
            "approved_money": _money(self.amount if self.approved else 0, self.currency),
            "status": self.status.value,
            "source_type": "CARD",
            "card_details": self._card_details(),
            "location_id": self.location_id,
            "receipt_number": self.id[:4],
            "application_details": {"square_product": "ECOMMERCE_API"},
            "version_token": self.version_token,
        }
        if self.refunded:
            out["refunded_money"] = _money(self.refunded, self.currency)
        if self.refund_ids:
            out["refund_ids"] = list(self.refund_ids)
        if not self.autocomplete:
            out["delay_duration"] = "PT168H"
            out["delay_action"] = "CANCEL"
            out["delayed_until"] = _shift(self.created_at, AUTHORIZATION_HOLD)
        if self.status is PaymentStatus.COMPLETED:
            out["receipt_url"] = f"https://squareupsandbox.com/receipt/preview/{self.id}"
        if self.reference_id is not None:
            out["reference_id"] = self.reference_id
        if self.note is not None:
            out["note"] = self.note
        return out

    def _card_details(self) -> JSON:
        card = self.card
        fingerprint = hashlib.sha256(self.nonce.encode()).hexdigest()[:40]
        details: JSON = {
            "card": {
                "card_brand": card.brand,
                "last_4": card.last4,
                "exp_month": card.exp_month,
                "exp_year": card.exp_year,
                "fingerprint": f"sq-1-{fingerprint}",
                "card_type": "CREDIT",
                "prepaid_type": "NOT_PREPAID",
            },
            "entry_method": "KEYED",
            "cvv_status": "CVV_REJECTED" if card.code == "CVV_FAILURE" else "CVV_ACCEPTED",
            "avs_status": (
                "AVS_REJECTED" if card.code == "ADDRESS_VERIFICATION_FAILURE" else "AVS_ACCEPTED"
            ),
            "statement_description": "SQ *SANDBOX",
            "card_payment_timeline": {
                k: v
                for k, v in (
                    ("authorized_at", self.authorized_at),
                    ("captured_at", self.captured_at),
                    ("voided_at", self.voided_at),
                )
                if v is not None
            },
        }
        if self.card_status is not None:
            details["status"] = self.card_status.value
        if self.approved:
            details["auth_result_code"] = self.id[-6:].upper()
        if self.errors:
            details["errors"] = list(self.errors)
        return details


@dataclass(slots=True)
class Refund:
    id: str
    payment_id: str
    amount: int
    currency: str
    location_id: str
    reason: str | None
    reference_id: str | None  # sandbox extension: the payment's reference_id (see module doc)
    status: RefundStatus = RefundStatus.PENDING
    created_at: str = field(default_factory=_now)
    updated_at: str = ""

    def __post_init__(self) -> None:
        self.updated_at = self.updated_at or self.created_at

    def to_json(self) -> JSON:
        out: JSON = {
            "id": self.id,
            "status": self.status.value,
            "location_id": self.location_id,
            "destination_type": "CARD",
            "amount_money": _money(self.amount, self.currency),
            "payment_id": self.payment_id,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
        }
        if self.reason is not None:
            out["reason"] = self.reason
        if self.reference_id is not None:
            out["reference_id"] = self.reference_id
        return out


def _shift(timestamp: str, delta: timedelta) -> str:
    moved = datetime.fromisoformat(timestamp) + delta
    return moved.isoformat(timespec="milliseconds").replace("+00:00", "Z")


# --- errors -----------------------------------------------------------------------------


class SquareApiError(Exception):
    """An error answer in Square's envelope.

    `persist` is False for requests refused before they did anything (malformed fields, an
    unknown nonce): nothing is stored under the idempotency key, so a corrected retry can
    reuse it. `extra` is merged into the body, e.g. the FAILED payment of a decline.
    """

    def __init__(
        self, status: int, errors: list[JSON], *, persist: bool = True, extra: JSON | None = None
    ) -> None:
        super().__init__(errors[0].get("detail") if errors else None)
        self.status = status
        self.errors = errors
        self.persist = persist
        self.extra = extra or {}

    def body(self) -> JSON:
        return {"errors": self.errors, **self.extra}


def _error(
    code: str,
    detail: str,
    *,
    status: int = 400,
    category: str = "INVALID_REQUEST_ERROR",
    field: str | None = None,
    persist: bool = True,
    extra: JSON | None = None,
) -> SquareApiError:
    error: JSON = {"category": category, "code": code, "detail": detail}
    if field is not None:
        error["field"] = field
    return SquareApiError(status, [error], persist=persist, extra=extra)


def _bad_field(code: str, detail: str, field: str) -> SquareApiError:
    return _error(code, detail, field=field, persist=False)


def _not_found(kind: str, object_id: str) -> SquareApiError:
    return _error("NOT_FOUND", f"Could not find {kind} with id: {object_id}", status=404)


# --- request body readers ---------------------------------------------------------------


def _reject_unknown(body: JSON, allowed: frozenset[str]) -> None:
    for name in body:
        if name not in allowed:
            raise _bad_field(
                "UNKNOWN_BODY_PARAMETER",
                f"Unknown body parameter `{name}` (or one the sandbox does not emulate).",
                name,
            )


def _string(
    body: JSON, name: str, *, required: bool = False, max_length: int | None = None
) -> str | None:
    value = body.get(name)
    if value is None:
        if required:
            raise _bad_field("MISSING_REQUIRED_PARAMETER", f"Field must be set: {name}", name)
        return None
    if not isinstance(value, str):
        raise _bad_field("EXPECTED_STRING", f"Expected a string value for {name}", name)
    if required and not value:
        raise _bad_field("VALUE_TOO_SHORT", f"Field must not be empty: {name}", name)
    if max_length is not None and len(value) > max_length:
        raise _bad_field(
            "VALUE_TOO_LONG", f"Field must be at most {max_length} characters: {name}", name
        )
    return value


def _boolean(body: JSON, name: str) -> bool | None:
    value = body.get(name)
    if value is not None and not isinstance(value, bool):
        raise _bad_field("EXPECTED_BOOLEAN", f"Expected a boolean value for {name}", name)
    return value


def _amount_money(body: JSON, name: str = "amount_money") -> tuple[int, str]:
    value = body.get(name)
    if value is None:
        raise _bad_field("MISSING_REQUIRED_PARAMETER", f"Field must be set: {name}", name)
    if not isinstance(value, dict):
        raise _bad_field("EXPECTED_OBJECT", f"Expected an object for {name}", name)
    amount = value.get("amount")
    # bool is an int subclass and a float is never money: both are refused.
    if type(amount) is not int:
        raise _bad_field(
            "EXPECTED_INTEGER", f"Expected an integer for {name}.amount", f"{name}.amount"
        )
    if amount < 1:
        raise _bad_field("VALUE_TOO_LOW", f"{name}.amount must be positive", f"{name}.amount")
    currency = value.get("currency")
    if not isinstance(currency, str) or not _CURRENCY.fullmatch(currency):
        raise _bad_field(
            "INVALID_ENUM_VALUE",
            f"{name}.currency must be an ISO 4217 code such as USD",
            f"{name}.currency",
        )
    return amount, currency


def _idempotency_key(body: JSON) -> str:
    key = _string(body, "idempotency_key", required=True, max_length=MAX_IDEMPOTENCY_KEY)
    assert key is not None  # required=True
    return key


def _fingerprint(route: str, body: JSON) -> str:
    # Key order carries no meaning in JSON, so it must not make a retry look different.
    canonical = json.dumps([route, body], sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


# --- HTTP plumbing ----------------------------------------------------------------------


def _respond(status: int, body: bytes, headers: Mapping[str, str] | None = None) -> Response:
    return Response(body, status_code=status, media_type="application/json", headers=headers)


def _json_bytes(obj: JSON) -> bytes:
    return json.dumps(obj).encode()


def _access_token(request: Request) -> str:
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token or token == WRONG_TOKEN:
        raise _error(
            "UNAUTHORIZED",
            "This request could not be authorized.",
            status=401,
            category="AUTHENTICATION_ERROR",
            persist=False,
        )
    return token


def _check_version(request: Request) -> None:
    version = request.headers.get("square-version")
    if version is not None and not _SQUARE_VERSION.fullmatch(version):
        raise _error(
            "INVALID_SQUARE_VERSION_FORMAT",
            f"Invalid Square-Version format: {version!r}; expected YYYY-MM-DD.",
            field="Square-Version",
            persist=False,
        )


async def _json_body(request: Request) -> JSON:
    raw = await request.body()
    if not raw.strip():
        return {}  # CancelPayment sends no body; CompletePayment may send none either
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise _error("EXPECTED_JSON_BODY", "The request body is not valid JSON.") from None
    if not isinstance(body, dict):
        raise _error("EXPECTED_JSON_BODY", "The request body must be a JSON object.")
    return body


async def _control_field(request: Request, name: str) -> str | None:
    """One field from a JSON or form body: control routes are called by hand too."""
    if request.headers.get("content-type", "").startswith("application/json"):
        body = await _json_body(request)
        value = body.get(name)
        return value if isinstance(value, str) else None
    # Parsed by hand: Starlette's form parser needs python-multipart, which we do not ship.
    raw = (await request.body()).decode(errors="replace")
    return dict(parse_qsl(raw)).get(name)


async def _unrecognized(request: Request) -> Response:
    error = _error(
        "NOT_FOUND",
        f"Unrecognized request URL ({request.method} {request.url.path}). The sandbox "
        "emulates only the Payments and Refunds APIs.",
        status=404,
    )
    return _respond(404, _json_bytes(error.body()))


class SquareSandbox:
    """State and routes of the emulated Square seller account (every token shares it)."""

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
        self._config = config
        target = config.webhook_url(GATEWAY)
        # Square signs the URL configured on the subscription, which behind a proxy is not the
        # one we deliver to; without an explicit one they are the same.
        self._notification_url = config.square_notification_url or target
        webhooks.register(GATEWAY, url=target, sign=self.sign)
        self.payments: dict[str, Payment] = {}
        # Every payment's creation time and id, in creation order: ListPayments finds a time
        # range by bisection, so a listing costs the payments in it, not every payment.
        self._created: list[tuple[datetime, str]] = []
        self.refunds: dict[str, Refund] = {}
        self.disputes: dict[str, JSON] = {}

    def reset(self) -> None:
        self.payments.clear()
        self._created.clear()
        self.refunds.clear()
        self.disputes.clear()

    def sign(self, body: bytes) -> dict[str, str]:
        """Webhook headers for `body` (the `sign` callable registered with the sender)."""
        # With no URL nothing is ever delivered, so nothing is signed with the empty one.
        return signature_headers(
            body,
            signature_key=self._config.square_signature_key,
            notification_url=self._notification_url or "",
        )

    def routes(self) -> list[BaseRoute]:
        """The API; mount it at the prefix that clients use as their Square base URL."""
        api = self._endpoint
        return [
            Route("/v2/payments", api(self._create_payment, "payments"), methods=["POST"]),
            Route("/v2/payments", api(self._list_payments), methods=["GET"]),
            Route("/v2/payments/{payment}", api(self._get_payment), methods=["GET"]),
            Route("/v2/payments/{payment}/complete", api(self._complete_payment), methods=["POST"]),
            Route("/v2/payments/{payment}/cancel", api(self._cancel_payment), methods=["POST"]),
            Route("/v2/refunds", api(self._refund_payment, "refunds"), methods=["POST"]),
            Route("/v2/refunds/{refund}", api(self._get_refund), methods=["GET"]),
            # Last: anything else gets Square's JSON 404, which the SDK can parse.
            Route("/{path:path}", _unrecognized, methods=_ALL_METHODS),
        ]

    def control_routes(self) -> list[BaseRoute]:
        """Test-only levers that Square itself would pull (settlements, disputes)."""
        return [
            Route("/payments/{payment}/settle", self._settle, methods=["POST"]),
            Route("/payments/{payment}/dispute", self._dispute, methods=["POST"]),
        ]

    # --- request pipeline: auth, faults, idempotency ------------------------------------

    def _endpoint(
        self, handler: Handler, idempotent_route: str | None = None
    ) -> Callable[[Request], Awaitable[Response]]:
        """Wrap a handler; `idempotent_route` names the key scope of endpoints that take one."""

        async def endpoint(request: Request) -> Response:
            try:
                return await self._handle(request, handler, idempotent_route)
            except InjectedFault as fault:
                error = _error(
                    _FAULT_CODES.get(fault.status, "INTERNAL_SERVER_ERROR"),
                    f"Sandbox fault: {fault.kind}.",
                    status=fault.status,
                    category="API_ERROR",
                )
                return _respond(fault.status, _json_bytes(error.body()))

        return endpoint

    async def _handle(self, request: Request, handler: Handler, route: str | None) -> Response:
        try:
            token = _access_token(request)
            _check_version(request)
            body = await _json_body(request) if request.method == "POST" else {}
            key = _idempotency_key(body) if route is not None else None
        except SquareApiError as exc:
            await self._faults.before(GATEWAY)
            return _respond(exc.status, _json_bytes(exc.body()))

        if route is None or key is None:
            await self._faults.before(GATEWAY)
            status, payload, _ = self._execute(handler, request, body)
            await self._faults.after(GATEWAY)
            return _respond(status, payload)

        scope = f"{GATEWAY}:{token}:{route}:{key}"
        fingerprint = _fingerprint(route, body)
        async with self._idempotency.lock(scope):
            stored = self._idempotency.get(scope)
            # The latency sits between the lookup and the execution, where a slow gateway is
            # slow: only the lock keeps a duplicate that arrives meanwhile from executing too.
            await self._faults.before(GATEWAY)
            if stored is not None:
                if stored.fingerprint != fingerprint:
                    error = _error(
                        "IDEMPOTENCY_KEY_REUSED",
                        f"The idempotency key {key!r} was already used for a different request.",
                        field="idempotency_key",
                    )
                    return _respond(400, _json_bytes(error.body()))
                # Square has no replay header; this one is the sandbox's, for tests.
                replayed = {"x-sandbox-idempotent-replayed": "true"}
                return _respond(stored.status, stored.body, replayed)
            status, payload, persist = self._execute(handler, request, body)
            if persist:
                self._idempotency.put(scope, fingerprint=fingerprint, status=status, body=payload)
        await self._faults.after(GATEWAY)  # the work is done; the answer may still be lost
        return _respond(status, payload)

    @staticmethod
    def _execute(handler: Handler, request: Request, body: JSON) -> tuple[int, bytes, bool]:
        # Handlers are synchronous on purpose: with no await inside, each one mutates the
        # state atomically with respect to every other request on the loop.
        try:
            return 200, _json_bytes(handler(request, body)), True
        except SquareApiError as exc:
            return exc.status, _json_bytes(exc.body()), exc.persist

    # --- webhooks -------------------------------------------------------------------------

    def _event(self, event_type: str, object_type: str, object_id: str, wrapped: JSON) -> None:
        event_id = str(uuid.uuid4())
        event: JSON = {
            "merchant_id": MERCHANT_ID,
            "type": event_type,
            "event_id": event_id,
            "created_at": _now(),
            "data": {"type": object_type, "id": object_id, "object": wrapped},
        }
        self._webhooks.emit(GATEWAY, event, event_id=event_id, event_type=event_type)

    def _payment_event(self, event_type: str, payment: Payment) -> None:
        self._event(event_type, "payment", payment.id, {"payment": payment.to_json()})

    def _refund_event(self, event_type: str, refund: Refund) -> None:
        self._event(event_type, "refund", refund.id, {"refund": refund.to_json()})

    # --- payments -------------------------------------------------------------------------

    def _create_payment(self, request: Request, body: JSON) -> JSON:
        _reject_unknown(body, _CREATE_FIELDS)
        source_id = _string(body, "source_id", required=True) or ""
        amount, currency = _amount_money(body)
        autocomplete = _boolean(body, "autocomplete")
        reference_id = _string(body, "reference_id", max_length=MAX_REFERENCE_ID)
        note = _string(body, "note", max_length=MAX_NOTE)
        location_id = _string(body, "location_id") or DEFAULT_LOCATION
        verified = _string(body, "verification_token") is not None
        card = _nonce(source_id)
        payment = Payment(
            id=new_id(),
            amount=amount,
            currency=currency,
            location_id=location_id,
            reference_id=reference_id,
            note=note,
            nonce=source_id,
            card=card,
            autocomplete=True if autocomplete is None else autocomplete,
        )
        self.payments[payment.id] = payment
        created = _list_time(payment.created_at, "created_at")
        assert created is not None
        bisect.insort_right(self._created, (created, payment.id), key=lambda entry: entry[0])
        match card.outcome:
            case Outcome.PENDING:
                self._payment_event("payment.created", payment)
            case Outcome.DECLINE if not (verified and _verification_only(card)):
                self._fail(payment, card.code or "GENERIC_DECLINE", created=True)
                raise SquareApiError(
                    402, list(payment.errors), extra={"payment": payment.to_json()}
                )
            case _:
                self._approve(payment, created=True)
        return {"payment": payment.to_json()}

    def _list_payments(self, request: Request, body: JSON) -> JSON:
        """ListPayments as Square answers it: payments whose `created_at` is in
        [begin_time, end_time) (begin inclusive, end exclusive; RFC 3339; by default one year
        ago and now), newest first unless `sort_order=ASC`, `limit` a page (at most 100; more
        is ignored for 100) and an opaque `cursor` for the next."""
        query = request.query_params
        now = datetime.now(UTC)
        begin = _list_time(query.get("begin_time"), "begin_time") or now - LIST_DEFAULT_SPAN
        end = _list_time(query.get("end_time"), "end_time") or now
        try:
            limit = int(query.get("limit") or LIST_PAGE)
            start = int(query.get("cursor") or 0)
        except ValueError:
            raise _error("INVALID_VALUE", "limit and cursor must be integers", status=400) from None
        if not 0 < limit <= LIST_PAGE:
            limit = LIST_PAGE
        location = query.get("location_id")
        # Compared as instants (a time with an offset, or with more precision, is exact).
        lo = bisect.bisect_left(self._created, begin, key=lambda entry: entry[0])
        hi = bisect.bisect_left(self._created, end, key=lambda entry: entry[0])
        in_range = (self.payments[payment_id] for _, payment_id in self._created[lo:hi])
        matching = [p for p in in_range if location is None or p.location_id == location]
        if query.get("sort_order") != "ASC":
            matching.reverse()
        page = matching[start : start + limit]
        out: JSON = {"payments": [p.to_json() for p in page]} if page else {}
        if start + limit < len(matching):
            out["cursor"] = str(start + limit)
        return out

    def _get_payment(self, request: Request, body: JSON) -> JSON:
        return {"payment": self._payment(request).to_json()}

    def _complete_payment(self, request: Request, body: JSON) -> JSON:
        _reject_unknown(body, _COMPLETE_FIELDS)
        payment = self._payment(request)
        _check_version_token(payment, _string(body, "version_token"), "version_token")
        if payment.status is not PaymentStatus.APPROVED:
            raise _wrong_state(payment, "completed")
        self._capture(payment)
        return {"payment": payment.to_json()}

    def _cancel_payment(self, request: Request, body: JSON) -> JSON:
        payment = self._payment(request)
        if payment.status is not PaymentStatus.APPROVED:
            raise _wrong_state(payment, "canceled")
        payment.status = PaymentStatus.CANCELED
        payment.card_status = CardStatus.VOIDED
        payment.voided_at = _now()
        payment.touch()
        self._record(payment, LedgerKind.VOID, payment.amount)
        self._payment_event("payment.updated", payment)
        return {"payment": payment.to_json()}

    def _payment(self, request: Request) -> Payment:
        payment_id = request.path_params["payment"]
        payment = self.payments.get(payment_id)
        if payment is None:
            raise _not_found("payment", payment_id)
        return payment

    def _approve(self, payment: Payment, *, created: bool) -> None:
        """The card network said yes: complete now (autocomplete) or hold the funds."""
        payment.status = PaymentStatus.APPROVED
        payment.card_status = CardStatus.AUTHORIZED
        payment.approved = True
        payment.authorized_at = _now()
        payment.touch()
        if not payment.autocomplete:
            self._record(payment, LedgerKind.AUTHORIZATION, payment.amount)
        # Square announces the approval first and the completion as an update.
        self._payment_event("payment.created" if created else "payment.updated", payment)
        if payment.autocomplete:
            self._capture(payment)

    def _capture(self, payment: Payment) -> None:
        payment.status = PaymentStatus.COMPLETED
        payment.card_status = CardStatus.CAPTURED
        payment.captured_at = _now()
        payment.touch()
        self._record(payment, LedgerKind.CAPTURE, payment.amount)
        self._payment_event("payment.updated", payment)

    def _fail(self, payment: Payment, code: str, *, created: bool) -> None:
        payment.status = PaymentStatus.FAILED
        payment.card_status = CardStatus.FAILED
        payment.errors = [
            {
                "category": "PAYMENT_METHOD_ERROR",
                "code": code,
                "detail": f"Authorization error: '{code}'",
            }
        ]
        payment.touch()
        self._payment_event("payment.created" if created else "payment.updated", payment)

    def _record(
        self, payment: Payment, kind: LedgerKind, amount: int, *, object_id: str | None = None
    ) -> None:
        self._ledger.record(
            gateway=GATEWAY,
            kind=kind,
            object_id=object_id or payment.id,
            payment_intent=payment.id,
            amount=amount,
            currency=payment.currency,
            payment_id=payment.reference_id,
        )

    # --- refunds --------------------------------------------------------------------------

    def _refund_payment(self, request: Request, body: JSON) -> JSON:
        _reject_unknown(body, _REFUND_FIELDS)
        payment_id = _string(body, "payment_id", required=True) or ""
        amount, currency = _amount_money(body)
        reason = _string(body, "reason", max_length=MAX_REFUND_REASON)
        payment = self.payments.get(payment_id)
        if payment is None:
            raise _not_found("payment", payment_id)
        _check_version_token(
            payment, _string(body, "payment_version_token"), "payment_version_token"
        )
        _check_refundable(payment, amount, currency)
        refund = Refund(
            id=f"{payment.id}_{new_id()}",
            payment_id=payment.id,
            amount=amount,
            currency=currency,
            location_id=payment.location_id,
            reason=reason,
            reference_id=payment.reference_id,
        )
        self.refunds[refund.id] = refund
        payment.refund_pending += amount
        payment.refund_ids.append(refund.id)
        payment.touch()
        self._record(payment, LedgerKind.REFUND, amount, object_id=refund.id)
        self._refund_event("refund.created", refund)
        # Card refunds settle asynchronously on Square; here, right after this answer.
        asyncio.get_running_loop().call_soon(self._complete_refund, refund.id)
        return {"refund": refund.to_json()}

    def _complete_refund(self, refund_id: str) -> None:
        refund = self.refunds.get(refund_id)
        payment = self.payments.get(refund.payment_id) if refund else None
        if refund is None or payment is None or refund.status is not RefundStatus.PENDING:
            return  # reset meanwhile, or already settled
        refund.status = RefundStatus.COMPLETED
        refund.updated_at = _now()
        payment.refund_pending -= refund.amount
        payment.refunded += refund.amount
        payment.touch()
        self._refund_event("refund.updated", refund)
        self._payment_event("payment.updated", payment)

    def _get_refund(self, request: Request, body: JSON) -> JSON:
        refund_id = request.path_params["refund"]
        refund = self.refunds.get(refund_id)
        if refund is None:
            raise _not_found("refund", refund_id)
        return {"refund": refund.to_json()}

    # --- control --------------------------------------------------------------------------

    async def _settle(self, request: Request) -> Response:
        """Finish a PENDING payment as the network would: `outcome=completed|failed`."""
        try:
            outcome = await _control_field(request, "outcome")
            if outcome not in ("completed", "failed"):
                raise _bad_field(
                    "INVALID_VALUE", "outcome must be 'completed' or 'failed'", "outcome"
                )
            payment = self._payment(request)
            if payment.status is not PaymentStatus.PENDING:
                raise _wrong_state(payment, "settled")
            if outcome == "completed":
                self._approve(payment, created=False)
            else:
                self._fail(payment, "GENERIC_DECLINE", created=False)
        except SquareApiError as exc:
            return _respond(exc.status, _json_bytes(exc.body()))
        return _respond(200, _json_bytes({"payment": payment.to_json()}))

    async def _dispute(self, request: Request) -> Response:
        """The cardholder disputes a completed payment: `dispute.created`."""
        try:
            payment = self._payment(request)
            if payment.status is not PaymentStatus.COMPLETED:
                raise _wrong_state(payment, "disputed")
        except SquareApiError as exc:
            return _respond(exc.status, _json_bytes(exc.body()))
        payment.disputed = True
        dispute = _dispute_json(payment)
        self.disputes[dispute["id"]] = dispute
        # Square wraps the dispute as data.object.object (not data.object.dispute), as the
        # SDK's DisputeCreatedEventObject models it.
        self._event("dispute.created", "dispute", dispute["id"], {"object": dispute})
        return _respond(200, _json_bytes({"dispute": dispute}))


def _nonce(source_id: str) -> NonceBehaviour:
    card = NONCES.get(source_id)
    if card is None:
        raise _bad_field(
            "INVALID_CARD_DATA", f"Invalid card data: unknown source_id {source_id!r}", "source_id"
        )
    if card.outcome is Outcome.REJECT:
        raise _bad_field(
            card.code or "INVALID_CARD_DATA", "The card nonce was already used.", "source_id"
        )
    return card


def _verification_only(card: NonceBehaviour) -> bool:
    """A decline that a buyer verification (3-D Secure via verifyBuyer) would have avoided."""
    return card.code == "CARD_DECLINED_VERIFICATION_REQUIRED"


def _wrong_state(payment: Payment, action: str) -> SquareApiError:
    return _error(
        "BAD_REQUEST",
        f"Payment {payment.id} is {payment.status.value} and cannot be {action}.",
    )


def _check_version_token(payment: Payment, token: str | None, field_name: str) -> None:
    if token is not None and token != payment.version_token:
        raise _error(
            "VERSION_MISMATCH",
            "The payment was changed since this version_token was issued.",
            field=field_name,
        )


def _check_refundable(payment: Payment, amount: int, currency: str) -> None:
    if payment.status is PaymentStatus.APPROVED:
        raise _error(
            "REFUND_ERROR_PAYMENT_NEEDS_COMPLETION",
            "The payment must be completed before it can be refunded.",
            field="payment_id",
        )
    if payment.status is not PaymentStatus.COMPLETED:
        raise _error(
            "PAYMENT_NOT_REFUNDABLE",
            f"Payment {payment.id} is {payment.status.value}: nothing to refund.",
            field="payment_id",
        )
    if payment.disputed:
        raise _error(
            "PAYMENT_NOT_REFUNDABLE_DUE_TO_DISPUTE",
            "The payment is disputed and cannot be refunded.",
            field="payment_id",
        )
    if currency != payment.currency:
        raise _error(
            "CURRENCY_MISMATCH",
            f"The refund currency {currency} differs from the payment's {payment.currency}.",
            field="amount_money.currency",
        )
    if amount > payment.refundable:
        raise _error(
            "REFUND_AMOUNT_INVALID",
            f"The requested refund amount ({amount}) exceeds the amount available to refund "
            f"({payment.refundable}).",
            field="amount_money.amount",
        )


def _dispute_json(payment: Payment) -> JSON:
    now = _now()
    dispute_id = new_id(22)
    dispute: JSON = {
        "id": dispute_id,
        "dispute_id": dispute_id,
        "amount_money": _money(payment.amount - payment.refunded, payment.currency),
        "reason": "NO_KNOWLEDGE",
        "state": "EVIDENCE_REQUIRED",
        "due_at": _shift(now, timedelta(days=14)),
        "disputed_payment": {"payment_id": payment.id},
        "card_brand": payment.card.brand,
        "created_at": now,
        "updated_at": now,
        "reported_at": now,
        "brand_dispute_id": new_id(12),
        "version": 1,
        "location_id": payment.location_id,
    }
    if payment.reference_id is not None:
        dispute["reference_id"] = payment.reference_id  # sandbox extension (see module doc)
    return dispute
