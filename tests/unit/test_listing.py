"""The admin listings without services: cursors, query validation, and the index walk over an
in-memory sorted set that orders like Redis (score, then id, both descending)."""

from __future__ import annotations

import asyncio
import base64
import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ingress import listing
from ingress.errors import ApiError
from ingress.listing import (
    MAX_CHUNKS,
    PAYMENTS,
    REFUNDS,
    Cursor,
    Query,
    decode_cursor,
    encode_cursor,
    parse_query,
    walk,
)
from streams import indexes

# -- cursor ------------------------------------------------------------------------------


def test_cursor_round_trips_and_is_url_safe() -> None:
    for cursor in (
        Cursor("payments", 1_700_000_000_123, "pay_abc"),
        Cursor("refunds", 0, "re_x"),
        Cursor("payments", 10**15, "a" * 128),
    ):
        text = encode_cursor(cursor)
        assert set(text) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")
        assert decode_cursor(text, cursor.kind) == cursor


def _raw(value: Any) -> str:
    return base64.urlsafe_b64encode(json.dumps(value).encode()).decode().rstrip("=")


@pytest.mark.parametrize(
    "text",
    [
        "",
        "not base64!",
        "%%%",
        _raw({"score": 1, "id": "pay_a"}),
        _raw(["payments", 1]),
        _raw(["refunds", 1, "re_a"]),  # another listing's cursor
        _raw(["payments", -1, "pay_a"]),
        _raw(["payments", 1.5, "pay_a"]),
        _raw(["payments", True, "pay_a"]),
        _raw(["payments", "1", "pay_a"]),
        _raw(["payments", 10**16, "pay_a"]),
        _raw(["payments", 1, ""]),
        _raw(["payments", 1, "pay a"]),
        _raw(["payments", 1, None]),
        "x" * 600,
    ],
)
def test_a_bad_cursor_is_refused(text: str) -> None:
    with pytest.raises(ValueError):
        decode_cursor(text, "payments")


# -- query parameters ----------------------------------------------------------------------


def _bad_fields(spec: Any, items: list[tuple[str, str]]) -> set[str]:
    with pytest.raises(ApiError) as err:
        parse_query(spec, items)
    assert err.value.status == 400 and err.value.code == "invalid_request"
    assert err.value.details
    return {d["field"] for d in err.value.details}


def test_defaults() -> None:
    q = parse_query(PAYMENTS, [])
    assert q == Query(kind="payments", index=indexes.PAYMENTS_ALL, limit=50)
    assert q.exact and q.cursor is None


@pytest.mark.parametrize("value", ["0", "201", "-1", "abc", "1.5", " 5", "", "1e2", "+5"])
def test_limit_must_be_an_integer_from_1_to_200(value: str) -> None:
    assert _bad_fields(PAYMENTS, [("limit", value)]) == {"limit"}


@pytest.mark.parametrize("value", ["1", "200", "7"])
def test_limit_in_range(value: str) -> None:
    assert parse_query(PAYMENTS, [("limit", value)]).limit == int(value)


def test_unknown_and_repeated_parameters_are_refused() -> None:
    assert _bad_fields(PAYMENTS, [("payment_id", "pay_a")]) == {"payment_id"}
    assert _bad_fields(REFUNDS, [("user_id", "u")]) == {"user_id"}
    assert _bad_fields(PAYMENTS, [("foo", "1")]) == {"foo"}
    assert _bad_fields(PAYMENTS, [("status", "failed"), ("status", "pending")]) == {"status"}


def test_status_gateway_and_ids_are_checked() -> None:
    assert _bad_fields(PAYMENTS, [("status", "settled")]) == {"status"}
    assert _bad_fields(REFUNDS, [("status", "succeeded")]) == {"status"}
    assert _bad_fields(PAYMENTS, [("gateway", "adyen")]) == {"gateway"}
    assert _bad_fields(PAYMENTS, [("user_id", "")]) == {"user_id"}
    assert _bad_fields(PAYMENTS, [("order_id", "a b")]) == {"order_id"}
    assert _bad_fields(REFUNDS, [("payment_id", "x" * 129)]) == {"payment_id"}
    assert parse_query(REFUNDS, [("status", "processed")]).filters == {"status": "processed"}


