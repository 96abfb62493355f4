"""The expiring dedup tables over a plain dict, and the payment agent's use of them."""

from __future__ import annotations

import json
import types
from collections.abc import Iterator
from pathlib import Path

from rocksdict import Options, Rdict

from agents.payment import recall, remember
from domain.payment import (
    GatewayNotice,
    NoticeKind,
    decide,
)
from domain.status import PaymentStatus
from tables.dedup import ExpiringTable, faust_scan
from tables.payments import Tables
from tables.schedule import DueIndex
from tests.unit.test_payment_decide import request

DAY_MS = 24 * 3600 * 1000


def _table(ttl_ms: int = DAY_MS) -> tuple[dict[str, object], ExpiringTable]:
    data: dict[str, object] = {}

    def scan(partition: int, prefix: str) -> Iterator[str]:
        yield from sorted(k for k in data if k >= prefix)

    return data, ExpiringTable(data, scan, ttl_ms=ttl_ms)


def test_a_key_is_kept_for_its_ttl_then_swept() -> None:
    data, table = _table()
    table.put("a", {"v": 1}, partition=3, now_ms=1_000)
    assert table.get("a", 1_000 + DAY_MS - 1) == {"v": 1, "exp": 1_000 + DAY_MS}
    assert table.get("a", 1_000 + DAY_MS) is None  # expired reads as absent, even unswept
    assert table.sweep(3, 1_000 + DAY_MS - 1, every_ms=0) == 0
    assert table.sweep(3, 1_000 + DAY_MS, every_ms=0) == 1
    assert data == {}


def test_a_sweep_touches_only_its_partition_and_what_expired() -> None:
    data, table = _table(ttl_ms=100)
    for i in range(5):
        table.put(f"p1-{i}", {}, partition=1, now_ms=i * 10)
    table.put("p2", {}, partition=2, now_ms=0)
    assert table.sweep(1, 125, every_ms=0) == 3  # expired at 100, 110, 120
    assert sorted(k for k in data if k.startswith("k:")) == ["k:p1-3", "k:p1-4", "k:p2"]


def test_sweeps_are_rate_limited_and_bounded() -> None:
    _, table = _table(ttl_ms=1)
    for i in range(10):
        table.put(f"k{i}", {}, partition=0, now_ms=0)
    assert table.sweep(0, 1_000, every_ms=500, limit=4) == 4
    assert table.sweep(0, 1_200, every_ms=500) == 0  # too soon
    assert table.sweep(0, 1_600, every_ms=500) == 6


def test_a_key_put_again_lives_until_its_new_expiry() -> None:
    _, table = _table(ttl_ms=100)
    table.put("a", {"n": 1}, partition=0, now_ms=0)
    table.put("a", {"n": 2}, partition=0, now_ms=50)
    assert table.sweep(0, 120, every_ms=0) == 0
    assert table.get("a", 120) == {"n": 2, "exp": 150}
    assert table.sweep(0, 150, every_ms=0) == 1


class _Partitioned(dict[str, object]):
    """A table's entries and the partition each was written in (faust writes a changelog
    record to the partition of the event under way: here, `writing`)."""

    def __init__(self) -> None:
        super().__init__()
        self.writing = 0
        self.partition_of: dict[str, int] = {}

    def __setitem__(self, key: str, value: object) -> None:
        self.partition_of[key] = self.writing
        super().__setitem__(key, value)

    def scan(self, partition: int, prefix: str) -> Iterator[str]:
        yield from sorted(k for k in self if k >= prefix and self.partition_of[k] == partition)


def _due_index() -> tuple[_Partitioned, DueIndex]:
    data = _Partitioned()
    return data, DueIndex(data, data.scan)


def _set(data: _Partitioned, index: DueIndex, pid: str, due: int | None, partition: int) -> None:
    data.writing = partition
    index.set(pid, due, partition=partition)


def _tables() -> Tables:
    return Tables(
        payments={},
        refunds={},
        idempotency=_table()[1],
        seen_events=_table()[1],
        janitor=_due_index()[1],
        inputs={},
        metrics={},
        fraud_users={},
        fraud_cards={},
    )


def test_the_due_index_lists_a_partition_soonest_first_and_moves_or_drops_a_payment() -> None:
    data, index = _due_index()
    _set(data, index, "pay_b", 2_000, 1)
    _set(data, index, "pay_a", 1_000, 1)
    _set(data, index, "pay_c", 1_500, 2)
    assert index.due(1, now_ms=1_999) == [(1_000, "pay_a")]
    assert index.due(1, now_ms=5_000) == [(1_000, "pay_a"), (2_000, "pay_b")]
    assert index.due(1, now_ms=5_000) == [(1_000, "pay_a"), (2_000, "pay_b")]  # read, kept
    _set(data, index, "pay_a", 9_000, 1)  # checked: its next check moves later
    assert index.due(1, now_ms=5_000) == [(2_000, "pay_b")]
    assert index.upcoming(1) == [(2_000, "pay_b"), (9_000, "pay_a")]
    _set(data, index, "pay_b", None, 1)  # settled: no more checks
    assert index.upcoming(1) == [(9_000, "pay_a")] and index.upcoming(2) == [(1_500, "pay_c")]
    assert dict(data) == {"p:pay_a": 9_000, "p:pay_c": 1_500}  # one entry per payment


def test_a_payment_moved_back_to_an_earlier_time_is_listed_once() -> None:
    data, index = _due_index()
    for due in (1_000, 2_000, 1_000):
        _set(data, index, "pay_a", due, 0)
    assert index.due(0, now_ms=5_000) == [(1_000, "pay_a")]
    assert index.due(0, now_ms=5_000) == [(1_000, "pay_a")]


