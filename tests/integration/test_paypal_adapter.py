"""`PayPalGateway` (the real `paypal-server-sdk`) against the sandbox, flow by flow.

Webhooks go to a receiver that verifies them with our ingress `PayPalVerifier`, which fetches
the signing certificate from the sandbox: the whole signature path runs over real sockets.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import socket
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.types import ASGIApp

from domain.errors import (
    GatewayAuthError,
    GatewayDeclined,
    GatewayInvalidRequest,
    GatewayTimeout,
    GatewayUnavailable,
    NotSupported,
)
from domain.money import Money
from domain.payment import CaptureMode
from domain.status import PaymentStatus
from gateways.base import (
    AuthorizeRequest,
    CancelRequest,
    CaptureRequest,
    EventKind,
    Gateway,
    RefundRequest,
    RefundStatus,
)
from gateways.paypal import PayPalGateway, interpret_event
from gateways.sandbox.app import SandboxConfig, create_app
from ingress.webhooks.base import VerifiedEvent, WebhookRejected
from ingress.webhooks.paypal import PayPalVerifier
from tests.servers import serve_asgi

WEBHOOK_ID = "WH-ADAPTER-TEST"


@dataclass
class Receiver:
    """The ingress's part: verify each delivery, keep what passed and why others failed."""

    verifier: PayPalVerifier | None = None
    events: list[VerifiedEvent] = field(default_factory=list)
    rejections: list[str] = field(default_factory=list)

    def app(self, base_url: str) -> ASGIApp:
        async def receive(request: Request) -> JSONResponse:
            assert self.verifier is not None
            headers = {k.lower(): v for k, v in request.headers.items()}
            try:
                event = await self.verifier.verify(headers, await request.body())
            except WebhookRejected as exc:
                self.rejections.append(exc.code)
                return JSONResponse({"error": exc.code}, status_code=400)
            self.events.append(event)
            return JSONResponse({"received": True})

        return Starlette(routes=[Route("/paypal", receive, methods=["POST"])])

    async def wait_for(
        self, event_type: str, payment_id: str, timeout_s: float = 5
    ) -> VerifiedEvent:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for event in list(self.events):
                if event.event_type == event_type and event.payment_id == payment_id:
                    return event
            await asyncio.sleep(0.02)
        raise AssertionError(
            f"no verified {event_type} for {payment_id}; rejected: {self.rejections}"
        )


@dataclass
class Stack:
    base_url: str
    control: httpx.Client
    receiver: Receiver

    @property
    def api_base(self) -> str:
        return f"{self.base_url}/paypal"

    def summary(self) -> dict[str, dict[str, int]]:
        return self.control.get("/_sandbox/ledger/summary").raise_for_status().json()

    def entries(self, payment_id: str) -> list[tuple[str, int]]:
        response = self.control.get("/_sandbox/ledger", params={"payment_id": payment_id})
        return [(e["kind"], e["amount"]) for e in response.raise_for_status().json()["entries"]]

    def tokens_issued(self) -> int:
        return int(
            self.control.get("/_sandbox/paypal/stats").raise_for_status().json()["tokens_issued"]
        )

    def faults(self, **config: Any) -> None:
        self.control.post("/_sandbox/faults/paypal", json=config).raise_for_status()


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    receiver = Receiver()
    with serve_asgi(receiver.app) as receiver_url:

        def sandbox_app(base_url: str) -> ASGIApp:
            host = base_url.removeprefix("http://")
            receiver.verifier = PayPalVerifier(
                webhook_id=WEBHOOK_ID, allowed_cert_hosts=frozenset({host})
            )
            config = SandboxConfig(
                public_url=base_url, webhook_base_url=receiver_url, paypal_webhook_id=WEBHOOK_ID
            )
            return create_app(config)

        with serve_asgi(sandbox_app) as base_url:
            control = httpx.Client(base_url=base_url, timeout=10)
            try:
                yield Stack(base_url, control, receiver)
            finally:
                control.close()


