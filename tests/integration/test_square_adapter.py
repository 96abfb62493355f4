"""`SquareGateway` (the real `squareup` SDK on httpx-aiohttp) against the sandbox over HTTP.

Flows, not calls: each test drives the adapter the way the executor does and checks both our
typed answer and the money in the sandbox's ledger. The last tests receive the sandbox's
webhooks on a tiny Starlette app that verifies them with `SquareVerifier`.
"""

from __future__ import annotations

import asyncio
import json
import socket
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import httpx
import pytest
from square import AsyncSquare
from square.core.api_error import ApiError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

import gateways.square as square_adapter
from domain.errors import (
    GatewayAuthError,
    GatewayDeclined,
    GatewayInvalidRequest,
    GatewayTimeout,
    GatewayUnavailable,
    NotSupported,
)
from domain.janitor import LOOKUP_AFTER_MS, LOOKUP_BEFORE_MS
from domain.money import Money
from domain.payment import CaptureMode
from domain.status import PaymentStatus
from gateways.base import (
    AuthorizeRequest,
    CancelRequest,
    CaptureRequest,
    Gateway,
    GatewayResult,
    LookupRequest,
    RefundRequest,
    RefundStatus,
)
from gateways.sandbox.app import SandboxConfig
from gateways.square import LIKELY_SKEW_MS, SquareGateway, interpret_event
from ingress.webhooks.base import VerifiedEvent, WebhookRejected
from ingress.webhooks.square import SquareVerifier
from tests.integration.test_sandbox_square import RunningSandbox, running_sandbox, serve_app

TOKEN = "sandbox-square-token"
SIGNATURE_KEY = "square_signature_key_test"


@pytest.fixture(scope="module")
def server() -> Iterator[RunningSandbox]:
    with running_sandbox(SandboxConfig()) as running:
        yield running


@pytest.fixture
def sandbox(server: RunningSandbox) -> RunningSandbox:
    server.reset()
    return server


@pytest.fixture
async def gateway(sandbox: RunningSandbox) -> AsyncIterator[SquareGateway]:
    gw = SquareGateway(access_token=TOKEN, api_base=sandbox.square_base, timeout_s=5)
    yield gw
    await gw.close()


def authorize_request(
    payment_id: str = "pay_1",
    *,
    token: str = "cnon:card-nonce-ok",
    amount: int = 1000,
    capture: CaptureMode = CaptureMode.AUTOMATIC,
    idempotency_key: str | None = None,
) -> AuthorizeRequest:
    return AuthorizeRequest(
        payment_id=payment_id,
        amount=Money(amount, "USD"),
        capture=capture,
        method_token=token,
        idempotency_key=idempotency_key or f"{payment_id}:authorize:1",
        order_id="order-1",
        user_id="user-1",
    )


async def authorized(gateway: SquareGateway, payment_id: str = "pay_1") -> GatewayResult:
    result = await gateway.authorize(authorize_request(payment_id, capture=CaptureMode.MANUAL))
    assert result.status is PaymentStatus.AUTHORIZED
    return result


def refund_request(
    reference: str, amount: int, *, refund_id: str = "rf_1", attempt: int = 1
) -> RefundRequest:
    return RefundRequest(
        refund_id=refund_id,
        payment_id="pay_1",
        gateway_reference=reference,
        amount=Money(amount, "USD"),
        idempotency_key=f"pay_1:refund:{refund_id}:{attempt}",
    )


def square_code(exc: BaseException) -> str:
    cause = exc.__cause__
    assert isinstance(cause, ApiError)
    return str(cause.errors[0].code)


def test_square_gateway_satisfies_the_protocol() -> None:
    gw = SquareGateway(access_token=TOKEN, api_base="http://127.0.0.1:9", timeout_s=1)
    assert isinstance(gw, Gateway)
    assert gw.name == "square"


# --- authorize ----------------------------------------------------------------------------


