"""Square webhooks: `x-square-hmacsha256-signature` verified by the SDK's own helper.

Square signs base64(HMAC-SHA256(signature key, notification URL + raw body)), where the URL is
the one configured on the webhook subscription: behind a proxy or load balancer it differs
from the URL the request arrives at, so it is configuration, never read from the request.

Square's signature carries no timestamp, so a captured delivery can be replayed at any time and
still verify. Dedup on `event_id` downstream (the payment agent's seen-events) is the only
replay defence, and it makes a replay a no-op rather than a rejection.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from square.utils.webhooks_helper import verify_signature

from ingress.webhooks.base import VerifiedEvent, WebhookRejected

SIGNATURE_HEADER = "x-square-hmacsha256-signature"
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class SquareVerifier:
    gateway = "square"

    def __init__(self, *, signature_key: str, notification_url: str) -> None:
        # The SDK helper raises ValueError on either being empty: fail at start-up instead.
        if not signature_key or not notification_url:
            raise ValueError("Square webhooks need a signature key and a notification URL")
        self._signature_key = signature_key
        self._notification_url = notification_url

    async def verify(self, headers: Mapping[str, str], body: bytes) -> VerifiedEvent:
        signature = headers.get(SIGNATURE_HEADER)
        if not signature:
            raise WebhookRejected(f"{SIGNATURE_HEADER} header is missing", code="signature_missing")
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError:
            raise WebhookRejected("body is not UTF-8", code="payload_invalid") from None
        # Constant-time comparison inside the helper; an empty body never verifies.
        if not verify_signature(
            request_body=text,
            signature_header=signature,
            signature_key=self._signature_key,
            notification_url=self._notification_url,
        ):
            raise WebhookRejected(
                "Square signature does not match the body", code="signature_invalid"
            )
        try:
            return _normalise(json.loads(text), body)
        except ValueError:
            raise WebhookRejected("body is not a Square event", code="payload_invalid") from None
        except (KeyError, TypeError, AttributeError):
            # Signed by Square yet not the shape we read: a 400, never a 500.
            raise WebhookRejected("not a Square event object", code="payload_invalid") from None


def _normalise(event: Any, body: bytes) -> VerifiedEvent:
    try:
        data: Mapping[str, Any] = event["data"]
        obj = _object(data)
        amount, currency = _amount(obj)
        return VerifiedEvent(
            gateway="square",
            event_id=_text(event["event_id"]),
            event_type=_text(event["type"]),
            object_id=_text(data.get("id") or obj.get("id")),
            payment_id=_payment_id(obj),
            amount=amount,
            currency=currency,
            occurred_at_ms=_epoch_ms(event["created_at"]),
            payload=body,
            gateway_payment=_square_payment(str(data.get("type") or ""), obj),
        )
    except (KeyError, TypeError, ValueError, AttributeError):
        raise WebhookRejected("not a Square event", code="payload_invalid") from None


def _object(data: Mapping[str, Any]) -> Mapping[str, Any]:
    """The payment, refund or dispute inside `data.object`, whichever the event carries.

    Square wraps it under its type (`{"payment": {...}}`), except for disputes, which the SDK
    models as `{"object": {...}}`.
    """
    wrapper: Mapping[str, Any] = data.get("object") or {}
    for key in (str(data.get("type") or ""), "payment", "refund", "dispute", "object"):
        inner = wrapper.get(key)
        if isinstance(inner, Mapping):
            return inner
    return {}


def _payment_id(obj: Mapping[str, Any]) -> str | None:
    """Our payment id: the payment's `reference_id`.

    Real Square refunds and disputes carry no reference_id, only the Square payment id
    (`_square_payment`), which the ingress maps back to ours through the read model.
    """
    reference = obj.get("reference_id")
    return reference if isinstance(reference, str) and reference else None


def _square_payment(kind: str, obj: Mapping[str, Any]) -> str | None:
    """The Square payment an event's object is, or is a refund or dispute of."""
    if kind == "payment":
        value = obj.get("id")
    elif kind == "dispute":
        disputed = obj.get("disputed_payment")
        value = disputed.get("payment_id") if isinstance(disputed, Mapping) else None
    else:
        value = obj.get("payment_id")
    return value if isinstance(value, str) and value else None


def _amount(obj: Mapping[str, Any]) -> tuple[int | None, str | None]:
    money = obj.get("amount_money")
    if not isinstance(money, Mapping):
        return None, None
    amount, currency = money.get("amount"), money.get("currency")
    return (
        amount if type(amount) is int else None,
        currency.upper() if isinstance(currency, str) else None,
    )


def _text(value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError("expected a non-empty string")
    return value


def _epoch_ms(timestamp: Any) -> int:
    """Square's RFC 3339 `created_at` (e.g. 2026-01-02T03:04:05.678Z) as epoch milliseconds."""
    moment = datetime.fromisoformat(_text(timestamp))
    if moment.tzinfo is None:
        raise ValueError("timestamp without a time zone")
    # Integer arithmetic: a float timestamp can turn .678 s into 677 ms.
    return (moment - _EPOCH) // timedelta(milliseconds=1)
