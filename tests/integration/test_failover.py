"""Routing and failover on the real stack: a payment that names no gateway goes where the
routing rules say; when that gateway's circuit is open the call is refused before anything
is sent, and the payment moves to the next gateway. A payment that named its gateway, or
whose first gateway may have charged, never moves."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from payments.devstack import DevStack
from tests.conftest import running_stack
from tests.integration.helpers import api_client, payment_body, post_payment, wait_status

pytestmark = pytest.mark.stack
TOKENS = {"square": "cnon:card-nonce-ok", "stripe": "pm_card_visa"}
ENV = {
    "PAYMENTS_ROUTING_RULES": "JPY:card=stripe;*:card=square>stripe",
    "PAYMENTS_BREAKER_FAILURES": "2",
    "PAYMENTS_BREAKER_RESET_S": "30",
    "PAYMENTS_JANITOR_SCHEDULE_S": "1,2,4,8",
    "PAYMENTS_JANITOR_NOT_CHARGED_AFTER_S": "2",
}


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, external_services: Any) -> Iterator[DevStack]:
    with running_stack(tmp_path_factory.mktemp("failover"), external_services, ENV) as s:
        yield s


def routed_body(**over: Any) -> dict[str, Any]:
    body = payment_body(TOKENS["square"])
    del body["gateway"]
    body["payment_method"] = {"type": "card", "gateway_tokens": dict(TOKENS)}
    return {**body, **over}


def _charges(sandbox: httpx.Client, payment_id: str) -> list[tuple[str, str]]:
    entries = sandbox.get("/_sandbox/ledger", params={"payment_id": payment_id}).json()["entries"]
    return [(e["gateway"], e["kind"]) for e in entries]


def test_routing_rules_choose_the_gateway(stack: DevStack) -> None:
    client = api_client(stack, timeout=15)
    usd = post_payment(client, routed_body()).json()["payment_id"]
    assert wait_status(client, usd, {"succeeded"})["gateway"] == "square"
    jpy = post_payment(client, routed_body(currency="JPY")).json()["payment_id"]
    assert wait_status(client, jpy, {"succeeded"})["gateway"] == "stripe"
    # No token for the only gateway the JPY rule names: refused at the edge, nothing accepted.
    body = routed_body(currency="JPY")
    body["payment_method"] = {"type": "card", "gateway_tokens": {"square": TOKENS["square"]}}
    r = post_payment(client, body)
    assert r.status_code == 422 and r.json()["error"]["code"] == "no_route"


def test_an_open_circuit_fails_over_to_the_next_gateway_and_nothing_else_does(
    stack: DevStack,
) -> None:
    client = api_client(stack, timeout=15)
    sandbox = httpx.Client(base_url=stack.endpoints["sandbox_url"], timeout=15)
    sandbox.post("/_sandbox/faults/square", json={"unavailable": True}).raise_for_status()
    try:
        # Square answers 503 until the circuit opens: this payment's attempts were sent, so it
        # stays on Square, `unknown`, for the janitor; never moved to Stripe.
        tripped = post_payment(client, routed_body()).json()["payment_id"]
        doc = wait_status(client, tripped, {"unknown"}, timeout_s=60)
        assert doc["gateway"] == "square"

        moved = post_payment(client, routed_body()).json()["payment_id"]
        doc = wait_status(client, moved, {"succeeded", "failed"}, timeout_s=60)
        assert (doc["status"], doc["gateway"]) == ("succeeded", "stripe")
        assert _charges(sandbox, moved) == [("stripe", "capture")]

        named = post_payment(client, payment_body(TOKENS["square"], gateway="square")).json()
        doc = wait_status(client, named["payment_id"], {"failed"}, timeout_s=60)
        assert (doc["gateway"], doc["error_code"]) == ("square", "gateway_circuit_open")
    finally:
        sandbox.delete("/_sandbox/faults").raise_for_status()
    # Square never charged the first one; once it answers again the janitor proves it.
    doc = wait_status(client, tripped, {"failed", "succeeded"}, timeout_s=90)
    assert (doc["status"], doc["error_code"]) == ("failed", "gateway_not_charged")
    assert _charges(sandbox, tripped) == []