async def test_successful_payment_charges_exactly_once(
    gateway: SquareGateway, sandbox: RunningSandbox
) -> None:
    result = await gateway.authorize(authorize_request())

    assert (result.status, result.provider_status) == (PaymentStatus.SUCCEEDED, "COMPLETED")
    assert result.captured_amount == 1000
    assert result.card is not None
    assert (result.card.brand, result.card.last4, result.card.exp_month) == ("visa", "1111", 12)
    assert result.card.token == "cnon:card-nonce-ok"
    assert sandbox.summary() == {
        "pay_1": {"captured": 1000, "refunded": 0, "captures": 1, "refunds": 0}
    }
    assert sandbox.entries()[0]["payment_intent"] == result.gateway_reference
    fetched = await gateway.fetch(result.gateway_reference)
    assert (fetched.status, fetched.captured_amount) == (PaymentStatus.SUCCEEDED, 1000)


async def test_same_idempotency_key_twice_charges_once(
    gateway: SquareGateway, sandbox: RunningSandbox
) -> None:
    first = await gateway.authorize(authorize_request())
    second = await gateway.authorize(authorize_request())

    assert second.gateway_reference == first.gateway_reference
    assert sandbox.summary()["pay_1"]["captures"] == 1


async def test_long_idempotency_key_is_hashed_and_still_deduplicates(
    gateway: SquareGateway, sandbox: RunningSandbox
) -> None:
    long_key = "pay_1:authorize:" + "x" * 60

    first = await gateway.authorize(authorize_request(idempotency_key=long_key))
    second = await gateway.authorize(authorize_request(idempotency_key=long_key))

    assert second.gateway_reference == first.gateway_reference
    assert sandbox.summary()["pay_1"]["captures"] == 1


async def test_same_key_with_a_different_body_is_refused(
    gateway: SquareGateway, sandbox: RunningSandbox
) -> None:
    await gateway.authorize(authorize_request())

    with pytest.raises(GatewayInvalidRequest) as caught:
        await gateway.authorize(authorize_request(amount=2000))

    assert caught.value.code == "idempotency_error"
    assert square_code(caught.value) == "IDEMPOTENCY_KEY_REUSED"
    assert sandbox.summary()["pay_1"]["captures"] == 1


@pytest.mark.parametrize(
    ("token", "code", "decline_code"),
    [
        ("cnon:card-nonce-declined", "card_declined", "generic_decline"),
        ("cnon:card-nonce-rejected-cvv", "card_declined", "cvv_failure"),
        ("cnon:card-nonce-insufficient-funds", "insufficient_funds", "insufficient_funds"),
    ],
)
async def test_declined_card_raises_gateway_declined(
    gateway: SquareGateway, sandbox: RunningSandbox, token: str, code: str, decline_code: str
) -> None:
    with pytest.raises(GatewayDeclined) as caught:
        await gateway.authorize(authorize_request(token=token))

    assert (caught.value.code, caught.value.decline_code) == (code, decline_code)
    assert not caught.value.retryable
    assert sandbox.entries() == []


async def test_verification_required_is_requires_action(
    gateway: SquareGateway, sandbox: RunningSandbox
) -> None:
    result = await gateway.authorize(
        authorize_request(token="cnon:card-nonce-requires-verification")
    )

    assert result.status is PaymentStatus.REQUIRES_ACTION
    assert result.gateway_reference
    assert result.message is not None
    assert "CARD_DECLINED_VERIFICATION_REQUIRED" in result.message
    assert result.card is not None and result.card.last4 == "3220"
    assert sandbox.entries() == []


async def test_unknown_nonce_is_an_invalid_request(gateway: SquareGateway) -> None:
    with pytest.raises(GatewayInvalidRequest) as caught:
        await gateway.authorize(authorize_request(token="cnon:nope"))

    assert caught.value.code == "invalid_request"
    assert square_code(caught.value) == "INVALID_CARD_DATA"