def test_created_range_is_checked() -> None:
    assert _bad_fields(PAYMENTS, [("created_from", "yesterday")]) == {"created_from"}
    assert _bad_fields(PAYMENTS, [("created_to", "-5")]) == {"created_to"}
    assert _bad_fields(PAYMENTS, [("created_from", "10"), ("created_to", "9")]) == {"created_from"}
    q = parse_query(PAYMENTS, [("created_from", "10"), ("created_to", "10")])
    assert (q.created_from, q.created_to) == (10, 10)


def test_every_problem_is_listed_at_once() -> None:
    fields = _bad_fields(
        PAYMENTS, [("limit", "x"), ("cursor", "nope"), ("status", "?"), ("colour", "red")]
    )
    assert fields == {"limit", "cursor", "status", "colour"}


def test_the_narrowest_index_is_chosen() -> None:
    everything = [("gateway", "stripe"), ("user_id", "u-1"), ("order_id", "o-1")]
    q = parse_query(PAYMENTS, everything)
    assert q.index == indexes.payments_by_order("o-1") and not q.exact
    q = parse_query(PAYMENTS, everything[:2])
    assert q.index == indexes.payments_by_user("u-1") and not q.exact
    q = parse_query(PAYMENTS, everything[:1])
    assert q.index == indexes.payments_by_gateway("stripe") and q.exact
    q = parse_query(PAYMENTS, [("status", "failed")])
    assert q.index == indexes.PAYMENTS_ALL and not q.exact
    q = parse_query(REFUNDS, [("payment_id", "pay_a")])
    assert q.index == indexes.refunds_by_payment("pay_a") and q.exact
    assert parse_query(REFUNDS, []).index == indexes.REFUNDS_ALL


def test_cursor_parameter() -> None:
    cursor = Cursor("refunds", 5, "re_a")
    assert parse_query(REFUNDS, [("cursor", encode_cursor(cursor))]).cursor == cursor
    assert _bad_fields(PAYMENTS, [("cursor", encode_cursor(cursor))]) == {"cursor"}


# -- the walk ------------------------------------------------------------------------------


class FakeIndex:
    """A sorted set read like ZREVRANGEBYSCORE ... WITHSCORES LIMIT, plus the documents."""

    def __init__(self, docs: dict[str, dict[str, Any]], scores: dict[str, int]) -> None:
        self.docs = docs
        self.scores = scores
        self.calls = 0

    async def fetch_rows(self, top: str, floor: str, offset: int, count: int) -> list[Any]:
        self.calls += 1
        hi = float(top)
        lo = float(floor)
        rows = sorted(
            ((i, s) for i, s in self.scores.items() if lo <= s <= hi),
            key=lambda r: (r[1], r[0]),
            reverse=True,
        )
        return rows[offset : offset + count]

    async def fetch_docs(self, ids: list[str]) -> list[dict[str, Any] | None]:
        return [self.docs.get(i) for i in ids]

    async def locate(self, score: int, rid: str) -> int:
        """Like ZSCORE, ZREVRANK and ZCOUNT (score +inf together."""
        if self.scores.get(rid) != score:
            return 0
        ranked = sorted(self.scores.items(), key=lambda r: (r[1], r[0]), reverse=True)
        rank = ranked.index((rid, score))
        above = sum(1 for s in self.scores.values() if s > score)
        return rank - above + 1

    def expected(self, query: Query) -> list[str]:
        lo = -1 if query.created_from is None else query.created_from
        hi = 10**16 if query.created_to is None else query.created_to
        return [
            i
            for i, s in sorted(self.scores.items(), key=lambda r: (r[1], r[0]), reverse=True)
            if lo <= s <= hi
            and i in self.docs
            and all(self.docs[i].get(k) == v for k, v in query.filters.items())
        ]


