"""The `idempotency` and `seen_events` tables on a real worker: what they hold, and a
redelivered gateway command answered from them instead of a second gateway call."""

from __future__ import annotations

import asyncio
import re
import time
from typing import Any

import httpx
import pytest
from aiokafka import AIOKafkaProducer

from payments.devstack import DevStack
from tests.integration.helpers import (
    api_client,
    payment_body,
    post_payment,
    scan_topic,
    wait_status,
)

pytestmark = pytest.mark.stack


@pytest.fixture(scope="module")
def client(stack: DevStack) -> httpx.Client:
    return api_client(stack, timeout=15)


def _entries(stack: DevStack, table: str, pid: str) -> dict[str, Any]:
    url = f"{stack.endpoints['worker_url']}/tables/{table}/entries/"
    r = httpx.get(url, params={"payment_id": pid}, timeout=30)
    assert r.status_code == 200, r.text
    entries: dict[str, Any] = r.json()
    return entries


def _skipped(stack: DevStack) -> float:
    text = httpx.get(f"{stack.endpoints['worker_url']}/metrics", timeout=10).text
    found = re.search(r'payments_gateway_calls_skipped_total\{gateway="stripe"\} (\S+)', text)
    return float(found.group(1)) if found else 0.0


def test_requests_gateway_calls_and_webhook_events_are_remembered(
    stack: DevStack, client: httpx.Client
) -> None:
    sandbox = httpx.Client(base_url=stack.endpoints["sandbox_url"], timeout=15)
    sandbox.post("/_sandbox/webhooks/policy", json={"duplicates": 3, "reorder_window_ms": 200})
    try:
        pid = post_payment(client, payment_body("pm_card_processing")).json()["payment_id"]
        doc = wait_status(client, pid, {"processing"})
        sandbox.post(
            f"/_sandbox/stripe/payment_intents/{doc['gateway_reference']}/settle",
            json={"outcome": "succeeded"},
        )
        wait_status(client, pid, {"succeeded"})
        time.sleep(1.5)  # every duplicate delivered
    finally:
        sandbox.post("/_sandbox/webhooks/policy", json={"duplicates": 1, "reorder_window_ms": 0})
        sandbox.close()

    idem = _entries(stack, "idempotency", pid)
    assert idem[f"payment:{pid}"]["outcome"] == "applied"
    assert idem[f"call:{pid}:authorize:1"]["result"]["status"] == "processing"
    day_ms = 24 * 3600 * 1000
    assert idem[f"payment:{pid}"]["exp"] >= time.time() * 1000 + day_ms - 60_000

    # The sweep's view: the expiry index, read from the partition's RocksDB database.
    url = f"{stack.endpoints['worker_url']}/tables/idempotency/expiring/"
    indexed: dict[str, int] = {}
    for partition in range(8):
        soonest = httpx.get(url, params={"partition": partition, "limit": 100_000}).json()
        assert soonest == sorted(soonest)  # soonest first: a sweep stops at the first live one
        indexed |= {key: exp for exp, key in soonest}
    assert indexed[f"payment:{pid}"] == idem[f"payment:{pid}"]["exp"]
    assert indexed[f"call:{pid}:authorize:1"] == idem[f"call:{pid}:authorize:1"]["exp"]

    seen = _entries(stack, "seen_events", pid)
    succeeded = [e for e in seen.values() if e["event_type"] == "payment_intent.succeeded"]
    assert len(succeeded) == 1 and succeeded[0]["outcome"] == "applied"
    assert all(e["exp"] >= time.time() * 1000 + 3 * day_ms - 60_000 for e in seen.values())


def test_a_redelivered_command_is_answered_without_calling_the_gateway(
    stack: DevStack, client: httpx.Client
) -> None:
    pid = post_payment(client, payment_body("pm_card_visa")).json()["payment_id"]
    wait_status(client, pid, {"succeeded"})
    bootstrap = stack.endpoints["kafka_bootstrap"]
    commands = [
        r for r in asyncio.run(scan_topic(bootstrap, "gateway_commands")) if r.key == pid.encode()
    ]
    assert len(commands) == 1
    before = _skipped(stack)

    async def redeliver() -> None:
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
        await producer.start()
        try:
            record = commands[0]
            await producer.send_and_wait(
                "gateway_commands", record.value, key=record.key, headers=list(record.headers)
            )
        finally:
            await producer.stop()

    asyncio.run(redeliver())
    deadline = time.monotonic() + 15
    while _skipped(stack) < before + 1:
        assert time.monotonic() < deadline, "the redelivered command was not recognised"
        time.sleep(0.1)
    ledger = httpx.get(f"{stack.endpoints['sandbox_url']}/_sandbox/ledger/summary").json()[pid]
    assert ledger["captures"] == 1
    doc = client.get(f"/v1/payments/{pid}").json()
    assert (doc["status"], doc["seq"]) == ("succeeded", 2)