async def test_pending_payment_is_processing_then_settles(
    gateway: SquareGateway, sandbox: RunningSandbox
) -> None:
    result = await gateway.authorize(authorize_request(token="cnon:card-nonce-pending"))
    assert (result.status, result.provider_status) == (PaymentStatus.PROCESSING, "PENDING")

    assert sandbox.settle(result.gateway_reference, "completed").status_code == 200

    settled = await gateway.fetch(result.gateway_reference)
    assert (settled.status, settled.captured_amount) == (PaymentStatus.SUCCEEDED, 1000)
    assert sandbox.summary()["pay_1"]["captures"] == 1


async def test_pending_payment_can_settle_as_failed(
    gateway: SquareGateway, sandbox: RunningSandbox
) -> None:
    result = await gateway.authorize(authorize_request(token="cnon:card-nonce-pending"))

    sandbox.settle(result.gateway_reference, "failed", as_json=True)

    failed = await gateway.fetch(result.gateway_reference)
    assert (failed.status, failed.decline_code, failed.error_code) == (
        PaymentStatus.FAILED,
        "generic_decline",
        "card_declined",
    )


# --- capture and cancel -------------------------------------------------------------------


async def test_manual_capture_of_the_full_amount(
    gateway: SquareGateway, sandbox: RunningSandbox
) -> None:
    auth = await authorized(gateway)
    assert [e["kind"] for e in sandbox.entries()] == ["authorization"]

    captured = await gateway.capture(
        CaptureRequest("pay_1", auth.gateway_reference, "pay_1:capture:1")
    )

    assert (captured.status, captured.captured_amount) == (PaymentStatus.SUCCEEDED, 1000)
    assert sandbox.summary()["pay_1"] == {
        "captured": 1000,
        "refunded": 0,
        "captures": 1,
        "refunds": 0,
    }


async def test_capture_retried_after_success_captures_once(
    gateway: SquareGateway, sandbox: RunningSandbox
) -> None:
    # CompletePayment has no idempotency key: the retry finds the payment COMPLETED.
    auth = await authorized(gateway)
    request = CaptureRequest("pay_1", auth.gateway_reference, "pay_1:capture:1")

    await gateway.capture(request)
    again = await gateway.capture(request)

    assert again.status is PaymentStatus.SUCCEEDED
    assert sandbox.summary()["pay_1"]["captures"] == 1


async def test_capture_naming_the_full_amount_is_a_full_capture(gateway: SquareGateway) -> None:
    auth = await authorized(gateway)

    captured = await gateway.capture(
        CaptureRequest("pay_1", auth.gateway_reference, "k", amount=Money(1000, "USD"))
    )

    assert captured.status is PaymentStatus.SUCCEEDED


async def test_partial_capture_is_not_supported(
    gateway: SquareGateway, sandbox: RunningSandbox
) -> None:
    auth = await authorized(gateway)

    with pytest.raises(NotSupported):
        await gateway.capture(
            CaptureRequest("pay_1", auth.gateway_reference, "k", amount=Money(400, "USD"))
        )

    assert (await gateway.fetch(auth.gateway_reference)).status is PaymentStatus.AUTHORIZED
    assert sandbox.summary()["pay_1"]["captures"] == 0


async def test_capture_in_another_currency_is_an_invalid_request(gateway: SquareGateway) -> None:
    auth = await authorized(gateway)

    with pytest.raises(GatewayInvalidRequest):
        await gateway.capture(
            CaptureRequest("pay_1", auth.gateway_reference, "k", amount=Money(1000, "EUR"))
        )


async def test_cancel_voids_the_authorization(
    gateway: SquareGateway, sandbox: RunningSandbox
) -> None:
    auth = await authorized(gateway)
    request = CancelRequest("pay_1", auth.gateway_reference, "pay_1:cancel:1")

    canceled = await gateway.cancel(request)
    again = await gateway.cancel(request)  # a retry after a lost answer

    assert canceled.status is again.status is PaymentStatus.CANCELED
    assert [(e["kind"], e["amount"]) for e in sandbox.entries()] == [
        ("authorization", 1000),
        ("void", 1000),
    ]
    with pytest.raises(GatewayInvalidRequest):
        await gateway.capture(CaptureRequest("pay_1", auth.gateway_reference, "k"))