def page_through(index: FakeIndex, query: Query, locate: bool = True) -> tuple[list[str], int]:
    seen: list[str] = []
    pages = 0
    cursor = query.cursor
    while True:
        index.calls = 0
        items, nxt = asyncio.run(
            walk(
                _with(query, cursor),
                index.fetch_rows,
                index.fetch_docs,
                index.locate if locate else None,
            )
        )
        if locate:  # without it, rows seen before are read again (not counted) and dropped
            assert index.calls <= MAX_CHUNKS
        assert len(items) <= query.limit
        pages += 1
        assert pages <= len(index.scores) + 2, "paging does not progress"
        for item in items:
            assert item["created_at_ms"] == index.scores[item["id"]]
        seen.extend(item["id"] for item in items)
        if nxt is None:
            return seen, pages
        # the cursor survives its text form
        cursor = decode_cursor(encode_cursor(nxt), query.kind)


def _with(query: Query, cursor: Cursor | None) -> Query:
    return Query(
        kind=query.kind,
        index=query.index,
        filters=query.filters,
        exact=query.exact,
        created_from=query.created_from,
        created_to=query.created_to,
        limit=query.limit,
        cursor=cursor,
    )


def _make(n: int, distinct_ms: int, seed_status: list[str]) -> FakeIndex:
    docs = {}
    scores = {}
    for k in range(n):
        rid = f"pay_{k:04d}"
        docs[rid] = {"id": rid, "status": seed_status[k % len(seed_status)]}
        scores[rid] = 1000 + (k % distinct_ms)
    return FakeIndex(docs, scores)


@settings(max_examples=150, deadline=None)
@given(
    n=st.integers(0, 120),
    distinct_ms=st.integers(1, 8),  # few distinct scores: long runs of ties
    statuses=st.lists(st.sampled_from(["failed", "succeeded", "pending"]), min_size=1, max_size=5),
    limit=st.integers(1, 7),
    status=st.sampled_from([None, "failed", "succeeded"]),
    bounds=st.tuples(st.integers(995, 1010), st.integers(995, 1010)),
    use_range=st.booleans(),
    missing=st.sets(st.integers(0, 119), max_size=5),
    locate=st.booleans(),
)
def test_paging_returns_every_match_once_newest_first(
    n: int,
    distinct_ms: int,
    statuses: list[str],
    limit: int,
    status: str | None,
    bounds: tuple[int, int],
    use_range: bool,
    missing: set[int],
    locate: bool,
) -> None:
    index = _make(n, distinct_ms, statuses)
    for k in missing:  # an index entry whose document is gone is skipped, not an error
        index.docs.pop(f"pay_{k:04d}", None)
    lo, hi = sorted(bounds)
    filters = {} if status is None else {"status": status}
    query = Query(
        kind="payments",
        index="idx",
        filters=filters,
        exact=not filters,
        created_from=lo if use_range else None,
        created_to=hi if use_range else None,
        limit=limit,
    )
    seen, _ = page_through(index, query, locate)
    assert seen == index.expected(query)


@pytest.mark.parametrize("locate", [True, False])
def test_ties_across_pages_in_one_millisecond(locate: bool) -> None:
    index = _make(25, 1, ["succeeded"])  # all in the same ms
    query = Query(kind="payments", index="idx", limit=2)
    seen, pages = page_through(index, query, locate)
    assert seen == sorted(index.scores, reverse=True)
    assert pages == 13


@pytest.mark.parametrize("locate", [True, False])
def test_a_run_of_ties_longer_than_the_scan_budget(locate: bool) -> None:
    n = MAX_CHUNKS * listing.FILTERED_CHUNK * 3  # all in one ms, 1 in 500 failed
    index = _make(n, 1, ["failed"] + ["succeeded"] * 499)
    query = Query(
        kind="payments", index="idx", filters={"status": "failed"}, exact=False, limit=200
    )
    seen, pages = page_through(index, query, locate)
    assert seen == index.expected(query) and len(seen) == n // 500
    assert pages == 2  # the first spent its budget inside the run; the second went on


