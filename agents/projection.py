"""Project `payment_status` and `refund_status` into the Redis read model: in batches, and a
record only lands when its seq is newer than the stored one, so never backwards."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import faust
import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from tenacity import AsyncRetrying, retry_if_exception_type, wait_random_exponential

from agents.dead_letter import send_to_dead_letter
from domain.errors import SerializationError
from schemas import decode
from schemas.records import to_ms
from streams.app import Topics
from streams.indexes import queue_payment_index, queue_refund_index
from streams.readmodel import (
    SET_IF_NEWER,
    document_from_status,
    dumps,
    payment_key,
    refund_document,
    refund_key,
)

log = logging.getLogger(__name__)

BATCH = 500
BATCH_WINDOW_S = 0.02


# schema name -> (Redis key of the record, document for GET)
_VIEWS: dict[str, tuple[Callable[[dict[str, Any]], str], Callable[[dict[str, Any]], Any]]] = {
    "payment_status": (
        lambda rec: payment_key(rec["payment_id"]),
        lambda rec: document_from_status(rec, to_ms(rec["occurred_at"])),
    ),
    "refund_status": (
        lambda rec: refund_key(rec["refund_id"]),
        lambda rec: refund_document(rec, to_ms(rec["occurred_at"])),
    ),
}

# schema name -> queues the listing-index writes of a record (streams/indexes.py)
_INDEXES: dict[str, Callable[[Any, dict[str, Any]], None]] = {
    "payment_status": queue_payment_index,
    "refund_status": queue_refund_index,
}


def register(app: faust.App, topics: Topics, redis: aioredis.Redis) -> list[Any]:
    set_if_newer = redis.register_script(SET_IF_NEWER)

    def projection(topic: Any, schema: str) -> Any:
        key_of, document_of = _VIEWS[schema]
        queue_index = _INDEXES[schema]

        async def project(stream: Any) -> Any:
            async for events in stream.take_events(BATCH, within=BATCH_WINDOW_S):
                pipe = redis.pipeline(transaction=False)
                queued = 0
                for event in events:
                    try:
                        rec = decode(schema, event.value, dict(event.headers or {}))
                    except SerializationError as exc:
                        await send_to_dead_letter(topics.dead_letter, event, exc)
                        continue
                    await set_if_newer(
                        keys=[key_of(rec)], args=[rec["seq"], dumps(document_of(rec))], client=pipe
                    )
                    queue_index(pipe, rec)  # same pipeline: one round trip per batch
                    queued += 1
                if queued:
                    await _execute_until_done(pipe)

        return app.agent(topic, name=f"redis-projection-{schema}")(project)

    return [
        projection(topics.payment_status, "payment_status"),
        projection(topics.refund_status, "refund_status"),
    ]


async def _execute_until_done(pipe: Any) -> None:
    """Redis down means wait, never skip: the offset is not committed until this returns."""
    async for attempt in AsyncRetrying(
        retry=retry_if_exception_type((RedisConnectionError, RedisTimeoutError, OSError)),
        wait=wait_random_exponential(multiplier=0.1, max=5),
        before_sleep=lambda rs: log.warning("redis write failed, retrying: %s", rs.outcome),
    ):
        with attempt:
            await pipe.execute()
