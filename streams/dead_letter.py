"""The headers a `dead_letter` record carries: where it came from and why it is there."""

from __future__ import annotations

from streams import names


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