def test_an_exact_listing_knows_when_it_is_done() -> None:
    index = _make(4, 4, ["succeeded"])
    items, cursor = asyncio.run(
        walk(Query(kind="payments", index="idx", limit=4), index.fetch_rows, index.fetch_docs)
    )
    assert len(items) == 4 and cursor is None
    items, cursor = asyncio.run(
        walk(Query(kind="payments", index="idx", limit=3), index.fetch_rows, index.fetch_docs)
    )
    assert len(items) == 3 and cursor == Cursor("payments", 1001, "pay_0001")


def test_a_selective_filter_is_bounded_and_resumable() -> None:
    n = MAX_CHUNKS * listing.FILTERED_CHUNK * 2 + 10
    index = _make(n, 1000, ["succeeded"])
    index.docs["pay_0003"]["status"] = "failed"  # the oldest-but-a-few: found late
    query = Query(kind="payments", index="idx", filters={"status": "failed"}, exact=False, limit=10)
    index.calls = 0
    items, cursor = asyncio.run(walk(query, index.fetch_rows, index.fetch_docs))
    assert items == [] and cursor is not None
    assert index.calls == MAX_CHUNKS
    seen, pages = page_through(index, query)
    assert seen == ["pay_0003"] and pages == 3


def test_a_cursor_above_created_to_starts_at_created_to() -> None:
    index = _make(10, 10, ["succeeded"])  # scores 1000..1009
    query = Query(
        kind="payments",
        index="idx",
        created_to=1004,
        limit=3,
        cursor=Cursor("payments", 1008, "pay_0008"),
    )
    items, _ = asyncio.run(walk(query, index.fetch_rows, index.fetch_docs))
    assert [i["id"] for i in items] == ["pay_0004", "pay_0003", "pay_0002"]


def test_index_keys_and_queueing() -> None:
    class Pipe:
        def __init__(self) -> None:
            self.calls: list[tuple[str, dict[str, int], bool]] = []

        def zadd(self, key: str, mapping: dict[str, int], lt: bool = False) -> None:
            self.calls.append((key, mapping, lt))

    from datetime import UTC, datetime

    pipe = Pipe()
    rec = {
        "payment_id": "pay_a",
        "seq": 1,
        "user_id": "u-1",
        "order_id": "o-1",
        "gateway": "square",
        "occurred_at": datetime(2024, 1, 1, tzinfo=UTC),
    }
    indexes.queue_payment_index(pipe, rec)
    ms = 1_704_067_200_000
    assert pipe.calls == [
        ("payments:idx:payments:all", {"pay_a": ms}, True),
        ("payments:idx:payments:user:u-1", {"pay_a": ms}, True),
        ("payments:idx:payments:order:o-1", {"pay_a": ms}, True),
        ("payments:idx:payments:gateway:square", {"pay_a": ms}, True),
    ]
    # a later record (maybe a webhook's whole-second gateway time) never moves the entry
    pipe = Pipe()
    indexes.queue_payment_index(pipe, rec | {"seq": 2, "occurred_at": 1_704_067_199_000})
    assert pipe.calls == []

    refund = {"refund_id": "re_a", "payment_id": "pay_a", "seq": 1, "occurred_at": 5}
    pipe = Pipe()
    indexes.queue_refund_index(pipe, refund)
    assert pipe.calls == [
        ("payments:idx:refunds:all", {"re_a": 5}, True),
        ("payments:idx:refunds:payment:pay_a", {"re_a": 5}, True),
    ]
    pipe = Pipe()
    indexes.queue_refund_index(pipe, refund | {"seq": 2, "occurred_at": 0})
    assert pipe.calls == []
