"""PayPal webhooks, verified offline: RSA signature by the certificate at PAYPAL-CERT-URL.

PayPal signs `f"{transmission_id}|{transmission_time}|{webhook_id}|{crc32(raw_body)}"` with
SHA256withRSA (PKCS#1 v1.5) and names the certificate by URL. We fetch certificates only from
allow-listed hosts (https; plain http is accepted for a local sandbox host in the list), cache
them per URL, check their validity dates, and refuse transmissions older or newer than the
tolerance. The host allow-list over TLS is the trust anchor: only PayPal can serve a file from
its API host.

The payment id travels as the resource's `custom_id` (captures, refunds, authorizations), as
`purchase_units[0].custom_id` (orders), or as `disputed_transactions[0].custom` (disputes).
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import json
import logging
import zlib
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpx
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from domain.errors import InvalidMoney
from domain.money import from_decimal_string
from ingress.webhooks.base import VerifiedEvent, WebhookRejected

log = logging.getLogger(__name__)

DEFAULT_TOLERANCE_S = 300
AUTH_ALGO = "SHA256withRSA"
MAX_CACHED_CERTS = 16
MAX_CERT_BYTES = 64 * 1024
CERT_FETCH_TIMEOUT_S = 5.0
_HEADERS = (
    "paypal-transmission-id",
    "paypal-transmission-time",
    "paypal-transmission-sig",
    "paypal-cert-url",
    "paypal-auth-algo",
)


@dataclass(frozen=True, slots=True)
class _Transmission:
    id: str
    time: str
    signature: str
    cert_url: str
    auth_algo: str


class PayPalVerifier:
    gateway = "paypal"

    def __init__(
        self,
        *,
        webhook_id: str,
        allowed_cert_hosts: frozenset[str],
        tolerance_s: int = DEFAULT_TOLERANCE_S,
        http: httpx.AsyncClient | None = None,
    ) -> None:
        self._webhook_id = webhook_id
        self._allowed_hosts = frozenset(host.lower() for host in allowed_cert_hosts)
        self._tolerance = dt.timedelta(seconds=tolerance_s)
        self._http = http
        self._certs: OrderedDict[str, x509.Certificate] = OrderedDict()

    async def verify(self, headers: Mapping[str, str], body: bytes) -> VerifiedEvent:
        sent = _transmission(headers)
        if sent.auth_algo != AUTH_ALGO:
            raise WebhookRejected(
                f"unsupported PAYPAL-AUTH-ALGO {sent.auth_algo[:32]!r}", code="signature_invalid"
            )
        self._check_time(sent.time)  # before any network: a stale replay costs nothing
        cert = await self._certificate(self._trusted_url(sent.cert_url))
        self._check_signature(cert, sent, body)
        return event_from(body, replay_key=sent.id)

    # --- checks -------------------------------------------------------------------------------

    def _check_time(self, value: str) -> None:
        try:
            sent_at = dt.datetime.fromisoformat(value)
        except ValueError:
            raise WebhookRejected(
                "PAYPAL-TRANSMISSION-TIME is not an ISO 8601 time", code="signature_invalid"
            ) from None
        if sent_at.tzinfo is None:
            sent_at = sent_at.replace(tzinfo=dt.UTC)
        if abs(dt.datetime.now(dt.UTC) - sent_at) > self._tolerance:
            raise WebhookRejected(
                "PayPal transmission time is outside the tolerance", code="signature_expired"
            )

    def _trusted_url(self, url: str) -> str:
        parts = urlsplit(url)
        host = (parts.hostname or "").lower()
        try:
            port = parts.port
        except ValueError:
            port = -1
        where = f"{host}:{port}" if port else host
        if (
            parts.scheme not in ("https", "http")
            or parts.username is not None
            or port == -1
            or where not in self._allowed_hosts
        ):
            raise WebhookRejected(
                f"certificate host {where[:64]!r} is not allowed", code="certificate_untrusted"
            )
        return url

    def _check_signature(self, cert: x509.Certificate, sent: _Transmission, body: bytes) -> None:
        message = f"{sent.id}|{sent.time}|{self._webhook_id}|{zlib.crc32(body)}".encode()
        key = cert.public_key()
        try:
            signature = base64.b64decode(sent.signature, validate=True)
            if not isinstance(key, rsa.RSAPublicKey):
                raise InvalidSignature
            key.verify(signature, message, padding.PKCS1v15(), hashes.SHA256())
        except (binascii.Error, InvalidSignature):
            raise WebhookRejected(
                "PayPal signature does not match the body", code="signature_invalid"
            ) from None

    # --- certificates -------------------------------------------------------------------------

    async def _certificate(self, url: str) -> x509.Certificate:
        cert = self._certs.get(url)
        if cert is None:
            # Two first deliveries at once may both fetch: harmless, and no lock to share
            # between event loops.
            cert = await self._fetch_certificate(url)
            self._certs[url] = cert
            while len(self._certs) > MAX_CACHED_CERTS:
                self._certs.popitem(last=False)
        now = dt.datetime.now(dt.UTC)
        if not cert.not_valid_before_utc <= now <= cert.not_valid_after_utc:
            self._certs.pop(url, None)
            raise WebhookRejected(
                "PayPal certificate is not valid now", code="certificate_untrusted"
            )
        return cert

    async def _fetch_certificate(self, url: str) -> x509.Certificate:
        try:
            if self._http is not None:
                response = await self._http.get(url, timeout=CERT_FETCH_TIMEOUT_S)
            else:
                async with httpx.AsyncClient(timeout=CERT_FETCH_TIMEOUT_S) as client:
                    response = await client.get(url)
        except httpx.HTTPError as exc:
            log.warning("cannot fetch PayPal certificate %s: %s", url, type(exc).__name__)
            raise WebhookRejected(
                "cannot fetch the PayPal certificate", code="certificate_untrusted"
            ) from None
        # Redirects are not followed (httpx's default): they could leave the allowed host.
        if response.status_code != 200 or len(response.content) > MAX_CERT_BYTES:
            raise WebhookRejected(
                f"PayPal certificate URL answered {response.status_code}",
                code="certificate_untrusted",
            )
        try:
            # PayPal serves the chain, leaf first; the leaf's key signs.
            return x509.load_pem_x509_certificates(response.content)[0]
        except ValueError:
            raise WebhookRejected(
                "PayPal certificate is not a PEM certificate", code="certificate_untrusted"
            ) from None


def _transmission(headers: Mapping[str, str]) -> _Transmission:
    values = [headers.get(name, "").strip() for name in _HEADERS]
    missing = [name for name, value in zip(_HEADERS, values, strict=True) if not value]
    if missing:
        raise WebhookRejected(
            f"missing PayPal headers: {', '.join(missing)}", code="signature_missing"
        )
    return _Transmission(*values)


# --- the event ------------------------------------------------------------------------------


def event_from(body: bytes, *, replay_key: str) -> VerifiedEvent:
    """The verified body as an event; a shape we cannot read is a 400, never a 500."""
    try:
        return _normalise(_parse(body), body, replay_key=replay_key)
    except (KeyError, TypeError, ValueError, AttributeError):
        raise WebhookRejected("not a PayPal webhook event", code="payload_invalid") from None


def _parse(body: bytes) -> Mapping[str, Any]:
    try:
        event = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise WebhookRejected("body is not JSON", code="payload_invalid") from None
    if (
        not isinstance(event, dict)
        or not isinstance(event.get("id"), str)
        or not isinstance(event.get("event_type"), str)
        or not isinstance(event.get("resource"), dict)
    ):
        raise WebhookRejected("not a PayPal webhook event", code="payload_invalid")
    return event


def _normalise(event: Mapping[str, Any], body: bytes, *, replay_key: str) -> VerifiedEvent:
    resource: Mapping[str, Any] = event["resource"]
    amount, currency = _amount(resource)
    return VerifiedEvent(
        gateway="paypal",
        event_id=event["id"],
        event_type=event["event_type"],
        object_id=str(resource.get("id") or resource.get("dispute_id") or ""),
        payment_id=_payment_id(resource),
        amount=amount,
        currency=currency,
        occurred_at_ms=_epoch_ms(event.get("create_time")),
        payload=body,
        replay_key=replay_key,
    )


def _first(resource: Mapping[str, Any], name: str) -> Mapping[str, Any]:
    items = resource.get(name)
    if isinstance(items, list) and items and isinstance(items[0], dict):
        first: Mapping[str, Any] = items[0]
        return first
    return {}


def _payment_id(resource: Mapping[str, Any]) -> str | None:
    for value in (
        resource.get("custom_id"),
        _first(resource, "purchase_units").get("custom_id"),
        _first(resource, "disputed_transactions").get("custom"),
    ):
        if isinstance(value, str) and value:
            return value
    return None


def _amount(resource: Mapping[str, Any]) -> tuple[int | None, str | None]:
    """Minor units and currency of the event's money, exactly; (None, None) when it has none."""
    money = (
        resource.get("amount")
        or _first(resource, "purchase_units").get("amount")
        or resource.get("dispute_amount")
    )
    if not isinstance(money, Mapping):
        return None, None
    currency, value = money.get("currency_code"), money.get("value")
    try:
        minor = from_decimal_string(value, currency if isinstance(currency, str) else "")
    except InvalidMoney:
        # Signed by PayPal yet unreadable: refuse rather than route a guessed amount.
        raise WebhookRejected(
            "event amount is not a valid PayPal amount", code="payload_invalid"
        ) from None
    return minor, str(currency)


def _epoch_ms(value: object) -> int:
    if not isinstance(value, str):
        return 0
    try:
        moment = dt.datetime.fromisoformat(value)
    except ValueError:
        return 0
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    return int(moment.timestamp() * 1000)
