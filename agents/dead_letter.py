"""Send a record that cannot be processed to `dead_letter`, with the reason in its headers."""

from __future__ import annotations

import logging
from typing import Any

from agents.metrics import DEAD_LETTERS
from streams.dead_letter import dead_letter_headers

log = logging.getLogger(__name__)


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