def test_a_new_worker_loads_the_schedule_from_the_table_a_slice_at_a_time() -> None:
    data, index = _due_index()
    for n in range(7):
        _set(data, index, f"pay_{n}", 1_000 + n, n % 2)
    _set(data, index, "pay_3", None, 1)
    restarted = DueIndex(data, data.scan)  # a restart, or a takeover of both partitions
    assert restarted.due(0, now_ms=9_000) == []  # nothing loaded yet
    assert restarted.load(0, limit=2) is False
    assert restarted.due(0, now_ms=9_000) == [(1_000, "pay_0"), (1_002, "pay_2")]
    assert restarted.load(0, limit=2) is True and restarted.load(1, limit=10) is True
    assert restarted.due(0, now_ms=9_000) == [(1_000 + n, f"pay_{n}") for n in (0, 2, 4, 6)]
    assert restarted.due(1, now_ms=9_000) == [(1_001, "pay_1"), (1_005, "pay_5")]
    # Set while loading: memory has the newer time, and the load keeps it.
    again = DueIndex(data, data.scan)
    _set(data, again, "pay_4", 5_000, 0)
    assert again.load(0) is True
    assert again.due(0, now_ms=4_999) == [(1_000, "pay_0"), (1_002, "pay_2"), (1_006, "pay_6")]


def test_a_partition_given_away_is_forgotten_and_loaded_again_when_it_comes_back() -> None:
    data, index = _due_index()
    _set(data, index, "pay_a", 1_000, 0)
    _set(data, index, "pay_b", 1_000, 1)
    index.forget(keep=[1])
    assert index.due(0, now_ms=2_000) == [] and index.due(1, now_ms=2_000) == [(1_000, "pay_b")]
    other = DueIndex(data, data.scan)  # the worker that took partition 0 settles pay_a
    other.load(0)
    _set(data, other, "pay_a", None, 0)
    assert index.load(0) is True and index.due(0, now_ms=2_000) == []


def test_entries_of_the_sorted_index_of_earlier_versions_are_read_and_then_replaced() -> None:
    data, index = _due_index()
    data.writing = 3
    data["d:0003:0000000001000:pay_a"] = "pay_a"  # what earlier versions stored
    data["p:pay_a"] = "d:0003:0000000001000:pay_a"
    assert index.load(3) is True
    assert index.due(3, now_ms=1_000) == [(1_000, "pay_a")]
    _set(data, index, "pay_a", 7_000, 3)
    assert dict(data) == {"p:pay_a": 7_000}
    fresh = DueIndex(data, data.scan)
    data["d:0003:0000000002000:pay_b"] = "pay_b"
    data["p:pay_b"] = "d:0003:0000000002000:pay_b"
    _set(data, fresh, "pay_b", None, 3)  # settled before any load: both entries go
    assert dict(data) == {"p:pay_a": 7_000}


def test_a_request_seen_before_is_a_duplicate_and_another_body_a_conflict() -> None:
    tables = _tables()
    first = decide(None, request())
    remember(tables, request(), first, partition=0, now_ms=0)
    again = recall(tables, request(), first.state, now_ms=1)
    assert again is not None and again.ignored == "duplicate_request"
    assert again.commands == first.commands  # the outbox is re-emitted, same command ids
    conflict = recall(tables, request(fingerprint="f2"), first.state, now_ms=1)
    assert conflict is not None and conflict.ignored == "idempotency_conflict"


def test_an_entry_ahead_of_its_payment_is_not_trusted() -> None:
    """A crash kept the dedup entry and lost the payment write: the input is applied again."""
    tables = _tables()
    first = decide(None, request())
    remember(tables, request(), first, partition=0, now_ms=0)
    assert recall(tables, request(), None, now_ms=1) is None


def test_a_webhook_event_is_recalled_for_days_not_forever() -> None:
    tables = _tables()
    state = decide(None, request()).state
    notice = GatewayNotice(
        payment_id="pay_1",
        event_id="stripe:evt_1",
        event_type="payment_intent.succeeded",
        kind=NoticeKind.PAYMENT,
        status=PaymentStatus.SUCCEEDED,
        occurred_at_ms=5,
    )
    applied = decide(state, notice)
    assert applied.state is not None and applied.state.version == 2
    remember(tables, notice, applied, partition=0, now_ms=0)
    seen = recall(tables, notice, applied.state, now_ms=DAY_MS - 1)
    assert seen is not None and seen.ignored == "duplicate_event"
    assert recall(tables, notice, applied.state, now_ms=DAY_MS) is None  # this ttl: 1 day


def test_faust_scan_seeks_in_the_partitions_rocksdb(tmp_path: Path) -> None:
    """The scan reads the partition's RocksDB database (raw mode, as faust opens it) in key
    order from the prefix on. Keys are stored the way faust serializes a `str` key: JSON."""
    db = Rdict(str(tmp_path / "p3"), options=Options(raw_mode=True))
    try:
        keys = ["k:b", "x:0003:0000000000200:b", "x:0003:0000000000100:a", "k:a"]
        for key in keys:
            db[json.dumps(key).encode()] = b"1"
        db[b"__faust\x00offset__"] = b"7"
        store = types.SimpleNamespace(
            _db_for_partition=lambda p: db,
            _encode_key=lambda k: json.dumps(k).encode(),
            _decode_key=lambda raw: json.loads(raw),
        )
        scan = faust_scan(types.SimpleNamespace(data=store))
        assert list(scan(3, "x:0003:")) == ["x:0003:0000000000100:a", "x:0003:0000000000200:b"]
        assert list(scan(3, "k:")) == ["k:a", "k:b", *sorted(keys)[2:]]
    finally:
        db.close()