async def test_completed_payment_cannot_be_canceled(gateway: SquareGateway) -> None:
    paid = await gateway.authorize(authorize_request())

    with pytest.raises(GatewayInvalidRequest, match="COMPLETED, not CANCELED"):
        await gateway.cancel(CancelRequest("pay_1", paid.gateway_reference, "k"))


# --- refunds ------------------------------------------------------------------------------


async def test_square_full_refund(gateway: SquareGateway, sandbox: RunningSandbox) -> None:
    paid = await gateway.authorize(authorize_request())

    refund = await gateway.refund(refund_request(paid.gateway_reference, 1000))

    assert (refund.status, refund.provider_status, refund.amount) == (
        RefundStatus.INITIATED,
        "PENDING",
        1000,
    )
    assert refund.refund_reference.startswith(paid.gateway_reference)
    assert sandbox.summary()["pay_1"]["refunded"] == 1000


async def test_square_partial_refund(gateway: SquareGateway, sandbox: RunningSandbox) -> None:
    paid = await gateway.authorize(authorize_request())

    first = await gateway.refund(refund_request(paid.gateway_reference, 300, refund_id="rf_1"))
    retried = await gateway.refund(refund_request(paid.gateway_reference, 300, refund_id="rf_1"))
    rest = await gateway.refund(refund_request(paid.gateway_reference, 700, refund_id="rf_2"))

    assert retried.refund_reference == first.refund_reference
    assert (first.amount, rest.amount) == (300, 700)
    assert sandbox.summary()["pay_1"] == {
        "captured": 1000,
        "refunded": 1000,
        "captures": 1,
        "refunds": 2,
    }


async def test_refund_above_the_capture_is_refused(
    gateway: SquareGateway, sandbox: RunningSandbox
) -> None:
    paid = await gateway.authorize(authorize_request())

    with pytest.raises(GatewayInvalidRequest) as caught:
        await gateway.refund(refund_request(paid.gateway_reference, 1001))

    assert square_code(caught.value) == "REFUND_AMOUNT_INVALID"
    assert sandbox.summary()["pay_1"]["refunds"] == 0


# --- faults and transport -----------------------------------------------------------------


async def test_error_rate_is_gateway_unavailable(
    gateway: SquareGateway, sandbox: RunningSandbox
) -> None:
    sandbox.faults(error_rate=1.0)

    with pytest.raises(GatewayUnavailable) as caught:
        await gateway.authorize(authorize_request())

    assert type(caught.value) is GatewayUnavailable and caught.value.retryable
    assert sandbox.entries() == []


async def test_outage_is_gateway_unavailable(
    gateway: SquareGateway, sandbox: RunningSandbox
) -> None:
    sandbox.faults(unavailable=True)

    with pytest.raises(GatewayUnavailable) as caught:
        await gateway.fetch("anything")

    assert type(caught.value) is GatewayUnavailable
    assert caught.value.code == "gateway_unavailable"


async def test_slow_answer_is_gateway_timeout(sandbox: RunningSandbox) -> None:
    sandbox.faults(timeout_rate=1.0, timeout_s=2.0)
    gw = SquareGateway(access_token=TOKEN, api_base=sandbox.square_base, timeout_s=1)
    try:
        started = time.monotonic()
        with pytest.raises(GatewayTimeout) as caught:
            await gw.authorize(authorize_request())
    finally:
        await gw.close()

    assert caught.value.code == "gateway_timeout"
    assert time.monotonic() - started < 1.9  # ours, not the sandbox's 504


async def test_answer_lost_after_the_charge_then_retry_charges_once(
    sandbox: RunningSandbox,
) -> None:
    sandbox.faults(timeout_rate=1.0, timeout_s=2.0, timeout_mode="after")
    gw = SquareGateway(access_token=TOKEN, api_base=sandbox.square_base, timeout_s=1)
    try:
        with pytest.raises(GatewayTimeout):
            await gw.authorize(authorize_request())
        assert sandbox.summary()["pay_1"]["captures"] == 1  # the money moved regardless
        sandbox.control.delete("/_sandbox/faults").raise_for_status()

        retried = await gw.authorize(authorize_request())  # the executor's retry, same key
    finally:
        await gw.close()

    assert retried.status is PaymentStatus.SUCCEEDED
    assert sandbox.summary()["pay_1"]["captures"] == 1


