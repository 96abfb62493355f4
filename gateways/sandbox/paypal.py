"""Starlette routes emulating PayPal's REST API as `paypal-server-sdk` 2.4.0 calls it.

OAuth client credentials, Orders v2 and Payments v2 (authorizations, captures, refunds), with
PayPal's error envelope and HTTP statuses (so the SDK raises its own `ErrorException` carrying
`details[].issue`), `PayPal-Request-Id` idempotency, and webhooks signed as PayPal signs them:
RSA PKCS#1 v1.5 SHA-256 over `transmission_id|transmission_time|webhook_id|crc32(body)`, with
the certificate served by URL (`GET /_sandbox/paypal/cert.pem`).

The server-side vaulted-card flow is modelled in depth: an order created with
`payment_source.card.vault_id` is processed at once, as PayPal does a single-step order (which
needs a `PayPal-Request-Id`). An order without a payment source waits for the buyer: `CREATED`
with an `approve` link, then capture or authorize once approved.

Test vault ids (`payment_source.card.vault_id`), for intent CAPTURE / intent AUTHORIZE:

- `paypal_vault_ok`: 201, order COMPLETED with a COMPLETED capture / a CREATED authorization.
- `paypal_vault_declined`: 422 `INSTRUMENT_DECLINED`; a DECLINED capture / DENIED
  authorization is kept on the order.
- `paypal_vault_insufficient`: 201, order COMPLETED with a DECLINED capture / DENIED
  authorization whose `processor_response.response_code` is 5120 (INSUFFICIENT_FUNDS).
- `paypal_vault_3ds`: 201, order PAYER_ACTION_REQUIRED with a `payer-action` link; capture /
  authorize the order once the buyer approved it.
- `paypal_vault_pending`: 201, order COMPLETED with a PENDING capture / authorization
  (`status_details.reason` PENDING_REVIEW) until settled through a control route.
- anything else: 422 `TOKEN_ID_NOT_FOUND`.

Control routes, under `/_sandbox/paypal`:

- `GET /cert.pem`: the certificate whose key signs webhooks (the `PAYPAL-CERT-URL`).
- `GET /stats`: `{"tokens_issued": n}` since the last reset.
- `GET, POST /token_ttl`: read or set (`expires_in`, JSON or form) new tokens' lifetime.
- `GET, POST /orders/{id}/approve`: the buyer approves (the `approve`/`payer-action` link).
- `POST /captures/{id}/settle`: `outcome=completed|denied` for a PENDING capture.
- `POST /authorizations/{id}/settle`: `outcome=completed|denied` for a PENDING authorization.
- `POST /captures/{id}/dispute`: the buyer disputes a capture (`CUSTOMER.DISPUTE.CREATED`).

Webhook resources carry our payment id as `custom_id` (captures, refunds, authorizations) and,
for disputes, as `disputed_transactions[0].custom` (PayPal's field for the merchant's custom
value of the disputed transaction). A refund without its own `custom_id`/`invoice_id` inherits
the capture's, so that its webhook can always be routed.

Any client id is accepted; the client secret `wrong-secret` is refused. `reset()` forgets orders,
payments, counters and the token lifetime; access tokens already issued stay valid until they
expire, as logging a client out is not part of resetting an account.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import functools
import hashlib
import json
import re
import secrets
import string
import time
import uuid
import zlib
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from types import MappingProxyType
from typing import Any, Final, TypeAlias
from urllib.parse import parse_qsl

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import NameOID
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from domain.money import EXPONENTS, MAX_MINOR_UNITS, to_decimal_string
from gateways.sandbox.config import SandboxConfig
from gateways.sandbox.faults import Faults, InjectedFault
from gateways.sandbox.ledger import IdempotencyStore, Ledger, LedgerKind
from gateways.sandbox.webhooks import WebhookSender

__all__ = [
    "DEFAULT_TOKEN_TTL_S",
    "GATEWAY",
    "VAULT",
    "Outcome",
    "PayPalApiError",
    "PayPalSandbox",
    "VaultedCard",
    "WebhookSigner",
    "format_value",
    "parse_amount",
]

GATEWAY = "paypal"
DEFAULT_TOKEN_TTL_S = 32_400  # PayPal's usual access-token lifetime: 9 hours
REJECTED_SECRET = "wrong-secret"
AUTH_ALGO = "SHA256withRSA"
MAX_REQUEST_ID_LENGTH = 108  # PayPal's limit for PayPal-Request-Id
MAX_TOKEN_TTL_S = 10**6

JSON: TypeAlias = dict[str, Any]

_ID_ALPHABET = string.ascii_uppercase + string.digits
# Digits only (never `\d`, which accepts any Unicode digit), at most one decimal point.
_VALUE = re.compile(r"([0-9]{1,18})(?:\.([0-9]+))?")
_ALL_METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"]
_INSUFFICIENT_FUNDS_CODE = "5120"  # PayPal processor response code INSUFFICIENT_FUNDS
_DO_NOT_HONOR_CODE = "0500"


class Outcome(StrEnum):
    APPROVE = "approve"
    DECLINE = "decline"
    INSUFFICIENT_FUNDS = "insufficient_funds"
    PAYER_ACTION = "payer_action"
    PENDING = "pending"


@dataclass(frozen=True, slots=True)
class VaultedCard:
    """A card PayPal holds for the merchant; only what PayPal itself shows of it."""

    outcome: Outcome
    brand: str = "VISA"
    last_digits: str = "4242"
    expiry: str = "2030-12"  # YYYY-MM, as PayPal writes it

    def to_json(self) -> JSON:
        return {
            "last_digits": self.last_digits,
            "brand": self.brand,
            "type": "CREDIT",
            "expiry": self.expiry,
        }


VAULT: Final = MappingProxyType(
    {
        "paypal_vault_ok": VaultedCard(Outcome.APPROVE),
        "paypal_vault_declined": VaultedCard(Outcome.DECLINE, last_digits="0002"),
        "paypal_vault_insufficient": VaultedCard(
            Outcome.INSUFFICIENT_FUNDS, brand="MASTERCARD", last_digits="9995"
        ),
        "paypal_vault_3ds": VaultedCard(Outcome.PAYER_ACTION, last_digits="3155"),
        "paypal_vault_pending": VaultedCard(Outcome.PENDING, last_digits="0077"),
    }
)


def _new_id() -> str:
    return "".join(secrets.choice(_ID_ALPHABET) for _ in range(17))


def _debug_id() -> str:
    return secrets.token_hex(7)


def _now_iso(offset_s: int = 0) -> str:
    moment = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=offset_s)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


# --- errors -----------------------------------------------------------------------------

_ENVELOPES: dict[int, tuple[str, str]] = {
    400: (
        "INVALID_REQUEST",
        "Request is not well-formed, syntactically incorrect, or violates schema.",
    ),
    401: (
        "AUTHENTICATION_FAILURE",
        "Authentication failed due to invalid authentication credentials or a missing "
        "Authorization header.",
    ),
    404: ("RESOURCE_NOT_FOUND", "The specified resource does not exist."),
    422: (
        "UNPROCESSABLE_ENTITY",
        "The requested action could not be performed, semantically incorrect, or failed "
        "business validation.",
    ),
    500: ("INTERNAL_SERVER_ERROR", "An internal server error has occurred."),
    503: ("SERVICE_UNAVAILABLE", "The service is temporarily unavailable."),
}


class PayPalApiError(Exception):
    """An error answer in PayPal's envelope: `{name, message, debug_id, details[]}`.

    `persist` is False for requests refused before any work (malformed or unknown input):
    nothing is stored under their `PayPal-Request-Id`, so a corrected retry may reuse it.
    """

    def __init__(
        self,
        status: int,
        *,
        issue: str | None = None,
        description: str | None = None,
        field: str | None = None,
        value: str | None = None,
        persist: bool = True,
    ) -> None:
        name, message = _ENVELOPES.get(status, _ENVELOPES[422])
        super().__init__(message)
        self.status = status
        self.name = name
        self.message = message
        self.issue = issue
        self.description = description
        self.field = field
        self.value = value
        self.persist = persist

    def body(self, debug_id: str) -> JSON:
        out: JSON = {"name": self.name, "message": self.message, "debug_id": debug_id}
        if self.issue is not None:
            detail: JSON = {"issue": self.issue}
            if self.field is not None:
                detail.update(field=self.field, location="body")
            if self.value is not None:
                detail["value"] = self.value
            detail["description"] = self.description or self.issue
            out["details"] = [detail]
            out["links"] = [
                {
                    "href": f"https://developer.paypal.com/api/rest/reference/orders/v2/errors/#{self.issue}",
                    "rel": "information_link",
                    "method": "GET",
                }
            ]
        return out


def _bad_request(issue: str, description: str, field: str, value: Any = None) -> PayPalApiError:
    shown = None if value is None else str(value)[:64]
    return PayPalApiError(
        400, issue=issue, description=description, field=field, value=shown, persist=False
    )


def _missing(field: str) -> PayPalApiError:
    return _bad_request(
        "MISSING_REQUIRED_PARAMETER", "A required field / parameter is missing.", field
    )


def _unprocessable(issue: str, description: str, *, persist: bool = True) -> PayPalApiError:
    return PayPalApiError(422, issue=issue, description=description, persist=persist)


def _not_found(kind: str) -> PayPalApiError:
    return PayPalApiError(
        404,
        issue="INVALID_RESOURCE_ID",
        description=f"Specified resource ID does not exist ({kind}). Please check the "
        "resource ID and try again.",
        persist=False,
    )


# --- amounts: exact decimal strings <-> integer minor units ----------------------------


def format_value(minor: int, currency: str) -> str:
    """`1000, "USD"` -> `"10.00"`; `1000, "JPY"` -> `"1000"`. Never through a float."""
    return to_decimal_string(minor, currency)


def _amount_json(minor: int, currency: str) -> JSON:
    return {"currency_code": currency, "value": format_value(minor, currency)}


def parse_amount(raw: object, field: str) -> tuple[int, str]:
    """Validate a PayPal `{currency_code, value}` and return (minor units, currency)."""
    if raw is None:
        raise _missing(field)
    if not isinstance(raw, dict):
        raise _bad_request("INVALID_PARAMETER_SYNTAX", "The value is not an object.", field)
    currency = raw.get("currency_code")
    value = raw.get("value")
    if currency is None:
        raise _missing(f"{field}/currency_code")
    if value is None:
        raise _missing(f"{field}/value")
    if not isinstance(currency, str) or currency not in EXPONENTS:
        raise PayPalApiError(
            422,
            issue="CURRENCY_NOT_SUPPORTED",
            description="Currency code is unknown or is not supported.",
            field=f"{field}/currency_code",
            value=str(currency),
            persist=False,
        )
    match = _VALUE.fullmatch(value) if isinstance(value, str) else None
    if match is None:
        raise _bad_request(
            "INVALID_PARAMETER_SYNTAX",
            "The value of a field does not conform to the expected format.",
            f"{field}/value",
            value,
        )
    return _to_minor(match, currency, f"{field}/value", value), currency


def _to_minor(match: re.Match[str], currency: str, field: str, value: str) -> int:
    exp = EXPONENTS[currency]
    whole, frac = match.group(1), match.group(2) or ""
    if frac and exp == 0:
        raise PayPalApiError(
            422,
            issue="DECIMALS_NOT_SUPPORTED",
            description="Currency does not support decimals.",
            field=field,
            value=value,
            persist=False,
        )
    if len(frac) > exp:
        raise PayPalApiError(
            422,
            issue="DECIMAL_PRECISION",
            description=f"The value of the field should not be more than {exp} decimal places.",
            field=field,
            value=value,
            persist=False,
        )
    minor: int = int(whole) * 10**exp + int(frac.ljust(exp, "0") or "0")
    if minor == 0:
        raise PayPalApiError(
            422,
            issue="CANNOT_BE_ZERO_OR_NEGATIVE",
            description="Must be greater than zero.",
            field=field,
            value=value,
            persist=False,
        )
    if minor > MAX_MINOR_UNITS:
        raise _bad_request("INVALID_PARAMETER_VALUE", "The amount is too large.", field, value)
    return minor


# --- request readers -----------------------------------------------------------------------


def _opt_str(obj: Mapping[str, Any], name: str, max_length: int, field: str) -> str | None:
    value = obj.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        raise _bad_request("INVALID_PARAMETER_SYNTAX", "The value must be a string.", field, value)
    if not value or len(value) > max_length:
        raise _bad_request(
            "INVALID_STRING_LENGTH",
            f"The value must be 1 to {max_length} characters long.",
            field,
            value,
        )
    return value


def _choice(obj: Mapping[str, Any], name: str, choices: tuple[str, ...], field: str) -> str:
    value = obj.get(name)
    if value is None:
        raise _missing(field)
    if value not in choices:
        raise _bad_request(
            "INVALID_PARAMETER_VALUE",
            f"The value must be one of {', '.join(choices)}.",
            field,
            value,
        )
    return str(value)


def _single_unit(body: Mapping[str, Any]) -> Mapping[str, Any]:
    units = body.get("purchase_units")
    if units is None:
        raise _missing("/purchase_units")
    if not isinstance(units, list) or not units or not isinstance(units[0], dict):
        raise _bad_request(
            "INVALID_PARAMETER_SYNTAX",
            "purchase_units must be a list of objects.",
            "/purchase_units",
        )
    if len(units) > 1:
        # PayPal takes up to 10; the sandbox keeps to the one our adapter sends.
        raise _bad_request(
            "INVALID_ARRAY_MAX_ITEMS",
            "The sandbox supports exactly one purchase unit.",
            "/purchase_units",
        )
    unit: Mapping[str, Any] = units[0]
    return unit


def _vault_id(source: object) -> str | None:
    """The vaulted card of a payment source; None when the buyer will choose instead."""
    if source is None:
        return None
    if (
        not isinstance(source, dict)
        or set(source) != {"card"}
        or not isinstance(source["card"], dict)
    ):
        raise _unprocessable(
            "PAYMENT_SOURCE_NOT_SUPPORTED",
            "The sandbox accepts only a vaulted card (payment_source.card.vault_id).",
            persist=False,
        )
    vault_id = source["card"].get("vault_id")
    if not isinstance(vault_id, str) or "number" in source["card"]:
        # Raw card numbers are never accepted here: our pipeline holds tokens only.
        raise _unprocessable(
            "PAYMENT_SOURCE_NOT_SUPPORTED",
            "The sandbox accepts only a vaulted card (payment_source.card.vault_id).",
            persist=False,
        )
    return vault_id


def _parse_body(raw: bytes) -> JSON | None:
    if not raw.strip():
        return None
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        body = None
    if not isinstance(body, dict):
        raise PayPalApiError(
            400,
            issue="MALFORMED_REQUEST_JSON",
            description="The request JSON is not well formed.",
            persist=False,
        )
    return body


def _fingerprint(method: str, path: str, body: JSON | None) -> str:
    # Key order carries no meaning in JSON, so it must not make a retry look different.
    canonical = json.dumps([method, path, body], sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


async def _control_param(request: Request, name: str) -> str | None:
    """One field from a JSON or form body (or the query): control routes are called by hand."""
    raw = await request.body()
    value: object = None
    if request.headers.get("content-type", "").startswith("application/json"):
        try:
            data = json.loads(raw or b"{}")
        except ValueError:
            data = None
        value = data.get(name) if isinstance(data, dict) else None
    elif raw:
        value = dict(parse_qsl(raw.decode(errors="replace"))).get(name)
    if value is None:
        value = request.query_params.get(name)
    return None if value is None else str(value)


# --- resources -----------------------------------------------------------------------------


def _link(href: str, rel: str, method: str = "GET") -> JSON:
    return {"href": href, "rel": rel, "method": method}


@dataclass(slots=True)
class Authorization:
    id: str
    order_id: str
    amount: int
    currency: str
    custom_id: str | None
    invoice_id: str | None
    status: str = "CREATED"
    status_reason: str | None = None
    response_code: str | None = None  # processor response, for a card refusal
    captured: int = 0
    create_time: str = field(default_factory=_now_iso)
    update_time: str = field(default_factory=_now_iso)
    expiration_time: str = field(default_factory=lambda: _now_iso(29 * 24 * 3600))

    def touch(self, status: str, reason: str | None = None) -> None:
        self.status, self.status_reason, self.update_time = status, reason, _now_iso()

    def to_json(self, api: str) -> JSON:
        href = f"{api}/v2/payments/authorizations/{self.id}"
        out: JSON = {
            "id": self.id,
            "status": self.status,
            "amount": _amount_json(self.amount, self.currency),
            "expiration_time": self.expiration_time,
            "create_time": self.create_time,
            "update_time": self.update_time,
            "links": [
                _link(href, "self"),
                _link(f"{href}/capture", "capture", "POST"),
                _link(f"{href}/void", "void", "POST"),
                _link(f"{href}/reauthorize", "reauthorize", "POST"),
                _link(f"{api}/v2/checkout/orders/{self.order_id}", "up"),
            ],
            "supplementary_data": {"related_ids": {"order_id": self.order_id}},
        }
        _add_common(out, self.custom_id, self.invoice_id, self.status_reason, self.response_code)
        return out


@dataclass(slots=True)
class Capture:
    id: str
    order_id: str
    authorization_id: str | None
    amount: int
    currency: str
    custom_id: str | None
    invoice_id: str | None
    final_capture: bool = True
    status: str = "COMPLETED"
    status_reason: str | None = None
    response_code: str | None = None
    refunded: int = 0
    create_time: str = field(default_factory=_now_iso)
    update_time: str = field(default_factory=_now_iso)

    def touch(self, status: str, reason: str | None = None) -> None:
        self.status, self.status_reason, self.update_time = status, reason, _now_iso()

    @property
    def settled(self) -> bool:
        """Money moved: the capture completed (refunds since then included)."""
        return self.status in ("COMPLETED", "PARTIALLY_REFUNDED", "REFUNDED")

    def to_json(self, api: str) -> JSON:
        href = f"{api}/v2/payments/captures/{self.id}"
        up = (
            f"{api}/v2/payments/authorizations/{self.authorization_id}"
            if self.authorization_id
            else f"{api}/v2/checkout/orders/{self.order_id}"
        )
        related: JSON = {"order_id": self.order_id}
        if self.authorization_id:
            related["authorization_id"] = self.authorization_id
        out: JSON = {
            "id": self.id,
            "status": self.status,
            "amount": _amount_json(self.amount, self.currency),
            "final_capture": self.final_capture,
            "create_time": self.create_time,
            "update_time": self.update_time,
            "links": [
                _link(href, "self"),
                _link(f"{href}/refund", "refund", "POST"),
                _link(up, "up"),
            ],
            "supplementary_data": {"related_ids": related},
        }
        _add_common(out, self.custom_id, self.invoice_id, self.status_reason, self.response_code)
        return out


@dataclass(slots=True)
class Refund:
    id: str
    capture_id: str
    order_id: str
    amount: int
    currency: str
    custom_id: str | None
    invoice_id: str | None
    note_to_payer: str | None
    status: str = "COMPLETED"
    create_time: str = field(default_factory=_now_iso)
    update_time: str = field(default_factory=_now_iso)

    def to_json(self, api: str) -> JSON:
        out: JSON = {
            "id": self.id,
            "status": self.status,
            "amount": _amount_json(self.amount, self.currency),
            "create_time": self.create_time,
            "update_time": self.update_time,
            "links": [
                _link(f"{api}/v2/payments/refunds/{self.id}", "self"),
                _link(f"{api}/v2/payments/captures/{self.capture_id}", "up"),
            ],
            "supplementary_data": {
                "related_ids": {"order_id": self.order_id, "capture_id": self.capture_id}
            },
        }
        _add_common(out, self.custom_id, self.invoice_id, None, None)
        if self.note_to_payer:
            out["note_to_payer"] = self.note_to_payer
        return out


def _add_common(
    out: JSON,
    custom_id: str | None,
    invoice_id: str | None,
    reason: str | None,
    response_code: str | None,
) -> None:
    if custom_id is not None:
        out["custom_id"] = custom_id
    if invoice_id is not None:
        out["invoice_id"] = invoice_id
    if reason is not None:
        out["status_details"] = {"reason": reason}
    if response_code is not None:
        out["processor_response"] = {
            "avs_code": "Y",
            "cvv_code": "M",
            "response_code": response_code,
        }


@dataclass(slots=True)
class Order:
    id: str
    intent: str  # CAPTURE | AUTHORIZE
    amount: int
    currency: str
    reference_id: str
    custom_id: str | None
    invoice_id: str | None
    description: str | None
    card: VaultedCard | None
    status: str = "CREATED"
    approved: bool = False
    authorizations: list[Authorization] = field(default_factory=list)
    captures: list[Capture] = field(default_factory=list)
    refunds: list[Refund] = field(default_factory=list)
    create_time: str = field(default_factory=_now_iso)
    update_time: str = field(default_factory=_now_iso)

    def touch(self, status: str) -> None:
        self.status, self.update_time = status, _now_iso()

    def to_json(self, api: str, approve_url: str) -> JSON:
        unit: JSON = {
            "reference_id": self.reference_id,
            "amount": _amount_json(self.amount, self.currency),
        }
        for name in ("custom_id", "invoice_id", "description"):
            if getattr(self, name) is not None:
                unit[name] = getattr(self, name)
        payments: JSON = {}
        if self.authorizations:
            payments["authorizations"] = [a.to_json(api) for a in self.authorizations]
        if self.captures:
            payments["captures"] = [c.to_json(api) for c in self.captures]
        if self.refunds:
            payments["refunds"] = [r.to_json(api) for r in self.refunds]
        if payments:
            unit["payments"] = payments
        out: JSON = {
            "id": self.id,
            "intent": self.intent,
            "status": self.status,
            "purchase_units": [unit],
            "create_time": self.create_time,
            "update_time": self.update_time,
            "links": self._links(api, approve_url),
        }
        if self.card is not None:
            out["payment_source"] = {"card": self.card.to_json()}
        return out

    def _links(self, api: str, approve_url: str) -> list[JSON]:
        href = f"{api}/v2/checkout/orders/{self.id}"
        action = "capture" if self.intent == "CAPTURE" else "authorize"
        links = [_link(href, "self")]
        if self.status == "CREATED":
            links += [_link(approve_url, "approve"), _link(href, "update", "PATCH")]
        elif self.status == "PAYER_ACTION_REQUIRED":
            links.append(_link(approve_url, "payer-action"))
        if self.status in ("CREATED", "APPROVED"):
            links.append(_link(f"{href}/{action}", action, "POST"))
        return links


# --- webhook signatures ----------------------------------------------------------------


class WebhookSigner:
    """Signs webhook bodies as PayPal does, with a key made once and a self-signed certificate.

    The key pair is made on first use, so an app that never sends a PayPal webhook does not
    pay for RSA key generation.
    """

    def __init__(self, *, webhook_id: str, cert_url: str) -> None:
        self.webhook_id = webhook_id
        self.cert_url = cert_url

    @functools.cached_property
    def _material(self) -> tuple[rsa.RSAPrivateKey, bytes]:
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        name = x509.Name(
            [
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Gateway sandbox"),
                x509.NameAttribute(NameOID.COMMON_NAME, "messageverificationcerts.sandbox"),
            ]
        )
        now = dt.datetime.now(dt.UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(days=1))
            .not_valid_after(now + dt.timedelta(days=365))
            .sign(key, hashes.SHA256())
        )
        return key, cert.public_bytes(serialization.Encoding.PEM)

    def cert_pem(self) -> bytes:
        return self._material[1]

    def headers(
        self,
        body: bytes,
        *,
        transmission_id: str | None = None,
        transmission_time: str | None = None,
    ) -> dict[str, str]:
        """The five PAYPAL-* headers for one delivery attempt of `body`."""
        tid = transmission_id or str(uuid.uuid4())
        sent = transmission_time or _now_iso()
        message = f"{tid}|{sent}|{self.webhook_id}|{zlib.crc32(body)}".encode()
        signature = self._material[0].sign(message, padding.PKCS1v15(), hashes.SHA256())
        return {
            "PAYPAL-TRANSMISSION-ID": tid,
            "PAYPAL-TRANSMISSION-TIME": sent,
            "PAYPAL-TRANSMISSION-SIG": base64.b64encode(signature).decode(),
            "PAYPAL-CERT-URL": self.cert_url,
            "PAYPAL-AUTH-ALGO": AUTH_ALGO,
        }


# --- the emulator --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Call:
    """One authenticated API request, as a handler sees it."""

    request: Request
    body: JSON | None
    request_id: str | None  # PayPal-Request-Id
    representation: bool  # Prefer: return=representation

    def param(self, name: str) -> str:
        return str(self.request.path_params[name])


Handler: TypeAlias = Callable[[_Call], tuple[int, JSON | None]]


@dataclass(frozen=True, slots=True)
class _AccessToken:
    client_id: str
    expires_at: float  # time.monotonic()


class PayPalSandbox:
    """State and routes of one emulated PayPal merchant account."""

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
        public = config.public_url.rstrip("/")
        self._api = f"{public}/{GATEWAY}"
        self._control = f"{public}/_sandbox/{GATEWAY}"
        self.signer = WebhookSigner(
            webhook_id=config.paypal_webhook_id, cert_url=f"{self._control}/cert.pem"
        )
        webhooks.register(GATEWAY, url=config.webhook_url(GATEWAY), sign=self.sign)
        self._tokens: dict[str, _AccessToken] = {}
        self.token_ttl_s = DEFAULT_TOKEN_TTL_S
        self.tokens_issued = 0
        self.orders: dict[str, Order] = {}
        self.authorizations: dict[str, Authorization] = {}
        self.captures: dict[str, Capture] = {}
        self.refunds: dict[str, Refund] = {}

    def reset(self) -> None:
        self.token_ttl_s = DEFAULT_TOKEN_TTL_S
        self.tokens_issued = 0
        self.orders.clear()
        self.authorizations.clear()
        self.captures.clear()
        self.refunds.clear()

    def sign(self, body: bytes) -> dict[str, str]:
        """Webhook headers for `body` (the `sign` callable given to the webhook sender)."""
        return self.signer.headers(body)

    def routes(self) -> list[BaseRoute]:
        """The API; mount it where the SDK's base URI points."""
        api = self._endpoint
        orders = "/v2/checkout/orders"
        auths = "/v2/payments/authorizations/{authorization}"
        captures = "/v2/payments/captures/{capture}"
        return [
            Route("/v1/oauth2/token", self._token_endpoint, methods=["POST"]),
            Route(orders, api(self._create_order), methods=["POST"]),
            Route(orders + "/{order}", api(self._get_order), methods=["GET"]),
            Route(orders + "/{order}/capture", api(self._capture_order), methods=["POST"]),
            Route(orders + "/{order}/authorize", api(self._authorize_order), methods=["POST"]),
            Route(auths, api(self._get_authorization), methods=["GET"]),
            Route(auths + "/capture", api(self._capture_authorization), methods=["POST"]),
            Route(auths + "/void", api(self._void_authorization), methods=["POST"]),
            Route(captures, api(self._get_capture), methods=["GET"]),
            Route(captures + "/refund", api(self._refund_capture), methods=["POST"]),
            Route("/v2/payments/refunds/{refund}", api(self._get_refund), methods=["GET"]),
            # Last: anything else gets PayPal's JSON 404, which the SDK can parse.
            Route("/{path:path}", self._unrecognized, methods=_ALL_METHODS),
        ]

    def control_routes(self) -> list[BaseRoute]:
        """Test-only levers that PayPal, the buyer or the card network would pull."""
        return [
            Route("/cert.pem", self._cert, methods=["GET"]),
            Route("/stats", self._stats, methods=["GET"]),
            Route("/token_ttl", self._token_ttl, methods=["GET", "POST"]),
            Route("/orders/{order}/approve", self._approve, methods=["GET", "POST"]),
            Route("/captures/{capture}/settle", self._settle_capture, methods=["POST"]),
            Route(
                "/authorizations/{authorization}/settle",
                self._settle_authorization,
                methods=["POST"],
            ),
            Route("/captures/{capture}/dispute", self._dispute, methods=["POST"]),
        ]

    # --- HTTP plumbing: faults, auth, idempotency ---------------------------------------

    def _respond(self, status: int, payload: JSON | bytes | None, debug_id: str) -> Response:
        headers = {"Paypal-Debug-Id": debug_id}
        if payload is None:
            return Response(status_code=status, headers=headers)
        body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        return Response(body, status_code=status, media_type="application/json", headers=headers)

    def _fault_response(self, fault: InjectedFault) -> Response:
        name = "INTERNAL_SERVER_ERROR" if fault.status == 500 else "SERVICE_UNAVAILABLE"
        debug_id = _debug_id()
        body = {"name": name, "message": f"Sandbox fault: {fault.kind}.", "debug_id": debug_id}
        return self._respond(fault.status, body, debug_id)

    def _endpoint(self, handler: Handler) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            try:
                return await self._handle(request, handler)
            except InjectedFault as fault:
                return self._fault_response(fault)

        return endpoint

    async def _handle(self, request: Request, handler: Handler) -> Response:
        debug_id = _debug_id()
        try:
            client_id = self._authenticate(request)
            call = await self._read(request)
        except PayPalApiError as exc:
            await self._faults.before(GATEWAY)
            return self._respond(exc.status, exc.body(debug_id), debug_id)

        if call.request_id is None:
            await self._faults.before(GATEWAY)
            status, body, _ = self._execute(handler, call, debug_id)
            await self._faults.after(GATEWAY)
            return self._respond(status, body, debug_id)

        scope = f"{GATEWAY}:{client_id}:{call.request_id}"
        fingerprint = _fingerprint(request.method, request.url.path, call.body)
        async with self._idempotency.lock(scope):
            stored = self._idempotency.get(scope)
            # Latency sits between lookup and execution, where a slow gateway is slow: only
            # the lock keeps a duplicate arriving meanwhile from executing too.
            await self._faults.before(GATEWAY)
            if stored is not None:
                if stored.fingerprint != fingerprint:
                    error = _unprocessable(
                        "PAYPAL_REQUEST_ID_PREVIOUSLY_USED",
                        "The PayPal-Request-Id has already been used for another request.",
                    )
                    return self._respond(422, error.body(debug_id), debug_id)
                # PayPal answers a replayed create with 200 OK instead of 201 Created.
                replayed = 200 if stored.status == 201 else stored.status
                return self._respond(replayed, stored.body or None, debug_id)
            status, body, persist = self._execute(handler, call, debug_id)
            if persist:
                self._idempotency.put(scope, fingerprint=fingerprint, status=status, body=body)
        await self._faults.after(GATEWAY)  # the work is done; the answer may still be lost
        return self._respond(status, body or None, debug_id)

    @staticmethod
    def _execute(handler: Handler, call: _Call, debug_id: str) -> tuple[int, bytes, bool]:
        # Handlers are synchronous on purpose: with no await inside, each one changes the
        # state atomically with respect to every other request on the loop.
        try:
            status, payload = handler(call)
        except PayPalApiError as exc:
            return exc.status, json.dumps(exc.body(debug_id)).encode(), exc.persist
        return status, b"" if payload is None else json.dumps(payload).encode(), True

    async def _read(self, request: Request) -> _Call:
        body = _parse_body(await request.body()) if request.method == "POST" else None
        request_id = request.headers.get("paypal-request-id") or None
        if request.method != "POST":
            request_id = None
        if request_id is not None and len(request_id) > MAX_REQUEST_ID_LENGTH:
            raise _bad_request(
                "INVALID_STRING_MAX_LENGTH",
                f"PayPal-Request-Id is at most {MAX_REQUEST_ID_LENGTH} characters.",
                "PayPal-Request-Id",
            )
        prefer = request.headers.get("prefer", "").replace(" ", "").lower()
        return _Call(request, body, request_id, prefer == "return=representation")

    def _authenticate(self, request: Request) -> str:
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        access = self._tokens.get(token.strip()) if scheme.lower() == "bearer" else None
        if access is None or access.expires_at <= time.monotonic():
            raise PayPalApiError(401, persist=False)
        return access.client_id

    # --- OAuth ----------------------------------------------------------------------------

    async def _token_endpoint(self, request: Request) -> Response:
        try:
            await self._faults.before(GATEWAY)
            status, body = self._issue_token(
                request.headers.get("authorization", ""), await request.body()
            )
            await self._faults.after(GATEWAY)
        except InjectedFault as fault:
            return self._fault_response(fault)
        return self._respond(status, body, _debug_id())

    def _issue_token(self, authorization: str, raw: bytes) -> tuple[int, JSON]:
        credentials = _basic_credentials(authorization)
        if credentials is None or credentials[1] == REJECTED_SECRET:
            return 401, {
                "error": "invalid_client",
                "error_description": "Client Authentication failed",
            }
        form = dict(parse_qsl(raw.decode(errors="replace")))
        if form.get("grant_type") != "client_credentials":
            return 400, {
                "error": "unsupported_grant_type",
                "error_description": "Grant Type is NULL or not client_credentials",
            }
        now = time.monotonic()
        # Forget expired tokens as new ones are made, so the table stays small.
        self._tokens = {t: a for t, a in self._tokens.items() if a.expires_at > now}
        token = f"A21AA{secrets.token_urlsafe(64)}"
        self._tokens[token] = _AccessToken(credentials[0], now + self.token_ttl_s)
        self.tokens_issued += 1
        return 200, {
            "scope": "https://uri.paypal.com/services/payments/payment "
            "https://uri.paypal.com/services/payments/refund",
            "access_token": token,
            "token_type": "Bearer",
            "app_id": "APP-80W284485P519543T",
            "expires_in": self.token_ttl_s,
            "nonce": f"{_now_iso()}{secrets.token_urlsafe(16)}",
        }

    # --- Orders -----------------------------------------------------------------------------

    def _create_order(self, call: _Call) -> tuple[int, JSON | None]:
        body = call.body
        if body is None:
            raise _missing("/intent")
        intent = _choice(body, "intent", ("CAPTURE", "AUTHORIZE"), "/intent")
        unit = _single_unit(body)
        base = "/purchase_units/0"
        amount, currency = parse_amount(unit.get("amount"), f"{base}/amount")
        vault_id = _vault_id(body.get("payment_source"))
        order = Order(
            id=_new_id(),
            intent=intent,
            amount=amount,
            currency=currency,
            reference_id=_opt_str(unit, "reference_id", 256, f"{base}/reference_id") or "default",
            custom_id=_opt_str(unit, "custom_id", 127, f"{base}/custom_id"),
            invoice_id=_opt_str(unit, "invoice_id", 127, f"{base}/invoice_id"),
            description=_opt_str(unit, "description", 127, f"{base}/description"),
            card=None,
        )
        if vault_id is not None:
            if call.request_id is None:
                raise _bad_request(
                    "PAYPAL_REQUEST_ID_REQUIRED",
                    "A PayPal-Request-Id is required to process payment for an order.",
                    "PayPal-Request-Id",
                )
            order.card = VAULT.get(vault_id)
            if order.card is None:
                raise _unprocessable(
                    "TOKEN_ID_NOT_FOUND", "Specified token was not found.", persist=False
                )
        self.orders[order.id] = order
        if order.card is not None:
            self._process(order)  # a decline raises, but the order exists, as on PayPal
        return 201, self._order_view(order, call)

    def _get_order(self, call: _Call) -> tuple[int, JSON | None]:
        return 200, self._order_json(self._order(call.param("order")))

    def _capture_order(self, call: _Call) -> tuple[int, JSON | None]:
        order = self._payable_order(call, "CAPTURE")
        self._process(order)
        return 201, self._order_view(order, call)

    def _authorize_order(self, call: _Call) -> tuple[int, JSON | None]:
        order = self._payable_order(call, "AUTHORIZE")
        self._process(order)
        return 201, self._order_view(order, call)

    def _payable_order(self, call: _Call, intent: str) -> Order:
        if call.body and "payment_source" in call.body:
            raise _unprocessable(
                "PAYMENT_SOURCE_NOT_SUPPORTED",
                "The sandbox takes the payment source when the order is created.",
                persist=False,
            )
        order = self._order(call.param("order"))
        if order.intent != intent:
            raise _unprocessable(
                "ACTION_DOES_NOT_MATCH_INTENT",
                f"Order was created with an intent of '{order.intent}'.",
            )
        refusals = {
            "COMPLETED": "ORDER_ALREADY_CAPTURED"
            if intent == "CAPTURE"
            else "ORDER_ALREADY_AUTHORIZED",
            "VOIDED": "ORDER_ALREADY_VOIDED",
            "PAYER_ACTION_REQUIRED": "PAYER_ACTION_REQUIRED",
            "CREATED": "ORDER_NOT_APPROVED",
        }
        issue = refusals.get(order.status)
        if issue is not None:
            raise _unprocessable(issue, f"The order cannot be paid in status {order.status}.")
        return order

    def _process(self, order: Order) -> None:
        """Pay an order with its card (or the buyer's approved choice)."""
        outcome = order.card.outcome if order.card else Outcome.APPROVE
        if outcome is Outcome.PAYER_ACTION:
            if not order.approved:
                order.touch("PAYER_ACTION_REQUIRED")
                return
            outcome = Outcome.APPROVE  # 3-D Secure passed when the buyer approved
        if order.intent == "CAPTURE":
            self._charge(order, outcome)
        else:
            self._hold(order, outcome)

    def _charge(self, order: Order, outcome: Outcome) -> None:
        capture = Capture(
            id=_new_id(),
            order_id=order.id,
            authorization_id=None,
            amount=order.amount,
            currency=order.currency,
            custom_id=order.custom_id,
            invoice_id=order.invoice_id,
        )
        order.captures.append(capture)
        self.captures[capture.id] = capture
        if outcome is Outcome.DECLINE:
            # Refused outright with a 422: no webhook, as the caller already has the answer
            # (a second, differently worded decline would race it).
            capture.response_code = _DO_NOT_HONOR_CODE
            capture.touch("DECLINED")
            raise _declined()
        order.touch("COMPLETED")
        if outcome is Outcome.INSUFFICIENT_FUNDS:
            capture.response_code = _INSUFFICIENT_FUNDS_CODE
            capture.touch("DECLINED")
            self._capture_event("PAYMENT.CAPTURE.DECLINED", capture, "declined")
        elif outcome is Outcome.PENDING:
            capture.touch("PENDING", "PENDING_REVIEW")
            self._capture_event("PAYMENT.CAPTURE.PENDING", capture, "is pending")
        else:
            self._record(LedgerKind.CAPTURE, capture.id, order, capture.amount)
            self._capture_event("PAYMENT.CAPTURE.COMPLETED", capture, "completed")

    def _hold(self, order: Order, outcome: Outcome) -> None:
        auth = Authorization(
            id=_new_id(),
            order_id=order.id,
            amount=order.amount,
            currency=order.currency,
            custom_id=order.custom_id,
            invoice_id=order.invoice_id,
        )
        order.authorizations.append(auth)
        self.authorizations[auth.id] = auth
        if outcome is Outcome.DECLINE:
            auth.response_code = _DO_NOT_HONOR_CODE
            auth.touch("DENIED")
            raise _declined()
        order.touch("COMPLETED")
        if outcome is Outcome.INSUFFICIENT_FUNDS:
            auth.response_code = _INSUFFICIENT_FUNDS_CODE
            auth.touch("DENIED")
        elif outcome is Outcome.PENDING:
            auth.touch("PENDING", "PENDING_REVIEW")
        else:
            self._record(LedgerKind.AUTHORIZATION, auth.id, order, auth.amount)
            self._authorization_event("PAYMENT.AUTHORIZATION.CREATED", auth, "created")

    # --- Payments: authorizations -------------------------------------------------------

    def _get_authorization(self, call: _Call) -> tuple[int, JSON | None]:
        return 200, self._authorization(call.param("authorization")).to_json(self._api)

    def _capture_authorization(self, call: _Call) -> tuple[int, JSON | None]:
        body = call.body or {}
        requested = None
        if body.get("amount") is not None:
            requested = parse_amount(body["amount"], "/amount")
        final = body.get("final_capture", False)
        if not isinstance(final, bool):
            raise _bad_request("INVALID_PARAMETER_SYNTAX", "Must be a boolean.", "/final_capture")
        invoice_id = _opt_str(body, "invoice_id", 127, "/invoice_id")
        auth = self._authorization(call.param("authorization"))
        self._check_capturable(auth)
        if requested is not None and requested[1] != auth.currency:
            raise _unprocessable(
                "AUTH_CAPTURE_CURRENCY_MISMATCH",
                "Currency of capture must be the same as currency of authorization.",
            )
        remaining = auth.amount - auth.captured
        amount = remaining if requested is None else requested[0]
        if amount > remaining:
            raise _unprocessable(
                "MAX_CAPTURE_AMOUNT_EXCEEDED",
                "Capture amount exceeds allowable limit for the authorization.",
            )
        capture = self._capture_from(auth, amount, final, invoice_id)
        view = capture.to_json(self._api)
        return 201, view if call.representation else _minimal(capture.id, capture.status, view)

    def _check_capturable(self, auth: Authorization) -> None:
        refusals = {
            "VOIDED": ("AUTHORIZATION_VOIDED", "A voided authorization cannot be captured."),
            "CAPTURED": (
                "AUTHORIZATION_ALREADY_CAPTURED",
                "Authorization has been previously captured and hence cannot be captured again.",
            ),
            "DENIED": ("AUTHORIZATION_DENIED", "A denied authorization cannot be captured."),
            # Sandbox choice: PayPal has no documented issue for capturing a pending hold.
            "PENDING": ("AUTHORIZATION_PENDING", "The authorization is still pending review."),
        }
        if auth.status in refusals:
            raise _unprocessable(*refusals[auth.status])

    def _capture_from(
        self, auth: Authorization, amount: int, final: bool, invoice_id: str | None
    ) -> Capture:
        order = self.orders[auth.order_id]
        capture = Capture(
            id=_new_id(),
            order_id=order.id,
            authorization_id=auth.id,
            amount=amount,
            currency=auth.currency,
            custom_id=auth.custom_id,
            invoice_id=invoice_id or auth.invoice_id,
            final_capture=final,
        )
        order.captures.append(capture)
        self.captures[capture.id] = capture
        auth.captured += amount
        released = auth.amount - auth.captured if final else 0
        fully = final or auth.captured == auth.amount
        auth.touch("CAPTURED" if fully else "PARTIALLY_CAPTURED")
        self._record(LedgerKind.CAPTURE, capture.id, order, amount)
        if released:
            # A final capture releases the rest of the hold for good.
            self._record(LedgerKind.VOID, auth.id, order, released)
        self._capture_event("PAYMENT.CAPTURE.COMPLETED", capture, "completed")
        return capture

    def _void_authorization(self, call: _Call) -> tuple[int, JSON | None]:
        auth = self._authorization(call.param("authorization"))
        refusals = {
            "CAPTURED": ("PREVIOUSLY_CAPTURED", "Authorization has been previously captured."),
            "VOIDED": ("PREVIOUSLY_VOIDED", "Authorization has been previously voided."),
            "DENIED": ("CANNOT_BE_VOIDED", "A denied authorization cannot be voided."),
        }
        if auth.status in refusals:
            raise _unprocessable(*refusals[auth.status])
        order = self.orders[auth.order_id]
        if auth.status in ("CREATED", "PARTIALLY_CAPTURED"):
            self._record(LedgerKind.VOID, auth.id, order, auth.amount - auth.captured)
        auth.touch("VOIDED")
        if not order.captures:
            order.touch("VOIDED")  # every purchase unit (we have one) is voided
        self._authorization_event("PAYMENT.AUTHORIZATION.VOIDED", auth, "voided")
        if not call.representation:
            return 204, None
        return 200, auth.to_json(self._api)

    # --- Payments: captures and refunds -------------------------------------------------

    def _get_capture(self, call: _Call) -> tuple[int, JSON | None]:
        return 200, self._capture(call.param("capture")).to_json(self._api)

    def _refund_capture(self, call: _Call) -> tuple[int, JSON | None]:
        body = call.body or {}
        requested = None
        if body.get("amount") is not None:
            requested = parse_amount(body["amount"], "/amount")
        custom_id = _opt_str(body, "custom_id", 127, "/custom_id")
        invoice_id = _opt_str(body, "invoice_id", 127, "/invoice_id")
        note = _opt_str(body, "note_to_payer", 255, "/note_to_payer")
        capture = self._capture(call.param("capture"))
        self._check_refundable(capture)
        if requested is not None and requested[1] != capture.currency:
            raise _unprocessable(
                "REFUND_CAPTURE_CURRENCY_MISMATCH",
                "Refund must be in the same currency as the capture.",
            )
        remaining = capture.amount - capture.refunded
        amount = remaining if requested is None else requested[0]
        if amount > remaining:
            raise _unprocessable(
                "REFUND_AMOUNT_EXCEEDED",
                "The refund amount must be less than or equal to the capture amount that has "
                "not yet been refunded.",
            )
        refund = Refund(
            id=_new_id(),
            capture_id=capture.id,
            order_id=capture.order_id,
            amount=amount,
            currency=capture.currency,
            custom_id=custom_id or capture.custom_id,
            invoice_id=invoice_id or capture.invoice_id,
            note_to_payer=note,
        )
        capture.refunded += amount
        capture.touch("REFUNDED" if capture.refunded == capture.amount else "PARTIALLY_REFUNDED")
        order = self.orders[capture.order_id]
        order.refunds.append(refund)
        self.refunds[refund.id] = refund
        self._record(LedgerKind.REFUND, refund.id, order, amount)
        self._event(
            "PAYMENT.CAPTURE.REFUNDED",
            "refund",
            refund.to_json(self._api),
            f"A {format_value(amount, refund.currency)} {refund.currency} capture payment was "
            "refunded",
        )
        view = refund.to_json(self._api)
        return 201, view if call.representation else _minimal(refund.id, refund.status, view)

    def _check_refundable(self, capture: Capture) -> None:
        if capture.status == "PENDING":
            raise _unprocessable(
                "PENDING_CAPTURE", "Cannot initiate a refund as the capture is pending."
            )
        if capture.status == "REFUNDED":
            raise _unprocessable(
                "CAPTURE_FULLY_REFUNDED", "The capture has already been fully refunded."
            )
        if not capture.settled:
            raise _unprocessable("REFUND_NOT_ALLOWED", "Capture cannot be refunded.")

    def _get_refund(self, call: _Call) -> tuple[int, JSON | None]:
        refund = self.refunds.get(call.param("refund"))
        if refund is None:
            raise _not_found("refund")
        return 200, refund.to_json(self._api)

    # --- lookups, ledger, views, webhooks -------------------------------------------------

    def _order(self, order_id: str) -> Order:
        order = self.orders.get(order_id)
        if order is None:
            raise _not_found("order")
        return order

    def _authorization(self, authorization_id: str) -> Authorization:
        auth = self.authorizations.get(authorization_id)
        if auth is None:
            raise _not_found("authorization")
        return auth

    def _capture(self, capture_id: str) -> Capture:
        capture = self.captures.get(capture_id)
        if capture is None:
            raise _not_found("capture")
        return capture

    def _record(self, kind: LedgerKind, object_id: str, order: Order, amount: int) -> None:
        self._ledger.record(
            gateway=GATEWAY,
            kind=kind,
            object_id=object_id,
            payment_intent=order.id,
            amount=amount,
            currency=order.currency,
            payment_id=order.custom_id,
        )

    def _order_json(self, order: Order) -> JSON:
        return order.to_json(self._api, f"{self._control}/orders/{order.id}/approve")

    def _order_view(self, order: Order, call: _Call) -> JSON:
        full = self._order_json(order)
        return full if call.representation else _minimal(order.id, order.status, full)

    def _event(self, event_type: str, resource_type: str, resource: JSON, summary: str) -> None:
        event_id = f"WH-{_new_id()}-{_new_id()}"
        event = {
            "id": event_id,
            "event_version": "1.0",
            "create_time": _now_iso(),
            "resource_type": resource_type,
            "resource_version": "2.0",
            "event_type": event_type,
            "summary": summary,
            "resource": resource,
            "links": [
                _link(f"{self._api}/v1/notifications/webhooks-events/{event_id}", "self"),
                _link(
                    f"{self._api}/v1/notifications/webhooks-events/{event_id}/resend",
                    "resend",
                    "POST",
                ),
            ],
        }
        self._webhooks.emit(GATEWAY, event, event_id=event_id, event_type=event_type)

    def _capture_event(self, event_type: str, capture: Capture, verb: str) -> None:
        money = f"{format_value(capture.amount, capture.currency)} {capture.currency}"
        self._event(
            event_type, "capture", capture.to_json(self._api), f"Payment {verb} for {money}"
        )

    def _authorization_event(self, event_type: str, auth: Authorization, verb: str) -> None:
        money = f"{format_value(auth.amount, auth.currency)} {auth.currency}"
        self._event(
            event_type,
            "authorization",
            auth.to_json(self._api),
            f"A payment authorization was {verb} for {money}",
        )

    # --- control routes -------------------------------------------------------------------

    async def _cert(self, request: Request) -> Response:
        return Response(self.signer.cert_pem(), media_type="application/x-pem-file")

    async def _stats(self, request: Request) -> Response:
        return self._respond(200, {"tokens_issued": self.tokens_issued}, _debug_id())

    async def _token_ttl(self, request: Request) -> Response:
        if request.method == "POST":
            raw = await _control_param(request, "expires_in")
            if raw is None or not raw.isdigit() or not 1 <= int(raw) <= MAX_TOKEN_TTL_S:
                error = _bad_request(
                    "INVALID_PARAMETER_VALUE",
                    f"expires_in must be an integer within 1..{MAX_TOKEN_TTL_S}.",
                    "expires_in",
                    raw,
                )
                return self._control_error(error)
            self.token_ttl_s = int(raw)
        return self._respond(200, {"expires_in": self.token_ttl_s}, _debug_id())

    async def _approve(self, request: Request) -> Response:
        """The buyer approves the order (and passes 3-D Secure, when it was asked for)."""
        try:
            order = self._order(str(request.path_params["order"]))
            if order.status not in ("CREATED", "PAYER_ACTION_REQUIRED", "APPROVED"):
                raise _unprocessable(
                    "ORDER_CANNOT_BE_APPROVED", f"The order is {order.status}.", persist=False
                )
        except PayPalApiError as exc:
            return self._control_error(exc)
        if order.status != "APPROVED":
            order.approved = True
            order.touch("APPROVED")
            self._event(
                "CHECKOUT.ORDER.APPROVED",
                "checkout-order",
                self._order_json(order),
                "An order has been approved by buyer",
            )
        return self._respond(200, self._order_json(order), _debug_id())

    async def _settle_capture(self, request: Request) -> Response:
        """Finish a PENDING capture, as PayPal's review or the funding source eventually does."""
        try:
            outcome = await _settle_outcome(request)
            capture = self._capture(str(request.path_params["capture"]))
            if capture.status != "PENDING":
                raise _unprocessable(
                    "CAPTURE_NOT_PENDING", f"The capture is {capture.status}.", persist=False
                )
        except PayPalApiError as exc:
            return self._control_error(exc)
        order = self.orders[capture.order_id]
        if outcome == "completed":
            capture.touch("COMPLETED")
            self._record(LedgerKind.CAPTURE, capture.id, order, capture.amount)
            self._capture_event("PAYMENT.CAPTURE.COMPLETED", capture, "completed")
        else:
            capture.touch("DECLINED")
            self._capture_event("PAYMENT.CAPTURE.DENIED", capture, "denied")
        return self._respond(200, capture.to_json(self._api), _debug_id())

    async def _settle_authorization(self, request: Request) -> Response:
        try:
            outcome = await _settle_outcome(request)
            auth = self._authorization(str(request.path_params["authorization"]))
            if auth.status != "PENDING":
                raise _unprocessable(
                    "AUTHORIZATION_NOT_PENDING",
                    f"The authorization is {auth.status}.",
                    persist=False,
                )
        except PayPalApiError as exc:
            return self._control_error(exc)
        if outcome == "completed":
            auth.touch("CREATED")
            self._record(LedgerKind.AUTHORIZATION, auth.id, self.orders[auth.order_id], auth.amount)
            self._authorization_event("PAYMENT.AUTHORIZATION.CREATED", auth, "created")
        else:
            auth.touch("DENIED")
        return self._respond(200, auth.to_json(self._api), _debug_id())

    async def _dispute(self, request: Request) -> Response:
        """The buyer disputes a completed capture: `CUSTOMER.DISPUTE.CREATED`."""
        try:
            capture = self._capture(str(request.path_params["capture"]))
            if not capture.settled:
                raise _unprocessable(
                    "CAPTURE_NOT_DISPUTABLE",
                    "Only a completed capture can be disputed.",
                    persist=False,
                )
        except PayPalApiError as exc:
            return self._control_error(exc)
        dispute = self._dispute_json(capture)
        self._event(
            "CUSTOMER.DISPUTE.CREATED",
            "dispute",
            dispute,
            "A new dispute opened with Case # " + str(dispute["dispute_id"]),
        )
        return self._respond(200, dispute, _debug_id())

    def _dispute_json(self, capture: Capture) -> JSON:
        dispute_id = f"PP-D-{secrets.randbelow(10**6):06d}"
        now = _now_iso()
        amount = _amount_json(capture.amount, capture.currency)
        transaction: JSON = {
            "seller_transaction_id": capture.id,
            "create_time": capture.create_time,
            "transaction_status": "COMPLETED",
            "gross_amount": amount,
        }
        if capture.invoice_id is not None:
            transaction["invoice_number"] = capture.invoice_id
        if capture.custom_id is not None:
            transaction["custom"] = capture.custom_id  # our payment id, for routing
        return {
            "dispute_id": dispute_id,
            "create_time": now,
            "update_time": now,
            "disputed_transactions": [transaction],
            "reason": "MERCHANDISE_OR_SERVICE_NOT_RECEIVED",
            "status": "OPEN",
            "dispute_amount": amount,
            "dispute_life_cycle_stage": "INQUIRY",
            "dispute_channel": "INTERNAL",
            "links": [_link(f"{self._api}/v1/customer/disputes/{dispute_id}", "self")],
        }

    def _control_error(self, exc: PayPalApiError) -> Response:
        debug_id = _debug_id()
        return self._respond(exc.status, exc.body(debug_id), debug_id)

    async def _unrecognized(self, request: Request) -> Response:
        debug_id = _debug_id()
        error = PayPalApiError(
            404,
            issue="INVALID_URI",
            description=f"The sandbox does not emulate {request.method} {request.url.path}.",
        )
        return self._respond(404, error.body(debug_id), debug_id)


def _minimal(object_id: str, status: str, full: JSON) -> JSON:
    """`Prefer: return=minimal`: the id, the status and the HATEOAS links only."""
    return {"id": object_id, "status": status, "links": full.get("links", [])}


def _declined() -> PayPalApiError:
    return _unprocessable(
        "INSTRUMENT_DECLINED",
        "The instrument presented was either declined by the processor or bank, or it "
        "can't be used for this payment.",
    )


async def _settle_outcome(request: Request) -> str:
    outcome = await _control_param(request, "outcome")
    if outcome not in ("completed", "denied"):
        raise _bad_request(
            "INVALID_PARAMETER_VALUE",
            "outcome must be 'completed' or 'denied'.",
            "outcome",
            outcome,
        )
    return outcome


def _basic_credentials(header: str) -> tuple[str, str] | None:
    scheme, _, encoded = header.partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        return None
    client_id, sep, secret = decoded.partition(":")
    if not sep or not client_id or not secret:
        return None
    return client_id, secret
