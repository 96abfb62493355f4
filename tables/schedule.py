"""The janitor's schedule: which payments are due for a status check, soonest first.

Stored in the `janitor` table as two entries per scheduled payment, in the partition of the
event that scheduled it (as `tables.dedup` does):

- `p:<payment id>` -> the payment's index key, to find and move it;
- `d:<partition>:<due ms, 13 digits>:<payment id>` -> the payment id.

The payment agent is the only writer: after every decision it puts the payment's next due
time (`domain.janitor.due_at`), or takes it out. The janitor timer only reads, seeking each of
its partitions to the first `d:` entry and stopping at the first one not yet due.
"""

from __future__ import annotations

from collections.abc import MutableMapping
from itertools import islice, takewhile
from typing import Any

from tables.dedup import Scan, read_time_index, time_index_key

_LETTER = "d"


class DueIndex:
    def __init__(self, table: MutableMapping[str, Any], scan: Scan) -> None:
        self._table = table
        self._scan = scan

    def set(self, payment_id: str, due_ms: int | None, *, partition: int) -> None:
        """Schedule the payment's next check at `due_ms`, or unschedule it (None)."""
        current = self._table.get(f"p:{payment_id}")
        wanted = None if due_ms is None else time_index_key(_LETTER, partition, due_ms, payment_id)
        if current == wanted:
            return
        if current is not None:
            self._table.pop(current, None)
        if wanted is None:
            self._table.pop(f"p:{payment_id}", None)
            return
        self._table[wanted] = payment_id
        self._table[f"p:{payment_id}"] = wanted

    def due(self, partition: int, now_ms: int, limit: int = 100) -> list[tuple[int, str]]:
        """Up to `limit` (due ms, payment id) of `partition` due by `now_ms`, soonest first."""
        entries = read_time_index(self._scan, _LETTER, partition)
        return [
            (at, pid) for at, pid, _ in islice(takewhile(lambda e: e[0] <= now_ms, entries), limit)
        ]

    def upcoming(self, partition: int, limit: int = 100) -> list[tuple[int, str]]:
        """The next `limit` scheduled checks of `partition`, due or not: for operators."""
        entries = read_time_index(self._scan, _LETTER, partition)
        return [(at, pid) for at, pid, _ in islice(entries, limit)]
