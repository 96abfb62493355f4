"""The ingress's Kafka producer: acks=all, idempotent, keyed by payment id."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from ingress.errors import ApiError
from payments.settings import Settings
from streams import tansu_compat

log = logging.getLogger(__name__)

SEND_TIMEOUT_S = 10.0


class Producer:
    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._producer: AIOKafkaProducer | None = None

    async def start(self) -> None:
        s = self._settings
        await tansu_compat.prepare(s.kafka_bootstrap, s.kafka_broker.value)
        self._producer = AIOKafkaProducer(
            bootstrap_servers=s.kafka_bootstrap,
            acks="all",
            enable_idempotence=True,
            linger_ms=s.producer_linger_ms,
            request_timeout_ms=int(SEND_TIMEOUT_S * 1000),
        )
        await self._producer.start()

    async def stop(self) -> None:
        if self._producer is not None:
            await self._producer.stop()

    async def send(
        self, topic: str, *, key: str, value: bytes, headers: Sequence[tuple[str, bytes]]
    ) -> None:
        """Return only once the broker acknowledged; otherwise raise a 503 the client retries."""
        assert self._producer is not None
        try:
            fut = await self._producer.send(
                topic, value=value, key=key.encode(), headers=list(headers)
            )
            await asyncio.wait_for(fut, SEND_TIMEOUT_S)
        except (KafkaError, TimeoutError) as exc:
            log.error("produce to %s failed: %s", topic, type(exc).__name__)
            raise ApiError(
                503, "broker_unavailable", "the payment was not accepted; retry with the same key"
            ) from exc

    async def ready(self) -> bool:
        if self._producer is None:
            return False
        try:
            await asyncio.wait_for(self._producer.client.fetch_all_metadata(), 2.0)
            return True
        except Exception:
            return False
