"""The payment agent's input ledger: which offset of each input partition it applied last,
kept with its state, so that no record the group committed past can go unapplied.

faust commits a partition's offset from the acks its streams report. Three faust-streaming
bugs that could commit past a record no agent applied were found and worked around
(`streams/faust_compat.py`), and a chaos run still lost a contiguous range of records at a
takeover. Rather than trust the commit, the agent keeps its own account:

- in memory, the last offset applied per input partition; a record further on than the next
  one means the records in between were never handed to the agent;
- in the `inputs` table (changelog-backed, in the partition's own changelog partition), the
  same number, written only once the producer flushed everything produced up to it, so a
  persisted mark never runs ahead of the state and outputs it covers. After a takeover or a
  restart the partition's new owner starts from that mark.

One flush covers every partition: a timer takes a `snapshot()` of the marks, flushes the
producer off the agent's path, and hands the snapshot back (`flushed`); each partition's
next event then writes its now-safe mark (`due`, `persist`). An earlier version flushed in
the agent, once per input partition per second: with 6 input topics of 8 partitions that was
up to 48 flushes a second, each waiting ~0.1 s for the broker's acks while the agent stood
still. It was the largest single cost found by issue 14's regression hunt.

A jump is repaired at once: the missing records are read straight from the partition (a
consumer with no group, from the offset after the mark) and applied, in order, before the
record that revealed the jump. Applying a record twice is harmless (the dedup tables and the
state's outbox make every input idempotent), so a mark that lags behind the truth costs only
some repeats after a rebalance; those come back as duplicates, and only records that change
the state count as recovered (`payments_inputs_recovered_total`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import MutableMapping
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from prometheus_client import Counter

log = logging.getLogger(__name__)

TRUST_COMMIT_AFTER = 100_000

REPAIRED = Counter(
    "payments_inputs_repaired_total",
    "Input records the payment agent read again itself because the stream skipped past them, "
    "by topic and by whether they changed the state (lost: they had never been applied) or "
    "were repeats.",
    ["topic", "was"],
)


class InputLedger:
    """The last applied offset per (topic, partition); `table` persists it lazily."""

    def __init__(self, table: MutableMapping[str, Any]) -> None:
        self._table = table
        self._applied: dict[tuple[str, int], int] = {}
        self._persisted: dict[tuple[str, int], int] = {}
        self._safe: dict[tuple[str, int], int] = {}  # applied, and its outputs flushed
        self._repaired: dict[tuple[str, int], int] = {}  # applied by a repair, not the stream
        self._epoch = 0  # bumped by forget(): a snapshot from before it is worthless

    def last_applied(self, topic: str, partition: int, offset: int) -> int:
        """Inside an event of that partition at `offset`: the last offset applied.

        With no mark yet (a new partition, or the first run with the ledger) the partition
        is read from its start, unless that is more than `TRUST_COMMIT_AFTER` records back:
        then the committed offset is trusted this once, and said so.
        """
        key = (topic, partition)
        if key not in self._applied:
            stored = self._table.get(f"{topic}:{partition}")
            if stored is not None:
                last = int(stored)
            elif offset > TRUST_COMMIT_AFTER:
                log.warning(
                    "%s[%s]: no input mark; trusting the commit at %s", topic, partition, offset
                )
                last = offset - 1
            else:
                last = -1
            self._applied[key] = last
            self._persisted[key] = last
        return self._applied[key]

    def applied(self, topic: str, partition: int, offset: int) -> None:
        key = (topic, partition)
        self._applied[key] = max(self._applied.get(key, -1), offset)

    def repaired(self, topic: str, partition: int, offset: int) -> None:
        """Applied by a repair (`RangeReader`), which may have read ahead of the stream."""
        self.applied(topic, partition, offset)
        key = (topic, partition)
        self._repaired[key] = max(self._repaired.get(key, -1), offset)

    def was_repaired(self, topic: str, partition: int, offset: int) -> bool:
        """Did a repair since the partition was assigned apply this record already? The
        stream hands it to the agent later, and it must not be applied twice."""
        return offset <= self._repaired.get((topic, partition), -1)

    def snapshot(self) -> tuple[int, dict[tuple[str, int], int]]:
        """The marks now, to hand back to `flushed` once the producer flushed."""
        return self._epoch, dict(self._applied)

    def flushed(self, snapshot: tuple[int, dict[tuple[str, int], int]]) -> None:
        """Everything produced up to `snapshot` is on the broker: those marks are safe."""
        epoch, marks = snapshot
        if epoch != self._epoch:
            return
        for key, mark in marks.items():
            if mark > self._safe.get(key, -1):
                self._safe[key] = mark

    def due(self, topic: str, partition: int) -> bool:
        """Is there a safe mark newer than the persisted one, to write now?"""
        key = (topic, partition)
        return self._safe.get(key, -1) > self._persisted.get(key, -1)

    def persist(self, topic: str, partition: int) -> None:
        """Inside an event of that partition (a table write goes to the event's changelog
        partition): write its latest safe mark."""
        key = (topic, partition)
        mark = self._safe[key]
        self._table[f"{topic}:{partition}"] = mark
        self._persisted[key] = mark

    def forget(self) -> None:
        """After a revocation: a partition that comes back starts from its persisted mark."""
        self._applied.clear()
        self._persisted.clear()
        self._safe.clear()
        self._repaired.clear()
        self._epoch += 1


class RangeReader:
    """Reads a range of one partition with a consumer of its own (no group), started on first
    use and kept: a repair after a rebalance costs a seek and a fetch, not a new client."""

    def __init__(self, bootstrap: str) -> None:
        self._bootstrap = bootstrap
        self._consumer: AIOKafkaConsumer | None = None
        self._lock = asyncio.Lock()

    async def read(
        self, topic: str, partition: int, start: int, end: int, *, timeout_s: float = 30
    ) -> list[Any]:
        """The records of one partition from `start` up to, not including, `end`."""
        async with self._lock:
            if self._consumer is None:
                consumer = AIOKafkaConsumer(
                    bootstrap_servers=self._bootstrap,
                    enable_auto_commit=False,
                    # past the log start (retention): from what is left
                    auto_offset_reset="earliest",
                    fetch_max_wait_ms=10,
                    client_id="payments-input-repair",
                )
                await consumer.start()
                self._consumer = consumer
            consumer = self._consumer
            tp = TopicPartition(topic, partition)
            consumer.assign([tp])
            consumer.seek(tp, start)
            deadline = time.monotonic() + timeout_s
            records: list[Any] = []
            while True:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{topic}[{partition}]: {start}..{end - 1} not read")
                batch = await consumer.getmany(tp, timeout_ms=500)
                for record in batch.get(tp, []):
                    if record.offset >= end:
                        return records
                    records.append(record)
                    if record.offset == end - 1:
                        return records
                if await consumer.position(tp) >= end:  # the rest held no record (markers)
                    return records

    async def close(self) -> None:
        if self._consumer is not None:
            await self._consumer.stop()
            self._consumer = None
