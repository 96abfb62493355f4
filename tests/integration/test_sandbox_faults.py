"""Fault injection, seen through the real Stripe adapter: what the executor will have to face."""

from __future__ import annotations

import time
import uuid

import pytest

from domain.errors import GatewayTimeout, GatewayUnavailable
from domain.money import Money
from domain.payment import CaptureMode
from domain.status import PaymentStatus
from gateways.base import AuthorizeRequest
from gateways.sandbox.app import SandboxConfig
from gateways.stripe import StripeGateway
from tests.integration.test_sandbox_stripe import RunningSandbox, serve


@pytest.fixture(scope="module")
def sandbox():
    with serve(SandboxConfig()) as running:
        yield running


@pytest.fixture(autouse=True)
def _clear(sandbox: RunningSandbox):
    yield
    sandbox.control.delete("/_sandbox/faults")


def authorize_request(key: str | None = None) -> AuthorizeRequest:
    pid = f"pay_{uuid.uuid4().hex[:12]}"
    return AuthorizeRequest(
        payment_id=pid,
        amount=Money(500, "USD"),
        capture=CaptureMode.AUTOMATIC,
        method_token="pm_card_visa",
        idempotency_key=key or f"{pid}:authorize:1",
        order_id="o",
        user_id="u",
    )


def set_faults(sandbox: RunningSandbox, **cfg: object) -> None:
    sandbox.control.post("/_sandbox/faults/stripe", json=cfg).raise_for_status()


async def test_error_rate_one_gives_gateway_unavailable(sandbox: RunningSandbox) -> None:
    set_faults(sandbox, error_rate=1.0)
    gw = StripeGateway(api_key="sk_test_x", api_base=sandbox.stripe_base, timeout_s=5)
    try:
        with pytest.raises(GatewayUnavailable):
            await gw.authorize(authorize_request())
    finally:
        await gw.close()


async def test_unavailable_switch_refuses_every_call_and_charges_nothing(
    sandbox: RunningSandbox,
) -> None:
    set_faults(sandbox, unavailable=True)
    gw = StripeGateway(api_key="sk_test_x", api_base=sandbox.stripe_base, timeout_s=5)
    req = authorize_request()
    try:
        with pytest.raises(GatewayUnavailable):
            await gw.authorize(req)
    finally:
        await gw.close()
    assert req.payment_id not in sandbox.summary()


async def test_fixed_latency_is_applied(sandbox: RunningSandbox) -> None:
    set_faults(sandbox, latency_ms=300)
    gw = StripeGateway(api_key="sk_test_x", api_base=sandbox.stripe_base, timeout_s=5)
    try:
        started = time.monotonic()
        result = await gw.authorize(authorize_request())
        assert time.monotonic() - started >= 0.3
        assert result.status is PaymentStatus.SUCCEEDED
    finally:
        await gw.close()


async def test_timeout_after_the_charge_is_ambiguous_and_a_retry_replays_it(
    sandbox: RunningSandbox,
) -> None:
    """The worst case: money moved, the answer was lost. The same key must not charge again."""
    set_faults(sandbox, timeout_rate=1.0, timeout_mode="after", timeout_s=2)
    gw = StripeGateway(api_key="sk_test_x", api_base=sandbox.stripe_base, timeout_s=1)
    req = authorize_request()
    try:
        with pytest.raises(GatewayTimeout):
            await gw.authorize(req)
        assert sandbox.summary()[req.payment_id]["captures"] == 1
        set_faults(sandbox, timeout_rate=0.0)
        again = await gw.authorize(req)  # same idempotency key
        assert again.status is PaymentStatus.SUCCEEDED
    finally:
        await gw.close()
    assert sandbox.summary()[req.payment_id]["captures"] == 1


async def test_timeout_before_the_charge_charges_nothing(sandbox: RunningSandbox) -> None:
    set_faults(sandbox, timeout_rate=1.0, timeout_mode="before", timeout_s=2)
    gw = StripeGateway(api_key="sk_test_x", api_base=sandbox.stripe_base, timeout_s=1)
    req = authorize_request()
    try:
        with pytest.raises(GatewayTimeout):
            await gw.authorize(req)
    finally:
        await gw.close()
    assert req.payment_id not in sandbox.summary()


def test_bad_fault_settings_are_refused(sandbox: RunningSandbox) -> None:
    r = sandbox.control.post("/_sandbox/faults/stripe", json={"error_rate": 2})
    assert r.status_code == 400
    r = sandbox.control.post("/_sandbox/faults/stripe", json={"nonsense": 1})
    assert r.status_code == 400
    assert sandbox.control.post("/_sandbox/faults/bitpay", json={}).status_code == 404
