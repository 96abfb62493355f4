"""Every gateway through the whole pipeline: HTTP -> Kafka -> worker -> official SDK -> sandbox,
and back through signed webhooks for outcomes that only arrive later."""

from __future__ import annotations

import asyncio
import io
import time
from collections.abc import Callable
from dataclasses import dataclass

import fastavro
import httpx
import pytest

from domain.cards import text_has_pan
from payments.devstack import DevStack
from streams import names
from tests.integration.helpers import (
    api_client,
    avro_schema,
    payment_body,
    post_payment,
    scan_topic,
    wait_settled,
    wait_status,
)

pytestmark = pytest.mark.stack


@dataclass(frozen=True)
class Flow:
    ok: str
    declined: str
    decline_code: str
    pending: str
    settle: Callable[[httpx.Client, dict], httpx.Response]  # sandbox, payment doc -> response


def _square_settle(sandbox: httpx.Client, doc: dict) -> httpx.Response:
    ref = doc["gateway_reference"]
    return sandbox.post(f"/_sandbox/square/payments/{ref}/settle", json={"outcome": "completed"})


def _paypal_settle(sandbox: httpx.Client, doc: dict) -> httpx.Response:
    ref = doc["gateway_reference"]  # the capture id
    return sandbox.post(f"/_sandbox/paypal/captures/{ref}/settle", json={"outcome": "completed"})


def _stripe_settle(sandbox: httpx.Client, doc: dict) -> httpx.Response:
    ref = doc["gateway_reference"]
    return sandbox.post(
        f"/_sandbox/stripe/payment_intents/{ref}/settle", json={"outcome": "succeeded"}
    )


FLOWS = {
    "stripe": Flow(
        "pm_card_visa", "pm_card_chargeDeclined", "generic_decline", "pm_card_processing",
        _stripe_settle,
    ),
    "paypal": Flow(
        "paypal_vault_ok", "paypal_vault_declined", "instrument_declined",
        "paypal_vault_pending", _paypal_settle,
    ),
    "square": Flow(
        "cnon:card-nonce-ok", "cnon:card-nonce-declined", "generic_decline",
        "cnon:card-nonce-pending", _square_settle,
    ),
}  # fmt: skip


@pytest.fixture(scope="module")
def client(stack: DevStack) -> httpx.Client:
    return api_client(stack, timeout=15)


@pytest.fixture(scope="module")
def sandbox(stack: DevStack) -> httpx.Client:
    return httpx.Client(base_url=stack.endpoints["sandbox_url"], timeout=15)


def _strings(value: object) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for k, v in value.items() for s in (*_strings(k), *_strings(v))]
    if isinstance(value, list):
        return [s for v in value for s in _strings(v)]
    return []


def _row_with_card(stack: DevStack, pid: str, timeout_s: float = 10) -> dict:
    """The worker's row once the gateway's own answer (which carries the card) is in: a
    webhook may have settled the payment first."""
    deadline = time.monotonic() + timeout_s
    while True:
        row = httpx.get(f"{stack.endpoints['worker_url']}/tables/payments/{pid}/").json()
        if row.get("card") or time.monotonic() > deadline:
            return row
        time.sleep(0.05)


@pytest.mark.parametrize("gateway", sorted(FLOWS))
def test_success_is_charged_exactly_once(gateway: str, stack: DevStack, client, sandbox) -> None:
    flow = FLOWS[gateway]
    r = post_payment(client, payment_body(flow.ok, gateway=gateway, amount=1234, currency="EUR"))
    pid = r.json()["payment_id"]
    doc = wait_settled(client, pid)
    assert doc["status"] == "succeeded" and doc["captured_amount"] == 1234
    # Only brand, last4 and expiry are kept: in the worker's table, and never a number.
    row = _row_with_card(stack, pid)
    assert set(row["card"]) == {"brand", "last4", "exp_month", "exp_year"}
    assert len(row["card"]["last4"]) == 4
    # Strings only: 13-digit millisecond timestamps pass Luhn one time in ten.
    assert not any(text_has_pan(s) for s in _strings(row)) and not any(
        text_has_pan(s) for s in _strings(doc)
    )
    summary = sandbox.get("/_sandbox/ledger/summary").json()[pid]
    assert summary["captures"] == 1 and summary["captured"] == 1234


@pytest.mark.parametrize("gateway", sorted(FLOWS))
def test_decline_ends_failed_with_the_decline_code(gateway: str, client, sandbox) -> None:
    flow = FLOWS[gateway]
    pid = post_payment(client, payment_body(flow.declined, gateway=gateway)).json()["payment_id"]
    doc = wait_settled(client, pid)
    assert (doc["status"], doc["error_code"]) == ("failed", "card_declined")
    assert doc["decline_code"] == flow.decline_code
    assert sandbox.get("/_sandbox/ledger/summary").json().get(pid, {}).get("captured", 0) == 0


@pytest.mark.parametrize("gateway", sorted(FLOWS))
def test_asynchronous_outcome_settles_by_signed_webhook(gateway: str, client, sandbox) -> None:
    flow = FLOWS[gateway]
    pid = post_payment(client, payment_body(flow.pending, gateway=gateway)).json()["payment_id"]
    doc = wait_status(client, pid, {"processing"})
    assert flow.settle(sandbox, doc).status_code == 200
    done = wait_status(client, pid, {"succeeded"})
    assert done["captured_amount"] == 1000
    assert sandbox.get("/_sandbox/ledger/summary").json()[pid]["captures"] == 1


def test_every_attempt_is_an_analytics_record(stack: DevStack, client) -> None:
    pid = post_payment(client, payment_body("pm_card_chargeDeclined")).json()["payment_id"]
    wait_settled(client, pid)
    schema = avro_schema("payment_analytics")
    records = asyncio.run(scan_topic(stack.endpoints["kafka_bootstrap"], names.PAYMENT_ANALYTICS))
    mine = [
        fastavro.schemaless_reader(io.BytesIO(r.value), schema, schema)
        for r in records
        if r.key == pid.encode()
    ]
    assert mine, "no analytics record for the attempt"
    attempt = mine[0]
    assert (attempt["gateway"], attempt["operation"], attempt["outcome"]) == (
        "stripe",
        "authorize",
        "failed",
    )
    assert attempt["decline_code"] == "generic_decline" and attempt["latency_ms"] >= 0
    assert (attempt["amount"], attempt["currency"]) == (1000, "USD")


def test_paypal_3ds_is_captured_once_the_buyer_approves(client, sandbox) -> None:
    r = post_payment(client, payment_body("paypal_vault_3ds", gateway="paypal"))
    pid = r.json()["payment_id"]
    doc = wait_status(client, pid, {"requires_action"})
    order = doc["gateway_reference"]
    assert sandbox.post(f"/_sandbox/paypal/orders/{order}/approve").status_code == 200
    done = wait_status(client, pid, {"succeeded"})
    assert done["captured_amount"] == 1000
    assert sandbox.get("/_sandbox/ledger/summary").json()[pid]["captures"] == 1