@pytest.fixture
def sandbox(stack: Stack) -> Stack:
    stack.control.post("/_sandbox/reset").raise_for_status()
    return stack


def make_gateway(
    stack: Stack, *, secret: str = "secret", timeout_s: float = 5, api_base: str | None = None
) -> PayPalGateway:
    return PayPalGateway(
        client_id="client-1",
        client_secret=secret,
        api_base=api_base or stack.api_base,
        timeout_s=timeout_s,
        max_workers=32,
    )


@pytest.fixture
async def gateway(sandbox: Stack) -> AsyncIterator[PayPalGateway]:
    gw = make_gateway(sandbox)
    yield gw
    await gw.close()


def payment(
    token: str = "paypal_vault_ok",
    *,
    amount: int = 1000,
    currency: str = "USD",
    capture: CaptureMode = CaptureMode.AUTOMATIC,
    key: str | None = None,
) -> AuthorizeRequest:
    payment_id = f"pay_{uuid.uuid4().hex[:12]}"
    return AuthorizeRequest(
        payment_id=payment_id,
        amount=Money(amount, currency),
        capture=capture,
        method_token=token,
        idempotency_key=key or f"{payment_id}:authorize:1",
        order_id="order-7",
        user_id="u-1",
    )


def test_adapter_satisfies_the_gateway_protocol(sandbox: Stack) -> None:
    assert isinstance(make_gateway(sandbox), Gateway)


# --- charging -----------------------------------------------------------------------------


async def test_paypal_charge_succeeds_and_charges_once(
    gateway: PayPalGateway, sandbox: Stack
) -> None:
    req = payment()

    result = await gateway.authorize(req)

    assert result.status is PaymentStatus.SUCCEEDED
    assert result.provider_status == "COMPLETED"
    assert result.captured_amount == 1000
    assert result.card is not None
    assert (result.card.brand, result.card.last4, result.card.exp_month, result.card.exp_year) == (
        "visa",
        "4242",
        12,
        2030,
    )
    assert result.card.token == "paypal_vault_ok"
    assert sandbox.summary()[req.payment_id] == {
        "captured": 1000,
        "refunded": 0,
        "captures": 1,
        "refunds": 0,
    }
    # The reference is the capture: fetch and refund both take it.
    assert (await gateway.fetch(result.gateway_reference)).status is PaymentStatus.SUCCEEDED


async def test_paypal_charge_webhook_arrives_verified(
    gateway: PayPalGateway, sandbox: Stack
) -> None:
    req = payment(amount=1234)

    result = await gateway.authorize(req)

    event = await sandbox.receiver.wait_for("PAYMENT.CAPTURE.COMPLETED", req.payment_id)
    assert event.gateway == "paypal"
    assert event.object_id == result.gateway_reference
    assert (event.amount, event.currency) == (1234, "USD")
    assert event.replay_key and event.event_id.startswith("WH-")
    assert event.occurred_at_ms > 0
    effect = interpret_event(event.event_type, json.loads(event.payload))
    assert effect is not None
    assert (effect.kind, effect.status, effect.amount) == (
        EventKind.PAYMENT,
        PaymentStatus.SUCCEEDED,
        1234,
    )
    assert effect.gateway_reference == result.gateway_reference


@pytest.mark.parametrize(("currency", "amount"), [("JPY", 1500), ("BHD", 1234), ("USD", 1)])
async def test_paypal_amounts_are_exact(
    gateway: PayPalGateway, sandbox: Stack, currency: str, amount: int
) -> None:
    req = payment(amount=amount, currency=currency)

    result = await gateway.authorize(req)

    assert result.captured_amount == amount
    assert sandbox.summary()[req.payment_id]["captured"] == amount


async def test_paypal_same_idempotency_key_charges_once(
    gateway: PayPalGateway, sandbox: Stack
) -> None:
    req = payment()

    first = await gateway.authorize(req)
    second = await gateway.authorize(req)

    assert second == first
    assert sandbox.summary()[req.payment_id]["captures"] == 1


