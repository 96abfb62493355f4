"""Project `payment_status` and `refund_status` into the Redis read model: in batches, and a
record only lands when its seq is newer than the stored one, so never backwards. And
`payment_metrics` windows, for the ingress dashboard: the latest record of each window."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

import faust
import redis.asyncio as aioredis
from redis.exceptions import RedisError
from tenacity import AsyncRetrying, retry_if_exception_type, wait_random_exponential

from agents.dead_letter import send_to_dead_letter
from domain.errors import SerializationError
from domain.metrics import Window
from schemas import decode
from schemas.records import to_ms
from streams.app import Topics
from streams.indexes import queue_payment_index, queue_refund_index
from streams.readmodel import (
    METRICS_KEEP_S,
    SET_IF_NEWER,
    document_from_status,
    dumps,
    metrics_document,
    metrics_index_key,
    metrics_window_key,
    payment_key,
    refund_document,
    refund_key,
)

log = logging.getLogger(__name__)

BATCH = 500
BATCH_WINDOW_S = 0.02


def _status_writer(
    key_of: Callable[[dict[str, Any]], str],
    document_of: Callable[[dict[str, Any]], Any],
    queue_index: Callable[[Any, dict[str, Any]], None],
) -> Callable[[Any, Any, dict[str, Any]], Awaitable[None]]:
    """A status record lands only when its seq is newer; its listing index rides along."""

    async def write(pipe: Any, set_if_newer: Any, rec: dict[str, Any]) -> None:
        await set_if_newer(
            keys=[key_of(rec)], args=[rec["seq"], dumps(document_of(rec))], client=pipe
        )
        queue_index(pipe, rec)  # same pipeline: one round trip per batch

    return write


async def _write_metrics(pipe: Any, set_if_newer: Any, rec: dict[str, Any]) -> None:
    """A metrics window is an upsert: its records come in order (one key, one partition)."""
    start, end = to_ms(rec["window_start"]), to_ms(rec["window_end"])
    dims = f"{rec['gateway']}|{rec['payment_method']}|{rec['currency']}"
    key = Window(rec["window_size_s"], start).key(dims)
    pipe.set(metrics_window_key(key), dumps(metrics_document(rec, start, end)), ex=METRICS_KEEP_S)
    index = metrics_index_key(rec["window_size_s"])
    pipe.zadd(index, {key: start})
    pipe.zremrangebyscore(index, 0, start - METRICS_KEEP_S * 1000)


# schema name -> how one decoded record is written to Redis
_WRITERS: dict[str, Callable[[Any, Any, dict[str, Any]], Awaitable[None]]] = {
    "payment_status": _status_writer(
        lambda rec: payment_key(rec["payment_id"]),
        lambda rec: document_from_status(rec, to_ms(rec["occurred_at"])),
        queue_payment_index,
    ),
    "refund_status": _status_writer(
        lambda rec: refund_key(rec["refund_id"]),
        lambda rec: refund_document(rec, to_ms(rec["occurred_at"])),
        queue_refund_index,
    ),
    "payment_metrics": _write_metrics,
}


class _Dry:
    """A pipeline that takes every command and sends none: building a record's commands on
    it tells a record that cannot be written from a Redis that cannot take it."""

    def __getattr__(self, name: str) -> Callable[..., None]:
        return lambda *args, **kwargs: None


async def _dry_script(*args: Any, **kwargs: Any) -> None:
    return None


def register(app: faust.App, topics: Topics, redis: aioredis.Redis) -> list[Any]:
    set_if_newer = redis.register_script(SET_IF_NEWER)

    def projection(topic: Any, schema: str) -> Any:
        write = _WRITERS[schema]

        async def project(stream: Any) -> Any:
            # faust's take_events acks a batch once the loop body is done with it, and also
            # when the body raised: nothing may escape it but a record sent to dead_letter.
            async for events in stream.take_events(BATCH, within=BATCH_WINDOW_S):
                records = []
                for event in events:
                    try:
                        rec = decode(schema, event.value, dict(event.headers or {}))
                        await write(_Dry(), _dry_script, rec)  # a record it cannot write
                    except Exception as exc:  # the record is the poison, not Redis
                        if not isinstance(exc, SerializationError):
                            log.exception("cannot project %s", schema)
                        await send_to_dead_letter(topics.dead_letter, event, exc)
                    else:
                        records.append(rec)
                if records:
                    await _write_until_done(redis, set_if_newer, write, records)

        return app.agent(topic, name=f"redis-projection-{schema}")(project)

    return [
        projection(topics.payment_status, "payment_status"),
        projection(topics.refund_status, "refund_status"),
        projection(topics.payment_metrics, "payment_metrics"),
    ]


async def _write_until_done(
    redis: aioredis.Redis,
    set_if_newer: Any,
    write: Callable[[Any, Any, dict[str, Any]], Awaitable[None]],
    records: list[dict[str, Any]],
) -> None:
    """Redis down, loading or refusing means wait, never skip: the offsets are not committed
    until this returns (an error that escaped crashed the agent with its batch unacked).

    Each attempt queues the batch on a new pipeline: redis-py empties a pipeline's command
    stack when `execute()` fails, so executing the same one again would send nothing,
    succeed, and let the batch be acked without ever reaching the read model."""
    async for attempt in AsyncRetrying(
        retry=retry_if_exception_type((RedisError, OSError)),
        wait=wait_random_exponential(multiplier=0.1, max=5),
        before_sleep=lambda rs: log.warning("redis write failed, retrying: %s", rs.outcome),
    ):
        with attempt:
            pipe = redis.pipeline(transaction=False)
            for rec in records:
                await write(pipe, set_if_newer, rec)
            await pipe.execute()
