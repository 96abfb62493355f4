"""Tumbling-window payment metrics: windows, totals, percentiles, redelivery and the record."""

from __future__ import annotations

import random

from hypothesis import given
from hypothesis import strategies as st

from domain.metrics import (
    Attempt,
    Window,
    add,
    add_once,
    latency_bucket,
    parse_key,
    percentile,
    to_record,
    upper,
    windows_for,
)
from schemas import codec


def attempt(**kw: object) -> Attempt:
    base: dict[str, object] = dict(
        gateway="stripe", payment_method="card", currency="USD", operation="authorize",
        outcome="succeeded", amount=1000, latency_ms=120, occurred_at_ms=1_795_492_790_123,
    )  # fmt: skip
    return Attempt(**(base | kw))  # type: ignore[arg-type]


def test_an_instant_falls_in_one_window_of_each_size() -> None:
    minute, hour = windows_for(1_795_492_790_123, (60, 3600))
    assert minute == Window(60, 1_795_492_740_000) and minute.end_ms == 1_795_492_800_000
    assert hour.start_ms == 1_795_489_200_000 and hour.size_s == 3600
    assert parse_key(minute.key("stripe|card|USD")) == (minute, "stripe|card|USD")


def test_totals_count_each_kind_of_call() -> None:
    totals = None
    for a in (
        attempt(),
        attempt(outcome="authorized", amount=500),
        attempt(outcome="failed", decline_code="insufficient_funds"),
        attempt(outcome="failed", decline_code="insufficient_funds"),
        attempt(outcome="failed", error_code="gateway_circuit_open"),
        attempt(outcome="unknown", error_code="gateway_timeout"),
        attempt(operation="capture", outcome="succeeded"),
        attempt(operation="refund", outcome="processed", amount=300),
        attempt(operation="refund", outcome="failed", amount=300),
    ):
        totals = add(totals, a)
    assert totals is not None
    record = to_record(Window(60, 0), "stripe|card|USD", totals, final=False, emitted_at_ms=1)
    assert {k: record[k] for k in ("attempts", "successes", "failures", "pending")} == {
        "attempts": 6, "successes": 2, "failures": 3, "pending": 1,
    }  # fmt: skip
    assert record["failures_by_code"] == {"insufficient_funds": 2, "gateway_circuit_open": 1}
    assert record["success_rate"] == 2 / 6
    assert record["volume"] == 1500  # successful authorizations only
    assert (record["refunds"], record["refund_volume"], record["refund_failures"]) == (1, 300, 1)
    assert record["calls"] == 9 and record["latency_ms_max"] == 120


def test_the_record_encodes_as_avro() -> None:
    totals = add(None, attempt(currency="JPY", amount=1200))
    record = to_record(Window(3600, 0), "square|card|JPY", totals, final=True, emitted_at_ms=5)
    data = codec("payment_metrics").encode(record)
    back = codec("payment_metrics").decode(data)
    assert back["currency"] == "JPY" and back["volume"] == 1200 and back["final"] is True


def test_an_empty_window_has_no_rate_or_percentiles() -> None:
    totals = add(None, attempt(operation="capture"))
    record = to_record(Window(60, 0), "stripe|card|USD", totals, final=False, emitted_at_ms=1)
    assert record["attempts"] == 0 and record["success_rate"] is None
    assert record["latency_ms_p50"] == 120  # the capture call still has a latency


def test_a_redelivered_record_is_not_added_twice() -> None:
    once = add_once(None, attempt(), (3, 41))
    assert once is not None and once["attempts"] == 1
    assert add_once(once, attempt(), (3, 41)) is None
    assert add_once(once, attempt(), (3, 40)) is None  # older offset of the same partition
    twice = add_once(once, attempt(), (5, 2))  # another source partition
    assert twice is not None and twice["attempts"] == 2


@given(st.integers(min_value=0, max_value=600_000))
def test_a_latency_lies_in_its_bucket(ms: int) -> None:
    i = latency_bucket(ms)
    assert ms <= upper(i) and (i == 0 or ms > upper(i - 1))


@given(st.lists(st.integers(min_value=0, max_value=120_000), min_size=1, max_size=400))
def test_percentiles_are_within_five_percent_above_the_nearest_rank(latencies: list[int]) -> None:
    totals = None
    for ms in latencies:
        totals = add(totals, attempt(latency_ms=ms))
    assert totals is not None
    ordered = sorted(latencies)
    for q in (0.5, 0.95, 0.99):
        exact = ordered[max(1, -(-int(q * 1000) * len(ordered) // 1000)) - 1]
        got = percentile(totals, q)
        assert got is not None and exact <= got <= max(exact * 1.05 + 1, exact)


def test_totals_do_not_depend_on_the_order_of_calls() -> None:
    calls = [attempt(latency_ms=random.Random(i).randint(1, 3000), outcome=o)
             for i, o in enumerate(["succeeded", "failed", "unknown"] * 20)]  # fmt: skip
    forward, backward = None, None
    for a in calls:
        forward = add(forward, a)
    for a in reversed(calls):
        backward = add(backward, a)
    assert forward == backward