async def test_paypal_same_key_different_body_is_refused(
    gateway: PayPalGateway, sandbox: Stack
) -> None:
    req = payment()
    await gateway.authorize(req)
    changed = dataclasses.replace(req, amount=Money(2000, "USD"))

    with pytest.raises(GatewayInvalidRequest) as caught:
        await gateway.authorize(changed)

    assert caught.value.code == "idempotency_error"
    assert sandbox.summary()[req.payment_id] == {
        "captured": 1000,
        "refunded": 0,
        "captures": 1,
        "refunds": 0,
    }


async def test_paypal_decline_is_card_declined(gateway: PayPalGateway, sandbox: Stack) -> None:
    req = payment("paypal_vault_declined")

    with pytest.raises(GatewayDeclined) as caught:
        await gateway.authorize(req)

    assert caught.value.code == "card_declined"
    assert caught.value.decline_code == "instrument_declined"
    assert not caught.value.retryable
    assert req.payment_id not in sandbox.summary()


async def test_paypal_insufficient_funds(gateway: PayPalGateway, sandbox: Stack) -> None:
    req = payment("paypal_vault_insufficient")

    with pytest.raises(GatewayDeclined) as caught:
        await gateway.authorize(req)

    assert caught.value.code == "insufficient_funds"
    assert caught.value.decline_code == "insufficient_funds"
    assert req.payment_id not in sandbox.summary()


async def test_paypal_unknown_vault_id_is_invalid_request(gateway: PayPalGateway) -> None:
    with pytest.raises(GatewayInvalidRequest) as caught:
        await gateway.authorize(payment("paypal_vault_nope"))

    assert caught.value.code == "invalid_request"
    assert "TOKEN_ID_NOT_FOUND" in caught.value.message


async def test_paypal_3ds_requires_action_then_captures_after_approval(
    gateway: PayPalGateway, sandbox: Stack
) -> None:
    req = payment("paypal_vault_3ds")
    result = await gateway.authorize(req)
    assert result.status is PaymentStatus.REQUIRES_ACTION
    order_id = result.gateway_reference
    early = await gateway.capture(
        CaptureRequest(req.payment_id, order_id, f"{req.payment_id}:capture:1")
    )
    assert early.status is PaymentStatus.REQUIRES_ACTION

    sandbox.control.post(f"/_sandbox/paypal/orders/{order_id}/approve").raise_for_status()
    approved = await sandbox.receiver.wait_for("CHECKOUT.ORDER.APPROVED", req.payment_id)
    effect = interpret_event(approved.event_type, json.loads(approved.payload))
    captured = await gateway.capture(
        CaptureRequest(req.payment_id, order_id, f"{req.payment_id}:capture:2")
    )

    assert effect is not None and effect.status is PaymentStatus.PROCESSING
    assert captured.status is PaymentStatus.SUCCEEDED
    assert captured.captured_amount == 1000
    assert sandbox.summary()[req.payment_id]["captures"] == 1
    assert (await gateway.fetch(order_id)).gateway_reference == captured.gateway_reference


async def test_paypal_pending_then_settled_by_webhook(
    gateway: PayPalGateway, sandbox: Stack
) -> None:
    req = payment("paypal_vault_pending")

    result = await gateway.authorize(req)

    assert result.status is PaymentStatus.PROCESSING
    assert result.captured_amount == 0
    pending = await sandbox.receiver.wait_for("PAYMENT.CAPTURE.PENDING", req.payment_id)
    assert pending.object_id == result.gateway_reference
    assert req.payment_id not in sandbox.summary()

    sandbox.control.post(
        f"/_sandbox/paypal/captures/{result.gateway_reference}/settle",
        data={"outcome": "completed"},
    ).raise_for_status()

    completed = await sandbox.receiver.wait_for("PAYMENT.CAPTURE.COMPLETED", req.payment_id)
    assert (completed.amount, completed.currency) == (1000, "USD")
    assert (await gateway.fetch(result.gateway_reference)).status is PaymentStatus.SUCCEEDED
    assert sandbox.summary()[req.payment_id]["captured"] == 1000


