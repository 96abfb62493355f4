"""The janitor's schedule: which payments are due for a status check, soonest first.

Stored in the `janitor` table as one entry per scheduled payment, in the partition of the
event that scheduled it (as `tables.dedup` does): `p:<payment id>` -> its due time in ms.
A payment is scheduled only while it waits for news, so the table holds the payments in
flight, not every payment ever made.

The order lives in memory: for each partition a heap of (due ms, payment id), checked
against a dict of each payment's current due time (a moved payment leaves its old heap
entry behind, dropped when it surfaces). A partition's stored entries are loaded into it
after the partition is assigned, a slice per janitor tick (`load`), so neither the loading
nor a check reads more than a bounded number of entries on the event loop. A sorted index
kept in the table instead cost two more changelog records per payment, and its head, a run
of deleted keys, was read on every tick until RocksDB compacted it.

The payment agent is the only writer (`set`, after every decision); the janitor timer
reads (`due`), loads and forgets. Tables change only inside a stream event, so that the
changelog record lands in the event's partition; the timer never writes.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, MutableMapping
from typing import Any

from tables.dedup import Scan

_PREFIX = "p:"
_LOADED = None  # a partition's load cursor once every stored entry is in memory


class DueIndex:
    def __init__(self, table: MutableMapping[str, Any], scan: Scan) -> None:
        self._table = table
        self._scan = scan
        self._due: dict[int, dict[str, int]] = {}  # partition -> payment id -> due ms
        self._heap: dict[int, list[tuple[int, str]]] = {}  # partition -> (due ms, payment id)
        # partition -> the last stored key loaded ("" before the first), _LOADED when done
        self._cursor: dict[int, str | None] = {}
        # payment id -> its entry in the sorted index of earlier versions, deleted when the
        # payment is next scheduled (`_stored_due` says which entries those are)
        self._legacy: dict[str, str] = {}

    @property
    def stored(self) -> MutableMapping[str, Any]:
        """The table the entries are stored in."""
        return self._table

    def set(self, payment_id: str, due_ms: int | None, *, partition: int) -> None:
        """Schedule the payment's next check at `due_ms`, or unschedule it (None)."""
        key = f"{_PREFIX}{payment_id}"
        if self._cursor.get(partition, "") is _LOADED:
            current = self._due.get(partition, {}).get(payment_id)
        else:
            current = self._stored_due(payment_id, self._table.get(key))
        legacy = self._legacy.pop(payment_id, None)
        if legacy is not None:
            self._table.pop(legacy, None)
        if due_ms is None:
            if current is not None or legacy is not None:
                self._table.pop(key, None)
            self._due.get(partition, {}).pop(payment_id, None)
            return
        if current != due_ms or legacy is not None:
            self._table[key] = due_ms
        self._remember(partition, payment_id, due_ms)

    def load(self, partition: int, *, limit: int = 1000) -> bool:
        """Read up to `limit` more stored entries of `partition` into memory; True once all
        are. An entry already in memory was set since the partition was assigned: it stays."""
        cursor = self._cursor.setdefault(partition, "")
        if cursor is _LOADED:
            return True
        self._due.setdefault(partition, {})
        read = 0
        for key in self._scan(partition, cursor or _PREFIX):
            if key == cursor:
                continue
            if not key.startswith(_PREFIX) or read >= limit:
                break
            read += 1
            cursor = key
            payment_id = key[len(_PREFIX) :]
            due_ms = self._stored_due(payment_id, self._table.get(key))
            if due_ms is not None and payment_id not in self._due[partition]:
                self._remember(partition, payment_id, due_ms)
        else:
            self._cursor[partition] = _LOADED
            return True
        if read < limit:  # the scan left our keys before the limit: all read
            self._cursor[partition] = _LOADED
            return True
        self._cursor[partition] = cursor
        return False

    def forget(self, keep: Iterable[int] = ()) -> None:
        """Drop what memory holds of every partition but `keep`: after a rebalance another
        worker may have scheduled them, so each is loaded again from the table when next
        active."""
        kept = set(keep)
        for held in (self._due, self._heap, self._cursor):
            for partition in [p for p in held if p not in kept]:
                del held[partition]

    def due(self, partition: int, now_ms: int, limit: int = 100) -> list[tuple[int, str]]:
        """Up to `limit` (due ms, payment id) of `partition` due by `now_ms`, soonest first."""
        heap = self._heap.get(partition, [])
        current = self._due.get(partition, {})
        found: list[tuple[int, str]] = []
        while heap and heap[0][0] <= now_ms and len(found) < limit:
            at, payment_id = heapq.heappop(heap)
            if current.get(payment_id) == at and (at, payment_id) not in found[-1:]:
                found.append((at, payment_id))
        for entry in found:  # still scheduled: the payment agent moves it when it is checked
            heapq.heappush(heap, entry)
        return found

    def upcoming(self, partition: int, limit: int = 100) -> list[tuple[int, str]]:
        """The next `limit` scheduled checks of `partition`, due or not: for operators."""
        current = self._due.get(partition, {})
        return heapq.nsmallest(limit, ((at, pid) for pid, at in current.items()))

    def _remember(self, partition: int, payment_id: str, due_ms: int) -> None:
        current = self._due.setdefault(partition, {})
        if current.get(payment_id) == due_ms:
            return
        current[payment_id] = due_ms
        heap = self._heap.setdefault(partition, [])
        heapq.heappush(heap, (due_ms, payment_id))
        if len(heap) > 2 * len(current) + 64:  # mostly moved-away entries: rebuild
            self._heap[partition] = [(at, pid) for pid, at in current.items()]
            heapq.heapify(self._heap[partition])

    def _stored_due(self, payment_id: str, stored: Any) -> int | None:
        """The due time a stored entry holds. Earlier versions stored the key of a sorted
        index entry (`d:<partition>:<due ms, 13 digits>:<payment id>`) instead: its due time
        is read from it, and the index entry is deleted when the payment is next set."""
        if stored is None:
            return None
        if isinstance(stored, str):
            self._legacy[payment_id] = stored
            return int(stored.split(":")[2])
        return int(stored)
