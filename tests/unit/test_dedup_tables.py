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


def _due_index() -> tuple[dict[str, object], DueIndex]:
    data: dict[str, object] = {}

    def scan(partition: int, prefix: str) -> Iterator[str]:
        yield from sorted(k for k in data if k >= prefix)

    return data, DueIndex(data, scan)


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
    index.set("pay_b", 2_000, partition=1)
    index.set("pay_a", 1_000, partition=1)
    index.set("pay_c", 1_500, partition=2)
    assert index.due(1, now_ms=1_999) == [(1_000, "pay_a")]
    assert index.due(1, now_ms=5_000) == [(1_000, "pay_a"), (2_000, "pay_b")]
    index.set("pay_a", 9_000, partition=1)  # checked: its next check moves later
    assert index.upcoming(1) == [(2_000, "pay_b"), (9_000, "pay_a")]
    index.set("pay_b", None, partition=1)  # settled: no more checks
    assert index.upcoming(1) == [(9_000, "pay_a")] and index.upcoming(2) == [(1_500, "pay_c")]
    assert len(data) == 4  # two entries for each payment still scheduled


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