async def test_paypal_pending_then_denied_by_webhook(
    gateway: PayPalGateway, sandbox: Stack
) -> None:
    req = payment("paypal_vault_pending")
    result = await gateway.authorize(req)

    sandbox.control.post(
        f"/_sandbox/paypal/captures/{result.gateway_reference}/settle", json={"outcome": "denied"}
    ).raise_for_status()

    denied = await sandbox.receiver.wait_for("PAYMENT.CAPTURE.DENIED", req.payment_id)
    effect = interpret_event(denied.event_type, json.loads(denied.payload))
    assert effect is not None and effect.status is PaymentStatus.FAILED
    fetched = await gateway.fetch(result.gateway_reference)
    assert fetched.status is PaymentStatus.FAILED
    assert fetched.error_code == "card_declined"


# --- manual capture and void -----------------------------------------------------------------


async def test_paypal_manual_capture_in_full(gateway: PayPalGateway, sandbox: Stack) -> None:
    req = payment(capture=CaptureMode.MANUAL)
    held = await gateway.authorize(req)
    assert held.status is PaymentStatus.AUTHORIZED
    assert held.captured_amount == 0
    await sandbox.receiver.wait_for("PAYMENT.AUTHORIZATION.CREATED", req.payment_id)

    captured = await gateway.capture(
        CaptureRequest(req.payment_id, held.gateway_reference, "cap-1")
    )

    assert captured.status is PaymentStatus.SUCCEEDED
    assert captured.captured_amount == 1000
    assert captured.gateway_reference != held.gateway_reference  # now the capture id
    assert sandbox.entries(req.payment_id) == [("authorization", 1000), ("capture", 1000)]
    assert (await gateway.fetch(held.gateway_reference)).status is PaymentStatus.SUCCEEDED


async def test_paypal_partial_capture(gateway: PayPalGateway, sandbox: Stack) -> None:
    req = payment(capture=CaptureMode.MANUAL)
    held = await gateway.authorize(req)
    capture = CaptureRequest(
        req.payment_id, held.gateway_reference, "cap-partial", Money(400, "USD")
    )

    first = await gateway.capture(capture)
    retried = await gateway.capture(capture)  # the executor retries with the same key

    assert first.status is PaymentStatus.SUCCEEDED
    assert first.captured_amount == 400
    assert retried == first
    assert sandbox.entries(req.payment_id) == [
        ("authorization", 1000),
        ("capture", 400),
        ("void", 600),
    ]
    assert sandbox.summary()[req.payment_id]["captured"] == 400


async def test_paypal_capture_above_authorization_is_refused(gateway: PayPalGateway) -> None:
    req = payment(capture=CaptureMode.MANUAL)
    held = await gateway.authorize(req)

    with pytest.raises(GatewayInvalidRequest) as caught:
        await gateway.capture(
            CaptureRequest(req.payment_id, held.gateway_reference, "cap", Money(1001, "USD"))
        )

    assert "MAX_CAPTURE_AMOUNT_EXCEEDED" in caught.value.message


async def test_paypal_void_cancels_the_hold(gateway: PayPalGateway, sandbox: Stack) -> None:
    req = payment(capture=CaptureMode.MANUAL)
    held = await gateway.authorize(req)

    canceled = await gateway.cancel(CancelRequest(req.payment_id, held.gateway_reference, "void-1"))

    assert canceled.status is PaymentStatus.CANCELED
    assert canceled.provider_status == "VOIDED"
    assert sandbox.entries(req.payment_id) == [("authorization", 1000), ("void", 1000)]
    voided = await sandbox.receiver.wait_for("PAYMENT.AUTHORIZATION.VOIDED", req.payment_id)
    effect = interpret_event(voided.event_type, json.loads(voided.payload))
    assert effect is not None and effect.status is PaymentStatus.CANCELED


