import json
import time

import pytest
import stripe

from domain.status import PaymentStatus
from gateways.base import EventKind
from gateways.stripe import HANDLED_EVENTS, interpret_event
from ingress.webhooks.base import WebhookRejected
from ingress.webhooks.stripe import StripeVerifier

SECRET = "whsec_test"


def event(event_type: str = "payment_intent.succeeded", **obj: object) -> bytes:
    body = {
        "id": "evt_1",
        "object": "event",
        "type": event_type,
        "created": int(time.time()),
        "data": {
            "object": {
                "id": "pi_1",
                "object": "payment_intent",
                "amount": 1000,
                "amount_received": 1000,
                "currency": "usd",
                "status": "succeeded",
                "metadata": {"payment_id": "pay_1"},
                **obj,
            }
        },
    }
    return json.dumps(body).encode()


def signed(body: bytes, secret: str = SECRET, timestamp: int | None = None) -> dict[str, str]:
    header = stripe.WebhookSignature.generate_signature_header(
        body.decode(), secret, timestamp=timestamp or int(time.time())
    )
    return {"stripe-signature": header}


async def test_signature_made_by_stripes_own_code_verifies() -> None:
    body = event()
    verified = await StripeVerifier(secret=SECRET).verify(signed(body), body)
    assert verified.event_id == "evt_1" and verified.payment_id == "pay_1"
    assert verified.object_id == "pi_1" and verified.amount == 1000 and verified.currency == "USD"
    assert verified.payload == body


@pytest.mark.parametrize(
    ("headers_for", "code"),
    [
        (lambda b: {}, "signature_missing"),
        (lambda b: signed(b, secret="whsec_wrong"), "signature_invalid"),
        (lambda b: signed(b, timestamp=int(time.time()) - 301), "signature_expired"),
        (lambda b: signed(b + b" "), "signature_invalid"),
    ],
    ids=["missing", "wrong-secret", "expired", "tampered-body"],
)
async def test_bad_signatures_are_rejected(headers_for, code: str) -> None:
    body = event()
    with pytest.raises(WebhookRejected) as err:
        await StripeVerifier(secret=SECRET).verify(headers_for(body), body)
    assert err.value.code == code


async def test_tampered_body_with_a_valid_header_is_rejected() -> None:
    body = event()
    headers = signed(body)
    with pytest.raises(WebhookRejected) as err:
        await StripeVerifier(secret=SECRET).verify(headers, event(amount_received=1))
    assert err.value.code == "signature_invalid"


async def test_valid_signature_over_garbage_is_payload_invalid() -> None:
    body = b"not json"
    with pytest.raises(WebhookRejected) as err:
        await StripeVerifier(secret=SECRET).verify(signed(body), body)
    assert err.value.code == "payload_invalid"


def test_every_handled_event_type_interprets() -> None:
    payload = json.loads(event())
    for event_type in HANDLED_EVENTS:
        assert interpret_event(event_type, payload) is not None, event_type
    assert interpret_event("customer.created", payload) is None


def test_payment_intent_events_map_to_statuses() -> None:
    ok = interpret_event("payment_intent.succeeded", json.loads(event()))
    assert ok is not None and ok.status is PaymentStatus.SUCCEEDED and ok.amount == 1000
    failed = interpret_event(
        "payment_intent.payment_failed",
        json.loads(
            event(last_payment_error={"code": "card_declined", "decline_code": "do_not_honor"})
        ),
    )
    assert failed is not None and failed.decline_code == "do_not_honor"
    dispute = interpret_event("charge.dispute.created", json.loads(event()))
    assert dispute is not None and dispute.kind is EventKind.DISPUTE