async def test_connection_refused_is_gateway_unavailable() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed again before use: nothing listens there
    gw = SquareGateway(access_token=TOKEN, api_base=f"http://127.0.0.1:{port}", timeout_s=1)
    try:
        with pytest.raises(GatewayUnavailable) as caught:
            await gw.authorize(authorize_request())
    finally:
        await gw.close()

    assert type(caught.value) is GatewayUnavailable


async def test_wrong_token_is_an_auth_error(sandbox: RunningSandbox) -> None:
    gw = SquareGateway(access_token="wrong-token", api_base=sandbox.square_base, timeout_s=5)
    try:
        with pytest.raises(GatewayAuthError) as caught:
            await gw.authorize(authorize_request())
    finally:
        await gw.close()

    assert caught.value.code == "authentication_failed"


# --- lookup without a reference (the janitor's) and listing -------------------------------


def now_ms() -> int:
    return int(time.time() * 1000)


def window_around(created_at_ms: int) -> tuple[int, int]:
    """What `domain.janitor.lookup_window` gives a payment just requested."""
    return created_at_ms - LOOKUP_BEFORE_MS, created_at_ms + LOOKUP_AFTER_MS


@pytest.fixture
async def others(sandbox: RunningSandbox) -> AsyncIterator[Callable[[int], Awaitable[None]]]:
    """Make `count` payments in the same Square account that are not ours: alternately
    without a reference and with another payment's."""
    async with httpx.AsyncClient(timeout=5) as http:
        square = AsyncSquare(base_url=sandbox.square_base, token=TOKEN, httpx_client=http)
        made = 0

        async def make(count: int) -> None:
            nonlocal made
            for _ in range(count):
                made += 1
                await square.payments.create(
                    source_id="cnon:card-nonce-ok",
                    idempotency_key=str(uuid.uuid4()),
                    amount_money={"amount": 100 + made, "currency": "USD"},
                    reference_id=f"other_{made}" if made % 2 else None,
                    request_options={"max_retries": 0},
                )

        yield make


def list_requests(gateway: SquareGateway) -> list[httpx.URL]:
    """Every ListPayments request the adapter sends from now on, as sent."""
    sent: list[httpx.URL] = []

    async def record(request: httpx.Request) -> None:
        if request.method == "GET" and request.url.path.endswith("/v2/payments"):
            sent.append(request.url)

    gateway._http.event_hooks["request"].append(record)
    return sent


def as_ms(rfc3339: str | None) -> int:
    assert rfc3339 is not None
    return round(datetime.fromisoformat(rfc3339.replace("Z", "+00:00")).timestamp() * 1000)


async def test_lookup_without_a_reference_finds_our_payment_among_others(
    gateway: SquareGateway, others: Callable[[int], Awaitable[None]]
) -> None:
    """An `unknown` payment's answer was lost: the janitor has only our payment id."""
    requested = now_ms()
    await others(3)
    ours = await gateway.authorize(authorize_request())
    await others(3)

    found = await gateway.lookup(
        LookupRequest(payment_id="pay_1", created_at_ms=requested, window=window_around(requested))
    )

    assert found is not None and found.gateway_reference == ours.gateway_reference
    assert (found.status, found.captured_amount) == (PaymentStatus.SUCCEEDED, 1000)
    # Without a window (an older caller), as before: from shortly before the request on.
    assert await gateway.lookup(LookupRequest(payment_id="pay_1", created_at_ms=requested)) == found
    never = LookupRequest(
        payment_id="pay_2", created_at_ms=requested, window=window_around(requested)
    )
    assert await gateway.lookup(never) is None  # Square never heard of it


