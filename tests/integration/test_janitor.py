"""The janitor resolves what gateways left unanswered, by asking them.

Webhooks are switched off here, so nothing but the janitor can move these payments. Each
gateway's answer is lost (a timeout after the work: charged, the caller cannot know) or never
sent (a timeout before it: not charged); the payment goes `unknown`, and the janitor's
status check finds the charge, or proves there is none, and says so in `payment_status` with
source `janitor`. The sandbox ledger shows every payment charged at most once."""

from __future__ import annotations

import asyncio
import shutil
import signal
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from payments.devstack import DevStack
from schemas import decode
from streams import names
from tests.conftest import running_stack
from tests.integration.helpers import (
    api_client,
    payment_body,
    post_payment,
    scan_topic,
    wait_status,
)

pytestmark = pytest.mark.stack
TOKENS = {"stripe": "pm_card_visa", "square": "cnon:card-nonce-ok", "paypal": "paypal_vault_ok"}
JANITOR_ENV = {
    "PAYMENTS_JANITOR_SCHEDULE_S": "1,2,4,8",
    "PAYMENTS_JANITOR_STALE_AFTER_S": "2",
    "PAYMENTS_JANITOR_NOT_CHARGED_AFTER_S": "2",
    "PAYMENTS_JANITOR_INTERVAL_S": "0.5",
    "PAYMENTS_GATEWAY_TIMEOUT_S": "1",
}


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, external_services: Any) -> Iterator[DevStack]:
    with running_stack(tmp_path_factory.mktemp("janitor"), external_services, JANITOR_ENV) as s:
        yield s


@pytest.fixture
def sandbox(stack: DevStack) -> Iterator[httpx.Client]:
    client = httpx.Client(base_url=stack.endpoints["sandbox_url"], timeout=15)
    client.post("/_sandbox/webhooks/policy", json={"enabled": False}).raise_for_status()
    try:
        yield client
    finally:
        client.delete("/_sandbox/faults").raise_for_status()
        client.post("/_sandbox/webhooks/policy", json={"enabled": True}).raise_for_status()


# Just over the adapters' 1 s timeout: the sandbox still works through a request the caller
# gave up on (a real gateway may too), so it must be done with all of them before the faults
# are cleared, or a late one would charge.
FAULT_TIMEOUT_S = 1.2


def _lose_answers(sandbox: httpx.Client, gateway: str, mode: str) -> None:
    fault = {"timeout_rate": 1.0, "timeout_mode": mode, "timeout_s": FAULT_TIMEOUT_S}
    sandbox.post(f"/_sandbox/faults/{gateway}", json=fault).raise_for_status()


def _trail(stack: DevStack, payment_id: str) -> list[tuple[str | None, str, str]]:
    """The payment's `payment_status` records: (previous status, status, source), in seq order."""
    records = asyncio.run(scan_topic(stack.endpoints["kafka_bootstrap"], names.PAYMENT_STATUS))
    mine = [
        decode("payment_status", rec.value, dict(rec.headers or ()))
        for rec in records
        if rec.key == payment_id.encode()
    ]
    return [
        (r["previous_status"], r["status"], r["source"])
        for r in sorted(mine, key=lambda r: r["seq"])
    ]


def _unknown_payment(stack: DevStack, sandbox: httpx.Client, gateway: str, mode: str) -> str:
    """A payment left `unknown`. "after": the gateway charged and its answer was lost, and the
    executor's retries (which would get the stored answer) find the gateway down. "before":
    no attempt ever reached the gateway."""
    client = api_client(stack, timeout=15)
    body = payment_body(TOKENS[gateway], gateway=gateway)
    # A first payment that goes through: the adapter holds its OAuth token (PayPal) and the
    # circuit is closed before the faults start.
    warm = post_payment(client, payment_body(TOKENS[gateway], gateway=gateway)).json()
    wait_status(client, warm["payment_id"], {"succeeded"}, timeout_s=60)
    _lose_answers(sandbox, gateway, mode)
    pid = str(post_payment(client, body).json()["payment_id"])
    if mode == "after":
        deadline = time.monotonic() + 10
        while pid not in sandbox.get("/_sandbox/ledger/summary").json():
            assert time.monotonic() < deadline, "the gateway never charged"
            time.sleep(0.02)
        down = {"unavailable": True}
        sandbox.post(f"/_sandbox/faults/{gateway}", json=down).raise_for_status()
    wait_status(client, pid, {"unknown"}, timeout_s=60)
    time.sleep(2 * FAULT_TIMEOUT_S)  # the last attempt's request, still held by the sandbox
    sandbox.delete("/_sandbox/faults").raise_for_status()
    return pid


