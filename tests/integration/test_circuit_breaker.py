"""A gateway that is down opens its circuit: later payments are refused before any call
(failed, `gateway_circuit_open`, provably not charged), the state shows in metrics and
/readyz, and the circuit closes again once the gateway answers."""

from __future__ import annotations

import time

import httpx
import pytest

from payments.devstack import DevStack
from tests.integration.helpers import api_client, payment_body, post_payment, wait_status

pytestmark = pytest.mark.stack
SQUARE_OK = "cnon:card-nonce-ok"


def _circuit(stack: DevStack) -> str:
    ready = httpx.get(f"{stack.endpoints['worker_url']}/readyz/", timeout=10).json()
    return str(ready["circuits"]["square"])


def test_an_unavailable_gateway_opens_and_then_closes_its_circuit(stack: DevStack) -> None:
    client = api_client(stack, timeout=15)
    sandbox = httpx.Client(base_url=stack.endpoints["sandbox_url"], timeout=15)
    assert _circuit(stack) == "closed"
    sandbox.post("/_sandbox/faults/square", json={"unavailable": True}).raise_for_status()
    try:
        # Two commands of four attempts each: more than the five failures that open it.
        first = [
            post_payment(client, payment_body(SQUARE_OK, gateway="square")).json()["payment_id"]
            for _ in range(2)
        ]
        for pid in first:
            assert wait_status(client, pid, {"unknown"}, timeout_s=60)["status"] == "unknown"
        assert _circuit(stack) == "open"
        metrics = httpx.get(f"{stack.endpoints['worker_url']}/metrics", timeout=10).text
        assert 'payments_gateway_circuit_state{gateway="square"} 2.0' in metrics

        refused = post_payment(client, payment_body(SQUARE_OK, gateway="square")).json()
        doc = wait_status(client, refused["payment_id"], {"failed"}, timeout_s=30)
        assert doc["error_code"] == "gateway_circuit_open"
        ledger = sandbox.get("/_sandbox/ledger/summary").json()
        assert all(pid not in ledger for pid in [*first, refused["payment_id"]])
    finally:
        sandbox.delete("/_sandbox/faults")
    # Once the reset time has passed a probe goes out, succeeds, and the circuit closes.
    deadline = time.monotonic() + 60
    while True:
        pid = post_payment(client, payment_body(SQUARE_OK, gateway="square")).json()["payment_id"]
        doc = wait_status(client, pid, {"succeeded", "failed"}, timeout_s=30)
        if doc["status"] == "succeeded":
            break
        assert time.monotonic() < deadline, "the circuit never closed"
        time.sleep(2)
    assert _circuit(stack) == "closed"