async def test_paypal_cannot_cancel_a_completed_capture(gateway: PayPalGateway) -> None:
    charged = await gateway.authorize(payment())
    held = await gateway.authorize(payment(capture=CaptureMode.MANUAL))
    await gateway.capture(CaptureRequest("p", held.gateway_reference, "cap"))

    with pytest.raises(NotSupported):
        await gateway.cancel(CancelRequest("p", charged.gateway_reference, "void-a"))
    with pytest.raises(NotSupported):
        await gateway.cancel(CancelRequest("p", held.gateway_reference, "void-b"))


# --- refunds ------------------------------------------------------------------------------------


def refund_req(req: AuthorizeRequest, reference: str, amount: int, n: int = 1) -> RefundRequest:
    return RefundRequest(
        refund_id=f"ref_{n}",
        payment_id=req.payment_id,
        gateway_reference=reference,
        amount=Money(amount, req.amount.currency),
        idempotency_key=f"{req.payment_id}:refund:{n}",
        reason="requested_by_customer",
    )


async def test_paypal_full_refund(gateway: PayPalGateway, sandbox: Stack) -> None:
    req = payment()
    charged = await gateway.authorize(req)

    refunded = await gateway.refund(refund_req(req, charged.gateway_reference, 1000))

    assert refunded.status is RefundStatus.PROCESSED
    assert (refunded.amount, refunded.provider_status) == (1000, "COMPLETED")
    assert (await gateway.fetch(charged.gateway_reference)).status is PaymentStatus.REFUNDED
    event = await sandbox.receiver.wait_for("PAYMENT.CAPTURE.REFUNDED", req.payment_id)
    effect = interpret_event(event.event_type, json.loads(event.payload))
    assert effect is not None
    assert (effect.kind, effect.refund_status, effect.amount) == (
        EventKind.REFUND,
        RefundStatus.PROCESSED,
        1000,
    )
    assert (effect.gateway_reference, effect.refund_reference) == (
        charged.gateway_reference,
        refunded.refund_reference,
    )


async def test_paypal_partial_refund(gateway: PayPalGateway, sandbox: Stack) -> None:
    req = payment()
    charged = await gateway.authorize(req)

    first = await gateway.refund(refund_req(req, charged.gateway_reference, 300, 1))
    again = await gateway.refund(refund_req(req, charged.gateway_reference, 300, 1))  # replay
    second = await gateway.refund(refund_req(req, charged.gateway_reference, 700, 2))

    assert (first.amount, second.amount) == (300, 700)
    assert again == first
    assert sandbox.summary()[req.payment_id] == {
        "captured": 1000,
        "refunded": 1000,
        "captures": 1,
        "refunds": 2,
    }


async def test_paypal_refund_above_capture_is_refused(
    gateway: PayPalGateway, sandbox: Stack
) -> None:
    req = payment()
    charged = await gateway.authorize(req)
    await gateway.refund(refund_req(req, charged.gateway_reference, 600, 1))

    with pytest.raises(GatewayInvalidRequest) as caught:
        await gateway.refund(refund_req(req, charged.gateway_reference, 401, 2))

    assert "REFUND_AMOUNT_EXCEEDED" in caught.value.message
    assert (
        await gateway.fetch(charged.gateway_reference)
    ).status is PaymentStatus.PARTIALLY_REFUNDED
    assert sandbox.summary()[req.payment_id]["refunded"] == 600


async def test_paypal_dispute_webhook(gateway: PayPalGateway, sandbox: Stack) -> None:
    req = payment()
    charged = await gateway.authorize(req)

    sandbox.control.post(
        f"/_sandbox/paypal/captures/{charged.gateway_reference}/dispute"
    ).raise_for_status()

    event = await sandbox.receiver.wait_for("CUSTOMER.DISPUTE.CREATED", req.payment_id)
    assert event.object_id.startswith("PP-D-")
    assert (event.amount, event.currency) == (1000, "USD")
    effect = interpret_event(event.event_type, json.loads(event.payload))
    assert effect is not None
    assert (effect.kind, effect.status) == (EventKind.DISPUTE, PaymentStatus.DISPUTED)
    assert effect.gateway_reference == charged.gateway_reference