@pytest.mark.parametrize("gateway", ["stripe", "square", "paypal"])
def test_a_charge_whose_answer_was_lost_is_found_by_the_janitor(
    stack: DevStack, sandbox: httpx.Client, gateway: str
) -> None:
    pid = _unknown_payment(stack, sandbox, gateway, "after")
    client = api_client(stack, timeout=15)
    doc = wait_status(client, pid, {"succeeded", "failed"}, timeout_s=60)
    assert doc["status"] == "succeeded" and doc["captured_amount"] == doc["amount"]
    assert doc["gateway_reference"]
    trail = _trail(stack, pid)
    assert trail[-1] == ("unknown", "succeeded", "janitor"), trail
    assert ("pending", "unknown", "gateway") in trail
    ledger = sandbox.get("/_sandbox/ledger/summary").json()
    assert ledger[pid]["captures"] == 1


@pytest.mark.parametrize("gateway", ["stripe", "square"])
def test_a_call_that_never_reached_the_gateway_fails_as_not_charged(
    stack: DevStack, sandbox: httpx.Client, gateway: str
) -> None:
    pid = _unknown_payment(stack, sandbox, gateway, "before")
    client = api_client(stack, timeout=15)
    doc = wait_status(client, pid, {"succeeded", "failed"}, timeout_s=60)
    assert (doc["status"], doc["error_code"]) == ("failed", "gateway_not_charged")
    trail = _trail(stack, pid)
    assert trail[-1] == ("unknown", "failed", "janitor"), trail
    assert pid not in sandbox.get("/_sandbox/ledger/summary").json()


def test_paypal_without_a_reference_is_asked_by_replaying_its_request_id(
    stack: DevStack, sandbox: httpx.Client
) -> None:
    """PayPal has no search by our id: the janitor replays the create-order with the same
    PayPal-Request-Id, which completes the request exactly once."""
    pid = _unknown_payment(stack, sandbox, "paypal", "before")
    client = api_client(stack, timeout=15)
    doc = wait_status(client, pid, {"succeeded", "failed"}, timeout_s=60)
    assert doc["status"] == "succeeded"
    assert sandbox.get("/_sandbox/ledger/summary").json()[pid]["captures"] == 1


def test_a_processing_payment_whose_webhook_never_comes_is_polled(
    stack: DevStack, sandbox: httpx.Client
) -> None:
    client = api_client(stack, timeout=15)
    pid = post_payment(client, payment_body("pm_card_processing")).json()["payment_id"]
    doc = wait_status(client, pid, {"processing"}, timeout_s=30)
    # Polled once it is stale (2 s here): still processing, so nothing changes ...
    deadline = time.monotonic() + 30
    while _metric(stack, 'payments_janitor_checks_total{gateway="stripe",source="poll"') < 1:
        assert time.monotonic() < deadline, "the stale payment was never polled"
        time.sleep(0.2)
    assert wait_status(client, pid, {"processing"})["seq"] == doc["seq"]
    # ... until the gateway settles it, which the next poll finds.
    settle = f"/_sandbox/stripe/payment_intents/{doc['gateway_reference']}/settle"
    sandbox.post(settle, json={"outcome": "succeeded"}).raise_for_status()
    assert wait_status(client, pid, {"succeeded"}, timeout_s=30)["status"] == "succeeded"
    trail = _trail(stack, pid)
    assert trail[-1] == ("processing", "succeeded", "poll"), trail


def test_the_schedule_outlives_a_worker_killed_with_its_store(
    stack: DevStack, sandbox: httpx.Client
) -> None:
    """The due index is held in memory and loaded from the `janitor` table's changelog: a
    worker killed with its RocksDB store wiped still checks what was scheduled before."""
    client = api_client(stack, timeout=15)
    pid = post_payment(client, payment_body("pm_card_processing")).json()["payment_id"]
    doc = wait_status(client, pid, {"processing"}, timeout_s=30)
    worker = stack.child("worker")
    worker.stop(sig=signal.SIGKILL)
    shutil.rmtree(stack.data_dir, ignore_errors=True)
    # Settled while no worker runs, with webhooks off: only a status check can find it.
    settle = f"/_sandbox/stripe/payment_intents/{doc['gateway_reference']}/settle"
    sandbox.post(settle, json={"outcome": "succeeded"}).raise_for_status()
    worker.start()
    worker.wait_ready()
    assert wait_status(client, pid, {"succeeded"}, timeout_s=60)["status"] == "succeeded"
    assert _trail(stack, pid)[-1] == ("processing", "succeeded", "poll")


def _metric(stack: DevStack, prefix: str) -> float:
    text = httpx.get(f"{stack.endpoints['worker_url']}/metrics", timeout=10).text
    return sum(
        float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(prefix)
    )
