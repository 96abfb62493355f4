"""Dedup tables whose entries expire: `idempotency` and `seen_events`.

Each remembered key is stored as two table entries, both in the partition of the event that
wrote it (faust sends a table's changelog to the current event's partition):

- `k:<key>`  -> the entry, with its expiry time under `"exp"`;
- `x:<partition>:<expiry ms, 13 digits>:<key>` -> the key it expires.

The `x:` entries sort by expiry time, so a sweep seeks to the first one of its partition and
reads only what has expired. Sweeps run inside a stream event of that partition, so their
tombstones land in the same changelog partition as the entries they delete. Nothing here
knows about Kafka: the table is any mapping, and `scan` lists a partition's expiry entries.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, MutableMapping
from itertools import islice, takewhile
from typing import Any

Scan = Callable[[int, str], Iterable[str]]  # (partition, prefix) -> keys from prefix, sorted


class ExpiringTable:
    """Keys remembered for at least `ttl_ms`, then swept away."""

    def __init__(self, table: MutableMapping[str, Any], scan: Scan, *, ttl_ms: int) -> None:
        self._table = table
        self._scan = scan
        self.ttl_ms = ttl_ms
        self._last_sweep: dict[int, int] = {}

    def get(self, key: str, now_ms: int) -> dict[str, Any] | None:
        entry: dict[str, Any] | None = self._table.get(f"k:{key}")
        if entry is None or entry["exp"] <= now_ms:
            return None
        return entry

    def put(self, key: str, value: dict[str, Any], *, partition: int, now_ms: int) -> None:
        """Remember `key` from now on; a key put again keeps its first expiry entry too."""
        expires = now_ms + self.ttl_ms
        self._table[f"k:{key}"] = {**value, "exp": expires}
        self._table[time_index_key("x", partition, expires, key)] = key

    @property
    def table(self) -> MutableMapping[str, Any]:
        return self._table

    @staticmethod
    def entries_about(payment_id: str, items: Iterable[tuple[str, Any]]) -> dict[str, Any]:
        """Every entry naming `payment_id` among `items` (the table's, read by the caller:
        a full scan, for operators), by key."""
        return {
            key[2:]: entry
            for key, entry in items
            if key.startswith("k:") and entry.get("payment_id") == payment_id
        }

    def expiring(self, partition: int, limit: int = 100) -> list[tuple[int, str]]:
        """The first `limit` (expiry ms, key) pairs of `partition`'s expiry index, soonest
        first: what the next sweeps will read."""
        return [(expires, key) for expires, key, _ in islice(self._index(partition), limit)]

    def sweep(self, partition: int, now_ms: int, *, every_ms: int, limit: int = 2000) -> int:
        """Delete up to `limit` expired keys of `partition`, at most once per `every_ms`."""
        if now_ms - self._last_sweep.get(partition, 0) < every_ms:
            return 0
        self._last_sweep[partition] = now_ms
        deleted = 0
        expired = takewhile(lambda item: item[0] <= now_ms, self._index(partition))
        for _, key, index_key in islice(expired, limit):
            del self._table[index_key]
            entry = self._table.get(f"k:{key}")
            # A key put again since has a later expiry, with an index entry of its own.
            if entry is not None and entry["exp"] <= now_ms:
                del self._table[f"k:{key}"]
                deleted += 1
        return deleted

    def _index(self, partition: int) -> Iterator[tuple[int, str, str]]:
        """(expiry ms, key, index key) of `partition`'s expiry index, soonest first."""
        return read_time_index(self._scan, "x", partition)


def time_index_key(letter: str, partition: int, at_ms: int, key: str) -> str:
    """An entry of a time-sorted index: `<letter>:<partition>:<ms, 13 digits>:<key>`."""
    return f"{letter}:{partition:04d}:{at_ms:013d}:{key}"


def read_time_index(scan: Scan, letter: str, partition: int) -> Iterator[tuple[int, str, str]]:
    """(ms, key, index key) of one partition's time-sorted index, earliest first."""
    prefix = f"{letter}:{partition:04d}:"
    for index_key in scan(partition, prefix):
        if not index_key.startswith(prefix):
            return
        at_ms, _, key = index_key[len(prefix) :].partition(":")
        yield int(at_ms), key, index_key


def faust_scan(table: Any) -> Scan:
    """Sorted keys of one partition of a faust table, from `prefix` on.

    With the RocksDB store this seeks in that partition's database. Keys are stored as the
    table serializes them (a `str` key is JSON: `"x:0003:..."`), so the seek key is the
    encoded prefix without a JSON string's closing quote, and each key is decoded back.
    Other stores (memory, in tests) are small and are listed and sorted.
    """

    def scan(partition: int, prefix: str) -> Iterator[str]:
        store = table.data
        if hasattr(store, "_db_for_partition"):
            db = store._db_for_partition(partition)
            seek = seek_key(store._encode_key(prefix))
            for raw in db.keys(from_key=seek):
                if raw.startswith(b"__faust"):  # the store's own offset key
                    continue
                try:
                    yield str(store._decode_key(raw))
                except ValueError:  # not one of ours: the scan has left the table's keys
                    return
            return
        yield from sorted(str(k) for k in table if str(k) >= prefix)

    return scan


def seek_key(encoded_prefix: bytes) -> bytes:
    """A stored key prefix from an encoded one: a JSON string loses its closing quote."""
    if encoded_prefix.startswith(b'"') and encoded_prefix.endswith(b'"'):
        return encoded_prefix[:-1]
    return encoded_prefix