# --- OAuth ----------------------------------------------------------------------------------------


async def test_paypal_token_fetched_once_for_concurrent_calls(
    gateway: PayPalGateway, sandbox: Stack
) -> None:
    requests = [payment() for _ in range(20)]

    results = await asyncio.gather(*(gateway.authorize(r) for r in requests))

    assert {r.status for r in results} == {PaymentStatus.SUCCEEDED}
    assert sandbox.tokens_issued() == 1
    summary = sandbox.summary()
    assert all(summary[r.payment_id]["captures"] == 1 for r in requests)


async def test_paypal_token_refreshed_before_it_expires(
    gateway: PayPalGateway, sandbox: Stack
) -> None:
    sandbox.control.post("/_sandbox/paypal/token_ttl", json={"expires_in": 1}).raise_for_status()
    await gateway.authorize(payment())
    await gateway.authorize(payment())
    assert sandbox.tokens_issued() == 1

    await asyncio.sleep(1.0)  # the token lapses at 1 s; the adapter renews it at 0.9 s
    results = await asyncio.gather(*(gateway.authorize(payment()) for _ in range(5)))

    assert {r.status for r in results} == {PaymentStatus.SUCCEEDED}
    assert sandbox.tokens_issued() == 2


async def test_paypal_wrong_secret_is_auth_error_and_logged_without_secret(
    sandbox: Stack, caplog: pytest.LogCaptureFixture
) -> None:
    gw = make_gateway(sandbox, secret="wrong-secret")
    caplog.set_level(logging.ERROR, logger="gateways.paypal")
    try:
        with pytest.raises(GatewayAuthError) as caught:
            await gw.authorize(payment())
    finally:
        await gw.close()

    assert caught.value.code == "authentication_failed"
    assert not caught.value.retryable
    assert "client-1" in caplog.text and "401" in caplog.text and "invalid_client" in caplog.text
    assert "wrong-secret" not in caplog.text and "wrong-secret" not in str(caught.value)


# --- faults ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("config", [{"error_rate": 1.0}, {"unavailable": True}])
async def test_paypal_gateway_errors_are_unavailable(
    gateway: PayPalGateway, sandbox: Stack, config: dict[str, Any]
) -> None:
    await gateway.authorize(payment())  # the token is in hand before the outage
    sandbox.faults(**config)
    req = payment()

    with pytest.raises(GatewayUnavailable) as caught:
        await gateway.authorize(req)

    assert caught.value.code == "gateway_unavailable" and caught.value.retryable
    assert req.payment_id not in sandbox.summary()


async def test_paypal_token_endpoint_outage_is_unavailable(
    gateway: PayPalGateway, sandbox: Stack
) -> None:
    sandbox.faults(unavailable=True)

    with pytest.raises(GatewayUnavailable):
        await gateway.authorize(payment())


async def test_paypal_read_timeout_is_gateway_timeout(sandbox: Stack) -> None:
    gw = make_gateway(sandbox, timeout_s=1)
    try:
        await gw.authorize(payment())  # the token first; then every request hangs for 2 s
        sandbox.faults(timeout_rate=1.0, timeout_s=2)
        with pytest.raises(GatewayTimeout) as caught:
            await gw.authorize(payment())
    finally:
        await gw.close()

    assert caught.value.code == "gateway_timeout" and caught.value.retryable


async def test_paypal_connection_refused_is_unavailable(sandbox: Stack) -> None:
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))  # bound, never listening: connections are refused
        gw = make_gateway(sandbox, api_base=f"http://127.0.0.1:{closed.getsockname()[1]}/paypal")
        try:
            with pytest.raises(GatewayUnavailable) as caught:
                await gw.authorize(payment())
        finally:
            await gw.close()

    assert not isinstance(caught.value, GatewayTimeout)
