"""The sandbox signs Square webhooks exactly as Square does, and `SquareVerifier` checks them.

The sandbox's own signer (the one it registers with its webhook sender) produces the headers;
both our verifier and Square's SDK helper must accept them, and reject any change to the body,
the key or the notification URL.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from square.utils.webhooks_helper import verify_signature

from gateways.sandbox.config import SandboxConfig
from gateways.sandbox.faults import Faults
from gateways.sandbox.ledger import IdempotencyStore, Ledger
from gateways.sandbox.square import SIGNATURE_HEADER, SquareSandbox
from gateways.sandbox.webhooks import WebhookSender
from ingress.webhooks.base import WebhookRejected
from ingress.webhooks.square import SquareVerifier

KEY = "square_signature_key_test"
TARGET = "http://ingress.test/v1/webhooks/square"


def sandbox_signer(config: SandboxConfig) -> SquareSandbox:
    return SquareSandbox(
        ledger=Ledger(),
        idempotency=IdempotencyStore(),
        faults=Faults(),
        webhooks=WebhookSender(),
        config=config,
    )


def signed(body: bytes, *, notification_url: str | None = None, key: str = KEY) -> dict[str, str]:
    config = SandboxConfig(
        webhook_base_url="http://ingress.test/v1/webhooks",
        square_signature_key=key,
        square_notification_url=notification_url,
    )
    return sandbox_signer(config).sign(body)


def payment_event(**payment: Any) -> bytes:
    event = {
        "merchant_id": "SANDBOX_MERCHANT",
        "type": "payment.updated",
        "event_id": "0b3b4c47-6f55-4f9c-9a39-7a8d4d2f5e10",
        "created_at": "2026-01-02T03:04:05.678Z",
        "data": {
            "type": "payment",
            "id": "sq_pay_1",
            "object": {
                "payment": {
                    "id": "sq_pay_1",
                    "status": "COMPLETED",
                    "reference_id": "pay_1",
                    "amount_money": {"amount": 1234, "currency": "USD"},
                    **payment,
                }
            },
        },
    }
    return json.dumps(event, separators=(",", ":")).encode()


def verifier(*, key: str = KEY, url: str = TARGET) -> SquareVerifier:
    return SquareVerifier(signature_key=key, notification_url=url)


async def rejected(v: SquareVerifier, headers: dict[str, str], body: bytes) -> str:
    with pytest.raises(WebhookRejected) as caught:
        await v.verify(headers, body)
    return caught.value.code


async def test_sandbox_signature_verifies_with_our_verifier_and_squares_helper() -> None:
    body = payment_event()
    headers = signed(body)

    event = await verifier().verify(headers, body)

    assert verify_signature(
        request_body=body.decode(),
        signature_header=headers[SIGNATURE_HEADER],
        signature_key=KEY,
        notification_url=TARGET,
    )
    assert (event.gateway, event.event_type, event.object_id) == (
        "square",
        "payment.updated",
        "sq_pay_1",
    )
    assert event.event_id == "0b3b4c47-6f55-4f9c-9a39-7a8d4d2f5e10"
    assert (event.payment_id, event.amount, event.currency) == ("pay_1", 1234, "USD")
    assert event.occurred_at_ms == 1767323045678
    assert event.payload == body
    assert event.replay_key is None  # Square has no one-time transmission id


async def test_explicit_notification_url_is_the_one_signed() -> None:
    # Behind a proxy Square signs the subscription's URL, not the delivery target.
    public = "https://payments.example.com/v1/webhooks/square"
    body = payment_event()
    headers = signed(body, notification_url=public)

    assert (await verifier(url=public).verify(headers, body)).payment_id == "pay_1"
    assert await rejected(verifier(url=TARGET), headers, body) == "signature_invalid"


async def test_tampered_body_is_signature_invalid() -> None:
    body = payment_event()
    headers = signed(body)
    tampered = body.replace(b"1234", b"9999")

    assert await rejected(verifier(), headers, tampered) == "signature_invalid"


async def test_wrong_key_is_signature_invalid() -> None:
    body = payment_event()

    assert await rejected(verifier(key="another_key"), signed(body), body) == "signature_invalid"


async def test_wrong_notification_url_is_signature_invalid() -> None:
    body = payment_event()
    other = "http://ingress.test/v1/webhooks/square/"

    assert await rejected(verifier(url=other), signed(body), body) == "signature_invalid"


async def test_missing_signature_header_is_signature_missing() -> None:
    body = payment_event()

    assert await rejected(verifier(), {}, body) == "signature_missing"
    assert await rejected(verifier(), {SIGNATURE_HEADER: ""}, body) == "signature_missing"


async def test_garbage_signature_is_signature_invalid() -> None:
    body = payment_event()

    assert await rejected(verifier(), {SIGNATURE_HEADER: "not-base64"}, body) == (
        "signature_invalid"
    )


async def test_bad_json_with_valid_signature_is_payload_invalid() -> None:
    body = b'{"type": "payment.updated", '

    assert await rejected(verifier(), signed(body), body) == "payload_invalid"


async def test_json_that_is_not_an_event_is_payload_invalid() -> None:
    for body in (b"[]", b'{"type": "payment.updated"}', b'{"data": {}}'):
        assert await rejected(verifier(), signed(body), body) == "payload_invalid"


async def test_non_utf8_body_is_payload_invalid() -> None:
    body = b"\xff\xfe"

    assert await rejected(verifier(), signed(body), body) == "payload_invalid"


async def test_refund_and_dispute_events_carry_the_sandbox_reference_id() -> None:
    refund = {
        "type": "refund.updated",
        "event_id": "e-refund",
        "created_at": "2026-01-02T03:04:05Z",
        "data": {
            "type": "refund",
            "id": "rf_1",
            "object": {
                "refund": {
                    "id": "rf_1",
                    "payment_id": "sq_pay_1",
                    "status": "COMPLETED",
                    "amount_money": {"amount": 300, "currency": "usd"},
                    "reference_id": "pay_1",
                }
            },
        },
    }
    dispute = {
        "type": "dispute.created",
        "event_id": "e-dispute",
        "created_at": "2026-01-02T03:04:05+00:00",
        "data": {
            "type": "dispute",
            "id": "dp_1",
            "object": {
                "object": {
                    "id": "dp_1",
                    "disputed_payment": {"payment_id": "sq_pay_1"},
                    "amount_money": {"amount": 1000, "currency": "USD"},
                    "reference_id": "pay_1",
                }
            },
        },
    }
    for raw, object_id, amount in ((refund, "rf_1", 300), (dispute, "dp_1", 1000)):
        body = json.dumps(raw).encode()
        event = await verifier().verify(signed(body), body)
        assert (event.object_id, event.payment_id, event.amount) == (object_id, "pay_1", amount)
        assert event.gateway_payment == "sq_pay_1"  # how real Square's are routed
        assert event.currency == "USD"
        assert event.occurred_at_ms == 1767323045000


async def test_event_without_reference_id_is_unroutable_not_rejected() -> None:
    # Real Square refunds carry no reference_id: verified, with only Square's payment id.
    body = payment_event(reference_id=None)

    event = await verifier().verify(signed(body), body)
    assert (event.payment_id, event.gateway_payment) == (None, "sq_pay_1")


def test_verifier_refuses_empty_configuration() -> None:
    with pytest.raises(ValueError):
        SquareVerifier(signature_key="", notification_url=TARGET)
    with pytest.raises(ValueError):
        SquareVerifier(signature_key=KEY, notification_url="")