async def test_a_lookups_list_requests_carry_a_bounded_end_time(
    gateway: SquareGateway, others: Callable[[int], Awaitable[None]]
) -> None:
    requested = now_ms()
    await gateway.authorize(authorize_request())
    await others(2)
    window = window_around(requested)
    sent = list_requests(gateway)

    assert await gateway.lookup(LookupRequest("pay_2", requested, window=window)) is None

    assert len(sent) == 2  # the likely stretch first, then the rest of the window
    spans = [
        (as_ms(url.params.get("begin_time")), as_ms(url.params.get("end_time"))) for url in sent
    ]
    assert spans == [
        (requested - LIKELY_SKEW_MS, window[1]),
        (window[0], requested - LIKELY_SKEW_MS),
    ]
    assert all(url.params["sort_order"] == "ASC" for url in sent)


async def test_a_lookup_finds_nothing_outside_its_window(
    gateway: SquareGateway, others: Callable[[int], Awaitable[None]]
) -> None:
    """Square honours end_time (exclusive) and begin_time (inclusive): a window that closed
    before our payment was made, or opens after, does not hold it."""
    before = now_ms()
    await asyncio.sleep(0.01)
    await gateway.authorize(authorize_request())
    await asyncio.sleep(0.01)
    after = now_ms()

    closed = LookupRequest("pay_1", before, window=(before - 60_000, before))
    later = LookupRequest("pay_1", after, window=(after, after + 60_000))
    assert await gateway.lookup(closed) is None
    assert await gateway.lookup(later) is None
    assert await gateway.lookup(LookupRequest("pay_1", before, window=(before, after))) is not None


