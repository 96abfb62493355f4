"""`payments dlq`: list and show what is in dead_letter, and replay it once it can succeed."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
import uuid

import httpx
import pytest
import redis
from aiokafka import AIOKafkaProducer

from payments import dlq
from payments.devstack import DevStack
from streams import names
from streams.indexes import gateway_payment_key
from tests.integration.helpers import (
    api_client,
    payment_body,
    post_payment,
    square_dispute,
    wait_settled,
    wait_status,
)

pytestmark = pytest.mark.stack


@pytest.fixture(scope="module")
def client(stack: DevStack) -> httpx.Client:
    return api_client(stack, timeout=15)


def _letters(stack: DevStack, deadline_s: float, where) -> list[dlq.DeadLetter]:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + deadline_s
    while True:
        found = [
            d for d in asyncio.run(dlq.read_all(stack.endpoints["kafka_bootstrap"])) if where(d)
        ]
        if found or time.monotonic() > deadline:
            return found
        time.sleep(0.3)


def test_list_and_show_a_poison_record(stack: DevStack) -> None:
    marker = uuid.uuid4().hex.encode()

    async def poison() -> None:
        producer = AIOKafkaProducer(bootstrap_servers=stack.endpoints["kafka_bootstrap"])
        await producer.start()
        try:
            await producer.send_and_wait(
                names.PAYMENT_INITIATION, b"\x00garbage" + marker, key=marker
            )
        finally:
            await producer.stop()

    asyncio.run(poison())
    found = _letters(stack, 20, lambda d: d.key == marker)
    assert len(found) == 1
    letter = found[0]
    assert (letter.source_topic, letter.error_type) == (
        names.PAYMENT_INITIATION,
        "SerializationError",
    )
    detail = letter.detail()
    assert detail["value"]["bytes"] == len(b"\x00garbage" + marker)
    # ... and counted in the worker's Prometheus metrics
    metrics = httpx.get(f"{stack.endpoints['worker_url']}/metrics", timeout=10).text
    assert 'payments_dead_letters_total{topic="payment_initiation"}' in metrics

    env = {**os.environ, "PAYMENTS_KAFKA_BOOTSTRAP": stack.endpoints["kafka_bootstrap"]}
    listed = subprocess.run(
        [sys.executable, "-m", "payments.cli", "dlq", "list", "--json"],
        capture_output=True, text=True, timeout=60, env=env,
    )  # fmt: skip
    assert listed.returncode == 0, listed.stderr[-1500:]
    assert letter.ref in {row["ref"] for row in json.loads(listed.stdout)}
    shown = subprocess.run(
        [sys.executable, "-m", "payments.cli", "dlq", "show", letter.ref],
        capture_output=True, text=True, timeout=60, env=env,
    )  # fmt: skip
    assert shown.returncode == 0 and '"SerializationError"' in shown.stdout


def test_an_unroutable_webhook_is_replayed_once_its_payment_is_known(
    stack: DevStack, client: httpx.Client
) -> None:
    pid = post_payment(client, payment_body("cnon:card-nonce-ok", gateway="square")).json()[
        "payment_id"
    ]
    reference = wait_settled(client, pid)["gateway_reference"]
    store = redis.Redis.from_url(stack.endpoints["redis_url"])
    index_key = gateway_payment_key("square", reference)
    time.sleep(0.5)  # the projection has written the index by now; take it away
    assert store.delete(index_key) == 1

    answer = square_dispute(client, reference)
    assert answer.json() == {"received": True, "routed": False}
    parked = _letters(stack, 20, lambda d: d.key == reference.encode())
    assert [d.error_type for d in parked] == ["Unroutable"]

    async def replay() -> list[dlq.Replayed]:
        import redis.asyncio as aioredis

        async_store = aioredis.from_url(stack.endpoints["redis_url"])
        try:
            return await dlq.replay(stack.endpoints["kafka_bootstrap"], parked, redis=async_store)
        finally:
            await async_store.aclose()

    first = asyncio.run(replay())
    assert first[0].skipped and "still no payment of ours" in first[0].skipped
    store.set(index_key, pid)  # the fix: the payment is known again
    second = asyncio.run(replay())
    assert (second[0].topic, second[0].key, second[0].skipped) == (names.GATEWAY_EVENTS, pid, None)
    assert wait_status(client, pid, {"disputed"})["status"] == "disputed"
