"""Client-side workarounds for the embedded Tansu broker (see shared notes: broker.md).

Applied only when the broker is Tansu (detected from the Metadata cluster id, or forced by
`PAYMENTS_KAFKA_BROKER=tansu`). Apache Kafka never needs them.

1. InitProducerId: aiokafka only speaks v0; Tansu wants the v3 fields producer_id = -1 and
   producer_epoch = -1, else idempotent producers fail with UnknownError.
2. End offsets: Tansu's ListOffsets LATEST answers the newest batch's *start* offset + 1.
   faust ends table recovery at that offset, so an unpatched worker recovers tables short
   and silently loses updates. Fetch responses carry the right high watermark, so after the
   normal lookup we ask each leader with one tiny Fetch and keep the larger value.
3. Fetch long-polling: Tansu does not answer a waiting Fetch when records arrive; it always
   waits out `fetch_max_wait_ms` (faust hard-codes 1500 ms), so every hop through a topic
   cost ~600 ms on average (measured: 615 ms per hop at 1500 ms, 2-5 ms at 10 ms). We clamp
   the consumers' max wait to FETCH_MAX_WAIT_MS. Under load fetches return full anyway.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from typing import Any

from aiokafka import AIOKafkaConsumer
from aiokafka.client import AIOKafkaClient
from aiokafka.consumer import fetcher as _fetcher
from aiokafka.producer import sender as _sender
from aiokafka.protocol.api import Request, RequestStruct, Response
from aiokafka.protocol.fetch import FetchRequest
from aiokafka.protocol.metadata import MetadataRequest
from aiokafka.protocol.transaction import InitProducerIdRequest_v0
from aiokafka.protocol.types import CompactString, Int16, Int32, Int64, Schema, TaggedFields
from aiokafka.structs import TopicPartition

log = logging.getLogger(__name__)

TANSU_CLUSTER_PREFIX = "tansu"
FETCH_MAX_WAIT_MS = 10
_applied = False


class InitProducerIdResponse_v3(Response):  # type: ignore[misc]
    API_KEY = 22
    API_VERSION = 3
    SCHEMA = Schema(
        ("throttle_time_ms", Int32),
        ("error_code", Int16),
        ("producer_id", Int64),
        ("producer_epoch", Int16),
        ("tags", TaggedFields),
    )


class InitProducerIdRequest_v3(RequestStruct):  # type: ignore[misc]
    FLEXIBLE_VERSION = True
    API_KEY = 22
    API_VERSION = 3
    RESPONSE_TYPE = InitProducerIdResponse_v3
    SCHEMA = Schema(
        ("transactional_id", CompactString("utf-8")),
        ("transaction_timeout_ms", Int32),
        ("producer_id", Int64),
        ("producer_epoch", Int16),
        ("tags", TaggedFields),
    )


class InitProducerIdRequestV3(Request[InitProducerIdRequest_v0 | InitProducerIdRequest_v3]):  # type: ignore[misc]
    """Drop-in for aiokafka's InitProducerIdRequest that prefers v3 when the broker has it."""

    API_KEY = 22

    def __init__(self, transactional_id: str | None, transaction_timeout_ms: int) -> None:
        self._transactional_id = transactional_id
        self._transaction_timeout_ms = transaction_timeout_ms

    def build(self, request_struct_class: type[Any]) -> Any:
        if request_struct_class.API_VERSION >= 3:
            # -1/-1: "no existing producer id"; Tansu rejects the request without them.
            return request_struct_class(
                self._transactional_id, self._transaction_timeout_ms, -1, -1, {}
            )
        return request_struct_class(self._transactional_id, self._transaction_timeout_ms)


_original_end_offsets = _fetcher.Fetcher.end_offsets


async def _end_offsets_from_high_watermark(
    self: Any, partitions: Any, timeout_ms: int
) -> dict[TopicPartition, int]:
    offsets: dict[TopicPartition, int] = await _original_end_offsets(self, partitions, timeout_ms)
    client: AIOKafkaClient = self._client
    by_leader: dict[int, list[TopicPartition]] = defaultdict(list)
    for tp in offsets:
        leader = client.cluster.leader_for_partition(tp)
        if leader is not None and leader >= 0:
            by_leader[leader].append(tp)
    read_committed = self._isolation_level == _fetcher.READ_COMMITTED
    for node_id, tps in by_leader.items():
        topics: dict[str, list[tuple[int, int, int]]] = defaultdict(list)
        for tp in tps:
            # Fetch from the (possibly short) reported end; 1 byte is enough for the watermark.
            topics[tp.topic].append((tp.partition, max(offsets[tp], 0), 1))
        request = FetchRequest(
            max_wait_time=1,  # Tansu answers nothing to a 0 ms wait
            min_bytes=0,
            max_bytes=1,
            isolation_level=1 if read_committed else 0,
            topics=list(topics.items()),
        )
        response = await client.send(node_id, request)
        for topic, parts in response.topics:
            for partition, error_code, highwater, *rest in parts:
                if error_code != 0:
                    continue
                mark = highwater
                if read_committed and response.API_VERSION >= 4 and rest and rest[0] >= 0:
                    mark = rest[0]  # last stable offset
                tp = TopicPartition(topic, partition)
                if mark > offsets.get(tp, -1):
                    offsets[tp] = mark
    return offsets


_original_consumer_init = AIOKafkaConsumer.__init__


def _consumer_init_short_fetch_wait(self: Any, *topics: Any, **kwargs: Any) -> None:
    kwargs["fetch_max_wait_ms"] = min(kwargs.get("fetch_max_wait_ms", 500), FETCH_MAX_WAIT_MS)
    _original_consumer_init(self, *topics, **kwargs)


def apply() -> None:
    """Install the three workarounds into aiokafka, once per process."""
    global _applied
    if _applied:
        return
    _sender.InitProducerIdRequest = InitProducerIdRequestV3
    _fetcher.Fetcher.end_offsets = _end_offsets_from_high_watermark
    AIOKafkaConsumer.__init__ = _consumer_init_short_fetch_wait
    _applied = True
    log.info(
        "tansu compatibility applied: InitProducerId v3, high-watermark end offsets, "
        "fetch max wait %d ms",
        FETCH_MAX_WAIT_MS,
    )


def is_applied() -> bool:
    return _applied


async def cluster_id(bootstrap: str) -> str | None:
    """The cluster id from a Metadata v2+ response (aiokafka itself discards it)."""
    client = AIOKafkaClient(bootstrap_servers=bootstrap, request_timeout_ms=10_000)
    try:
        await client.bootstrap()
        node = next(iter(client.cluster.brokers())).nodeId
        response = await client.send(node, MetadataRequest([]))
        return getattr(response, "cluster_id", None)
    finally:
        await client.close()


async def is_tansu(bootstrap: str) -> bool:
    cid = await cluster_id(bootstrap)
    return bool(cid) and str(cid).startswith(TANSU_CLUSTER_PREFIX)


async def prepare(bootstrap: str, broker_kind: str) -> bool:
    """Apply the workarounds when `broker_kind` is 'tansu', or 'auto' and the broker is Tansu."""
    if broker_kind == "kafka":
        return False
    if broker_kind == "tansu" or await is_tansu(bootstrap):
        apply()
        return True
    return False
