"""Stripe webhooks: `Stripe-Signature` verified by the SDK's own code, 300 s tolerance."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import stripe

from ingress.webhooks.base import VerifiedEvent, WebhookRejected

DEFAULT_TOLERANCE_S = 300


class StripeVerifier:
    gateway = "stripe"

    def __init__(self, *, secret: str, tolerance_s: int = DEFAULT_TOLERANCE_S) -> None:
        self._secret = secret
        self._tolerance = tolerance_s

    async def verify(self, headers: Mapping[str, str], body: bytes) -> VerifiedEvent:
        header = headers.get("stripe-signature")
        if not header:
            raise WebhookRejected("Stripe-Signature header is missing", code="signature_missing")
        try:
            payload = body.decode("utf-8")
            # Verifies the HMAC over f"{t}.{body}" and the timestamp, then parses the JSON.
            event = stripe.Webhook.construct_event(
                payload, header, self._secret, tolerance=self._tolerance
            )
        except UnicodeDecodeError:
            raise WebhookRejected("body is not UTF-8", code="payload_invalid") from None
        except stripe.SignatureVerificationError as exc:
            expired = "tolerance" in str(exc).lower()
            raise WebhookRejected(
                "Stripe signature timestamp is outside the tolerance"
                if expired
                else "Stripe signature does not match the body",
                code="signature_expired" if expired else "signature_invalid",
            ) from None
        except (ValueError, AttributeError, TypeError):
            # Signed, but not a JSON object (the SDK fails on `null`, lists, numbers).
            raise WebhookRejected("body is not a JSON event", code="payload_invalid") from None
        return _normalise(event.to_dict(), body)


def _normalise(event: Mapping[str, Any], body: bytes) -> VerifiedEvent:
    try:
        obj: Mapping[str, Any] = event["data"]["object"]
        metadata = obj.get("metadata") or {}
        currency = obj.get("currency")
        amount = obj.get("amount_received", obj.get("amount"))
        return VerifiedEvent(
            gateway="stripe",
            event_id=str(event["id"]),
            event_type=str(event["type"]),
            object_id=str(obj.get("id")),
            payment_id=metadata.get("payment_id"),
            amount=int(amount) if isinstance(amount, int) else None,
            currency=currency.upper() if isinstance(currency, str) else None,
            occurred_at_ms=int(event.get("created") or 0) * 1000,
            payload=body,
            gateway_payment=_payment_intent(obj),
        )
    except (KeyError, TypeError, ValueError, AttributeError):
        # Signed by Stripe yet not the shape we read (a fuzzer found `"created": ":"`).
        raise WebhookRejected("not a Stripe event object", code="payload_invalid") from None


def _payment_intent(obj: Mapping[str, Any]) -> str | None:
    """The PaymentIntent an event's object is or belongs to (charges, refunds, disputes)."""
    value = obj.get("id") if obj.get("object") == "payment_intent" else obj.get("payment_intent")
    return value if isinstance(value, str) and value else None