async def test_a_lookup_stops_listing_at_our_payment_and_reads_only_it(
    gateway: SquareGateway,
    others: Callable[[int], Awaitable[None]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """More than a page (100) of other payments after ours: one page is fetched, and only our
    payment goes through the SDK's pydantic dump."""
    requested = now_ms()
    await gateway.authorize(authorize_request())
    await others(120)
    dumped: list[Any] = []

    def dump(model: Any) -> dict[str, Any]:
        dumped.append(model)
        return real_dump(model)

    real_dump = square_adapter._dump
    monkeypatch.setattr(square_adapter, "_dump", dump)
    sent = list_requests(gateway)

    found = await gateway.lookup(LookupRequest("pay_1", requested, window=window_around(requested)))

    assert found is not None and len(sent) == 1
    assert [model.reference_id for model in dumped] == ["pay_1"]
    sent.clear()
    assert (
        await gateway.lookup(LookupRequest("pay_2", requested, window=window_around(requested)))
        is None
    )
    assert len(sent) == 3  # 121 payments in two pages, then the window's earlier part


async def test_charges_since_lists_ours_and_stops_at_until(
    gateway: SquareGateway, others: Callable[[int], Awaitable[None]]
) -> None:
    """`payments audit --against gateways` reads this; `until_ms` is optional."""
    since = now_ms()
    first = await gateway.authorize(authorize_request("pay_1"))
    await others(2)  # one of them carries a reference of another system: listed too
    await asyncio.sleep(0.01)
    between = now_ms()
    await asyncio.sleep(0.01)
    second = await gateway.authorize(authorize_request("pay_2"))

    every = await gateway.charges_since(since - 1_000)
    assert [pid for pid, _ in every] == ["pay_1", "other_1", "pay_2"]
    assert every[0][1].gateway_reference == first.gateway_reference
    assert every[2][1].gateway_reference == second.gateway_reference
    bounded = await gateway.charges_since(since - 1_000, between)
    assert [pid for pid, _ in bounded] == ["pay_1", "other_1"]


# --- webhooks -----------------------------------------------------------------------------


@dataclass
class Receiver:
    """A stand-in ingress: verifies every delivery with `SquareVerifier` and keeps it."""

    verifier: SquareVerifier
    events: list[VerifiedEvent] = field(default_factory=list)
    rejected: list[str] = field(default_factory=list)

    async def receive(self, request: Request) -> JSONResponse:
        headers = {k.lower(): v for k, v in request.headers.items()}
        try:
            event = await self.verifier.verify(headers, await request.body())
        except WebhookRejected as exc:
            self.rejected.append(exc.code)
            return JSONResponse({"error": exc.code}, status_code=400)
        self.events.append(event)
        return JSONResponse({"received": True})

    async def wait_for(
        self, event_type: str, payment_id: str, status: str | None = None, timeout_s: float = 5
    ) -> VerifiedEvent:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for event in self.events:
                if (
                    event.event_type == event_type
                    and event.payment_id == payment_id
                    and (status is None or status.encode() in event.payload)
                ):
                    return event
            await asyncio.sleep(0.02)
        raise AssertionError(f"no verified {event_type} for {payment_id} within {timeout_s}s")


@pytest.fixture(scope="module")
def hooked() -> Iterator[tuple[RunningSandbox, Receiver]]:
    """A sandbox whose Square webhooks go to a verifying receiver on another free port."""
    # The notification URL is known only once the receiver listens; set again just below.
    receiver = Receiver(SquareVerifier(signature_key=SIGNATURE_KEY, notification_url="unset"))
    app = Starlette(routes=[Route("/hooks/square", receiver.receive, methods=["POST"])])
    with serve_app(app) as receiver_base:
        receiver.verifier = SquareVerifier(
            signature_key=SIGNATURE_KEY, notification_url=f"{receiver_base}/hooks/square"
        )
        config = SandboxConfig(
            webhook_base_url=f"{receiver_base}/hooks", square_signature_key=SIGNATURE_KEY
        )
        with running_sandbox(config) as running:
            yield running, receiver


async def test_webhooks_arrive_signed_and_verifiable(
    hooked: tuple[RunningSandbox, Receiver],
) -> None:
    sandbox, receiver = hooked
    gw = SquareGateway(access_token=TOKEN, api_base=sandbox.square_base, timeout_s=5)
    try:
        paid = await gw.authorize(authorize_request("pay_hook", amount=1234))
    finally:
        await gw.close()

    completed = await receiver.wait_for("payment.updated", "pay_hook", '"status":"COMPLETED"')
    created = await receiver.wait_for("payment.created", "pay_hook")

    assert (completed.gateway, completed.object_id) == ("square", paid.gateway_reference)
    assert (completed.payment_id, completed.amount, completed.currency) == (
        "pay_hook",
        1234,
        "USD",
    )
    assert completed.occurred_at_ms > 0
    assert created.event_id != completed.event_id
    assert receiver.rejected == []
    effect = interpret_event(completed.event_type, json.loads(completed.payload))
    assert effect is not None and effect.status is PaymentStatus.SUCCEEDED


async def test_refund_and_dispute_webhooks_carry_our_payment_id(
    hooked: tuple[RunningSandbox, Receiver],
) -> None:
    sandbox, receiver = hooked
    gw = SquareGateway(access_token=TOKEN, api_base=sandbox.square_base, timeout_s=5)
    try:
        paid = await gw.authorize(authorize_request("pay_refund_hook"))
        await gw.refund(
            RefundRequest(
                refund_id="rf_hook",
                payment_id="pay_refund_hook",
                gateway_reference=paid.gateway_reference,
                amount=Money(400, "USD"),
                idempotency_key="pay_refund_hook:refund:1",
            )
        )
    finally:
        await gw.close()
    other = SquareGateway(access_token=TOKEN, api_base=sandbox.square_base, timeout_s=5)
    try:
        disputed = await other.authorize(authorize_request("pay_dispute_hook"))
    finally:
        await other.close()
    assert sandbox.dispute(disputed.gateway_reference).status_code == 200

    refund_done = await receiver.wait_for(
        "refund.updated", "pay_refund_hook", '"status":"COMPLETED"'
    )
    dispute = await receiver.wait_for("dispute.created", "pay_dispute_hook")

    assert (refund_done.payment_id, refund_done.amount) == ("pay_refund_hook", 400)
    assert (dispute.payment_id, dispute.amount) == ("pay_dispute_hook", 1000)
    assert receiver.rejected == []
