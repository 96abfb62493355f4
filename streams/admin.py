"""Create the pipeline's topics (idempotent) with aiokafka's admin client."""

from __future__ import annotations

import contextlib
import logging

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

from streams.names import ALL_TOPICS

log = logging.getLogger(__name__)


async def ensure_topics(
    bootstrap: str,
    *,
    partitions: int,
    replication: int,
    topics: tuple[str, ...] = ALL_TOPICS,
) -> list[str]:
    """Create any missing topic of `topics` (the pipeline's); returns the names it created."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=15_000)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [t for t in topics if t not in existing]
        if missing:
            # Another process may win the race to create them; that is fine.
            with contextlib.suppress(TopicAlreadyExistsError):
                await admin.create_topics([NewTopic(t, partitions, replication) for t in missing])
            log.info("created topics %s", missing)
        return missing
    finally:
        await admin.close()
