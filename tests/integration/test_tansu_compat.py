"""The Tansu workarounds restore what they claim to, against the real embedded broker."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from payments.devstack import DevStack
from streams import tansu_compat

pytestmark = [pytest.mark.stack, pytest.mark.tansu]


@pytest.fixture(scope="module")
def bootstrap(stack: DevStack) -> str:
    bootstrap = stack.endpoints["kafka_bootstrap"]
    if not asyncio.run(tansu_compat.is_tansu(bootstrap)):
        pytest.skip("the broker is not Tansu; the compatibility shim is not used")
    tansu_compat.apply()
    return bootstrap


async def _topic_with_records(bootstrap: str, n: int) -> str:
    topic = f"compat-{uuid.uuid4().hex[:8]}"
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    await admin.create_topics([NewTopic(topic, 1, 1)])
    await admin.close()
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=50, enable_idempotence=True)
    await producer.start()
    try:
        # One linger window: the records travel as one multi-record batch.
        futures = [await producer.send(topic, b"v", key=b"k", partition=0) for _ in range(n)]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()
    return topic


def test_end_offsets_count_every_record(bootstrap: str) -> None:
    async def run() -> tuple[int, int]:
        topic = await _topic_with_records(bootstrap, 16)
        tp = TopicPartition(topic, 0)
        consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap)
        await consumer.start()
        try:
            raw = await tansu_compat._original_end_offsets(consumer._fetcher, [tp], 5000)
            fixed = await consumer.end_offsets([tp])
        finally:
            await consumer.stop()
        return raw[tp], fixed[tp]

    raw, fixed = asyncio.run(run())
    assert raw < 16, "Tansu's ListOffsets answer was expected to be short"
    assert fixed == 16


def test_idempotent_producer_starts_with_init_producer_id_v3(bootstrap: str) -> None:
    async def run() -> int:
        producer = AIOKafkaProducer(
            bootstrap_servers=bootstrap, enable_idempotence=True, acks="all"
        )
        await producer.start()
        try:
            meta = await producer.send_and_wait("payment_status-probe", b"x")
            return meta.offset
        finally:
            await producer.stop()

    assert asyncio.run(run()) >= 0


def test_consumer_fetch_wait_is_clamped(bootstrap: str) -> None:
    async def run() -> int:
        consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, fetch_max_wait_ms=1500)
        return int(consumer._fetch_max_wait_ms)

    assert asyncio.run(run()) <= tansu_compat.FETCH_MAX_WAIT_MS
