"""The changelog writes of some tables, so that a writer can wait until the broker has them.

faust sends a table write to its changelog from `send_changelog`, through the producer's
buffer, and drops the future it gets back. `ChangelogWrites` keeps those futures (with the
table, partition and key each one wrote) until the writer takes them: the payment agent
waits for the writes of a decision before it sends the decision's outputs (`agents.outbox`).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class Write:
    """One changelog send: its future (done when the broker acknowledged it, or failed)."""

    future: asyncio.Future[Any]
    table: Any
    partition: int | None
    key: Any

    def again(self) -> Write:
        """Send the key's *current* value again (a newer write may have replaced the one that
        failed; sending the old value after it would put the older row last in the log)."""
        value = self.table.data.get(self.key)
        kw = {"value_serializer": "raw"} if value is None else {}  # a delete, as faust's own
        return Write(
            self.table.send_changelog(self.partition, self.key, value, **kw),
            self.table,
            self.partition,
            self.key,
        )


class ChangelogWrites:
    """Records every changelog send of the given faust tables until `take`."""

    def __init__(self, *tables: Any) -> None:
        self._writes: list[Write] = []
        for table in tables:
            self._watch(table)

    def _watch(self, table: Any) -> None:
        send = table.send_changelog  # the bound method faust's set and delete call

        def recorded(partition: int | None, key: Any, value: Any, *args: Any, **kw: Any) -> Any:
            future = send(partition, key, value, *args, **kw)
            self._writes.append(Write(future, table, partition, key))
            return future

        table.send_changelog = recorded

    def take(self) -> list[Write]:
        """The writes sent since the last `take`."""
        writes, self._writes = self._writes, []
        return writes
