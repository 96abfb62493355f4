"""Send a record that cannot be processed to `dead_letter`, with the reason in its headers."""

from __future__ import annotations

import logging
from typing import Any

from agents.metrics import DEAD_LETTERS
from streams import names

log = logging.getLogger(__name__)


def dead_letter_headers(
    *, topic: str, partition: int, offset: int, error: BaseException
) -> list[tuple[str, bytes]]:
    message = str(error)[:1000]
    return [
        (names.DLQ_SOURCE_TOPIC, topic.encode()),
        (names.DLQ_SOURCE_PARTITION, str(partition).encode()),
        (names.DLQ_SOURCE_OFFSET, str(offset).encode()),
        (names.DLQ_ERROR_TYPE, type(error).__name__.encode()),
        (names.DLQ_ERROR_MESSAGE, message.encode("utf-8", "replace")),
    ]


async def send_to_dead_letter(dead_letter_topic: Any, event: Any, error: BaseException) -> None:
    msg = event.message
    DEAD_LETTERS.labels(msg.topic).inc()
    log.warning(
        "dead-lettering %s[%s]@%s: %s: %s",
        msg.topic,
        msg.partition,
        msg.offset,
        type(error).__name__,
        error,
    )
    await dead_letter_topic.send(
        key=msg.key,
        value=msg.value,
        headers=dead_letter_headers(
            topic=msg.topic, partition=msg.partition, offset=msg.offset, error=error
        ),
    )
