"""Read a whole topic once, from the beginning to the end it had when the read started,
without joining a consumer group: for operator commands (dlq, audit), not for the pipeline."""

from __future__ import annotations

import uuid
from typing import Any

from aiokafka import AIOKafkaConsumer
from aiokafka.structs import TopicPartition


async def partitions_of(consumer: AIOKafkaConsumer, *topics: str) -> list[TopicPartition]:
    """Every partition of `topics`, from a Metadata answer for all topics.

    `consumer.partitions_for_topic` reads the client's cached metadata, and on Apache Kafka
    that cache holds only the topics the consumer subscribed to: none, for a reader that
    assigns partitions itself, so it answered None and such a reader read nothing. Tansu
    answers every topic to a Metadata request for none, which hid this.
    """
    cluster = await consumer._client.fetch_all_metadata()  # what consumer.topics() asks
    return [
        TopicPartition(topic, p)
        for topic in topics
        for p in sorted(cluster.partitions_for_topic(topic) or ())
    ]


async def read_topic(bootstrap: str, topic: str, *, idle_ms: int = 2000) -> list[Any]:
    """Every record of `topic` (aiokafka `ConsumerRecord`s), in offset order per partition."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        group_id=None,
        enable_auto_commit=False,
        fetch_max_wait_ms=10,
        client_id=f"payments-scan-{uuid.uuid4().hex[:6]}",
    )
    await consumer.start()
    records: list[Any] = []
    try:
        tps = await partitions_of(consumer, topic)
        if not tps:
            return []
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
        pending = {tp for tp in tps if ends[tp] > 0}
        while pending:
            batch = await consumer.getmany(*pending, timeout_ms=idle_ms)
            if not batch:
                break
            for tp, part in batch.items():
                records += part
                if part and part[-1].offset + 1 >= ends[tp]:
                    pending.discard(tp)
    finally:
        await consumer.stop()
    return records
