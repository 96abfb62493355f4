"""`GET /v1/payments` and `GET /v1/refunds`: admin listings, answered from Redis only.

A listing walks one sorted-set index of the read model (streams/indexes.py), newest first,
and reads the documents of each chunk in one pipelined round trip. The narrowest index the
filters allow is chosen (order > user > gateway > all; payment > all for refunds); every
filter is then checked on the documents, status always (it changes, so it is not indexed).

Items are ordered by (created_at_ms, id), both descending: Redis orders members of equal
score by id, so the order is total. The cursor is the (score, id) of the last item returned
or scanned; the next page starts strictly after it, so pages have neither gaps nor
duplicates even when many items share a millisecond. A request scans at most `MAX_CHUNKS`
chunks: a selective filter over a large index answers with fewer items (maybe none) and a
cursor to go on, never with an unbounded scan.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, get_args

from redis.exceptions import RedisError
from starlette.requests import Request
from starlette.responses import JSONResponse

from domain.keys import Role
from domain.refunds import RefundState
from domain.status import PaymentStatus
from ingress.auth import guard
from ingress.errors import ApiError
from ingress.models import GatewayName
from streams import indexes
from streams.readmodel import payment_key, refund_key

DEFAULT_LIMIT = 50
MAX_LIMIT = 200
MAX_CHUNKS = 20
FILTERED_CHUNK = 100  # index rows per step when documents must be filtered
MAX_MS = 10**15  # far beyond any real timestamp; keeps scores exact in a double

_ID = re.compile(r"^[A-Za-z0-9_.:\-]{1,128}$")
_DIGITS = re.compile(r"^[0-9]{1,16}$")
_GATEWAYS = frozenset(get_args(GatewayName))
_PAYMENT_STATUSES = frozenset(s.value for s in PaymentStatus)
_REFUND_STATUSES = frozenset(s.value for s in RefundState)

Row = tuple[str, int]  # (id, created_at_ms): one index entry
# (max score, min score, offset, count) -> rows, newest first; scores inclusive, as Redis
FetchRows = Callable[[str, str, int, int], Awaitable[list[Row]]]
FetchDocs = Callable[[list[str]], Awaitable[list[dict[str, Any] | None]]]
# (score, id) -> how many rows come before-or-at it among those with that score (0: unknown)
Locate = Callable[[int, str], Awaitable[int]]


# -- cursor ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Cursor:
    kind: str  # "payments" | "refunds": a cursor only continues the listing it came from
    score: int
    id: str


def encode_cursor(cursor: Cursor) -> str:
    raw = json.dumps([cursor.kind, cursor.score, cursor.id], separators=(",", ":"))
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode_cursor(text: str, kind: str) -> Cursor:
    """The cursor in `text`; ValueError when it is not one this listing handed out."""
    if not text or len(text) > 512:
        raise ValueError("malformed cursor")
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
        value = json.loads(raw)
    except (binascii.Error, ValueError):
        raise ValueError("malformed cursor") from None
    if (
        not isinstance(value, list)
        or len(value) != 3
        or value[0] != kind
        or type(value[1]) is not int
        or not 0 <= value[1] <= MAX_MS
        or not isinstance(value[2], str)
        or not _ID.match(value[2])
    ):
        raise ValueError("malformed cursor")
    return Cursor(kind, value[1], value[2])


# -- query parameters ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Query:
    kind: str
    index: str  # the sorted set to walk
    filters: dict[str, str] = field(default_factory=dict)  # document field -> required value
    exact: bool = True  # the index alone satisfies every filter
    created_from: int | None = None
    created_to: int | None = None
    limit: int = DEFAULT_LIMIT
    cursor: Cursor | None = None


@dataclass(frozen=True, slots=True)
class _Spec:
    kind: str
    all_index: str
    # (query parameter, index key builder), narrowest first
    indexed: tuple[tuple[str, Callable[[str], str]], ...]
    id_params: frozenset[str]
    statuses: frozenset[str]
    enums: dict[str, frozenset[str]] = field(default_factory=dict)


PAYMENTS = _Spec(
    kind="payments",
    all_index=indexes.PAYMENTS_ALL,
    indexed=(
        ("order_id", indexes.payments_by_order),
        ("user_id", indexes.payments_by_user),
        ("gateway", indexes.payments_by_gateway),
    ),
    id_params=frozenset({"order_id", "user_id"}),
    statuses=_PAYMENT_STATUSES,
    enums={"gateway": _GATEWAYS},
)
REFUNDS = _Spec(
    kind="refunds",
    all_index=indexes.REFUNDS_ALL,
    indexed=(("payment_id", indexes.refunds_by_payment),),
    id_params=frozenset({"payment_id"}),
    statuses=_REFUND_STATUSES,
)

_COMMON = ("status", "created_from", "created_to", "limit", "cursor")


def allowed_params(spec: _Spec) -> frozenset[str]:
    return frozenset(_COMMON) | {name for name, _ in spec.indexed}


def parse_query(spec: _Spec, items: Iterable[tuple[str, str]]) -> Query:
    """Validate the query string; ApiError 400 `invalid_request` lists every bad parameter."""
    allowed = allowed_params(spec)
    problems: list[dict[str, Any]] = []
    params: dict[str, str] = {}
    for name, value in items:
        if name not in allowed:
            problems.append({"field": name, "message": "unknown query parameter"})
        elif name in params:
            problems.append({"field": name, "message": "given more than once"})
        else:
            params[name] = value

    def bad(name: str, message: str) -> None:
        problems.append({"field": name, "message": message})

    limit = DEFAULT_LIMIT
    if "limit" in params:
        text = params["limit"]
        if not _DIGITS.match(text) or not 1 <= int(text) <= MAX_LIMIT:
            bad("limit", f"an integer from 1 to {MAX_LIMIT}")
        else:
            limit = int(text)

    created: dict[str, int | None] = {"created_from": None, "created_to": None}
    for name in created:
        if name in params:
            text = params[name]
            if not _DIGITS.match(text) or int(text) > MAX_MS:
                bad(name, "milliseconds since the epoch, a non-negative integer")
            else:
                created[name] = int(text)
    lo, hi = created["created_from"], created["created_to"]
    if lo is not None and hi is not None and lo > hi:
        bad("created_from", "must not be after created_to")

    filters: dict[str, str] = {}
    if "status" in params:
        if params["status"] not in spec.statuses:
            bad("status", "one of " + ", ".join(sorted(spec.statuses)))
        else:
            filters["status"] = params["status"]
    for name, _ in spec.indexed:
        if name not in params:
            continue
        value = params[name]
        if name in spec.enums and value not in spec.enums[name]:
            bad(name, "one of " + ", ".join(sorted(spec.enums[name])))
        elif name in spec.id_params and not _ID.match(value):
            bad(name, "1-128 characters of A-Z a-z 0-9 _ . : -")
        else:
            filters[name] = value

    cursor = None
    if "cursor" in params:
        try:
            cursor = decode_cursor(params["cursor"], spec.kind)
        except ValueError:
            bad("cursor", "not a cursor from this listing; start again without one")

    if problems:
        raise ApiError(400, "invalid_request", "invalid query parameters", details=problems)

    index, covered = spec.all_index, None
    for name, key_of in spec.indexed:
        if name in filters:
            index, covered = key_of(filters[name]), name
            break
    return Query(
        kind=spec.kind,
        index=index,
        filters=filters,
        exact=set(filters) <= {covered},
        created_from=lo,
        created_to=hi,
        limit=limit,
        cursor=cursor,
    )


# -- the walk ------------------------------------------------------------------------------


def matches(doc: dict[str, Any], filters: dict[str, str]) -> bool:
    return all(doc.get(name) == value for name, value in filters.items())


async def walk(
    query: Query, fetch_rows: FetchRows, fetch_docs: FetchDocs, locate: Locate | None = None
) -> tuple[list[dict[str, Any]], Cursor | None]:
    """Up to `query.limit` matching documents, newest first, and the cursor after them (None
    when the index has nothing more). Each item gets `created_at_ms`, its index score.

    `locate` lets a page that resumes inside a run of equal scores jump straight past the
    rows already seen; without it (or when the cursor's id is not in this index) those rows
    are read and dropped. Either way the id comparison below is what rules out duplicates.
    """
    limit = query.limit
    chunk = limit + 1 if query.exact else max(limit, FILTERED_CHUNK)
    floor = "-inf" if query.created_from is None else str(query.created_from)

    # Position: rows with score <= bound, minus those at score == bound with id >= after
    # (already seen); `offset` skips rows at the top of the range known to be seen.
    bound: int | None = query.created_to
    after: str | None = None
    if query.cursor is not None and (bound is None or query.cursor.score <= bound):
        bound, after = query.cursor.score, query.cursor.id
    offset = 0
    if bound is not None and after is not None and locate is not None:
        offset = await locate(bound, after)

    items: list[dict[str, Any]] = []
    last_id, last_score = "", 0
    scanned = 0
    while scanned < MAX_CHUNKS:
        rows = await fetch_rows("+inf" if bound is None else str(bound), floor, offset, chunk)
        # Rows seen on an earlier page are a prefix of `rows` (same score, higher id). A
        # chunk of nothing else reads no documents and is not counted against the budget:
        # it can only be the head of one millisecond's run of ties.
        fresh = [
            (rid, score)
            for rid, score in rows
            if not (after is not None and score == bound and rid >= after)
        ]
        if fresh:
            scanned += 1
        docs = await fetch_docs([rid for rid, _ in fresh]) if fresh else []
        for i, ((rid, score), doc) in enumerate(zip(fresh, docs, strict=True)):
            if doc is None or not matches(doc, query.filters):
                continue
            items.append(doc | {"created_at_ms": score})
            if len(items) == limit:
                more = i < len(fresh) - 1 or len(rows) == chunk
                return items, Cursor(query.kind, score, rid) if more else None
        if len(rows) < chunk:
            return items, None
        last_id, last_score = rows[-1]
        if last_score == bound:
            offset += len(rows)  # still inside the run of rows sharing the bound's score
        else:
            bound, after = last_score, last_id
            offset = sum(1 for _, score in rows if score == last_score)
    # Scan budget spent: continue after the last row scanned (a fresh one, so never behind
    # where this page started).
    return items, Cursor(query.kind, last_score, last_id)


# -- endpoints -----------------------------------------------------------------------------


async def _list(request: Request, spec: _Spec, doc_key: Callable[[str], str]) -> JSONResponse:
    query = parse_query(spec, request.query_params.multi_items())
    redis = request.app.state.redis

    async def fetch_rows(top: str, floor: str, offset: int, count: int) -> list[Row]:
        rows = await redis.zrevrangebyscore(
            query.index, top, floor, start=offset, num=count, withscores=True
        )
        return [(_text(member), int(score)) for member, score in rows]

    async def fetch_docs(ids: list[str]) -> list[dict[str, Any] | None]:
        pipe = redis.pipeline(transaction=False)
        for rid in ids:
            pipe.hget(doc_key(rid), "doc")
        return [None if raw is None else json.loads(raw) for raw in await pipe.execute()]

    async def locate(score: int, rid: str) -> int:
        pipe = redis.pipeline(transaction=False)
        pipe.zscore(query.index, rid)
        pipe.zrevrank(query.index, rid)
        pipe.zcount(query.index, f"({score}", "+inf")
        found, rank, above = await pipe.execute()
        if found is None or rank is None or int(found) != score:
            return 0
        return max(0, int(rank) - int(above) + 1)

    try:
        items, cursor = await walk(query, fetch_rows, fetch_docs, locate)
    except RedisError:
        raise ApiError(
            503, "read_model_unavailable", f"the {spec.kind} listing is unavailable; retry"
        ) from None
    return JSONResponse(
        {"data": items, "next_cursor": None if cursor is None else encode_cursor(cursor)}
    )


def _text(member: bytes | str) -> str:
    return member.decode() if isinstance(member, bytes) else member


async def list_payments(request: Request) -> JSONResponse:
    await guard(request, Role.ADMIN)
    return await _list(request, PAYMENTS, payment_key)


async def list_refunds(request: Request) -> JSONResponse:
    await guard(request, Role.ADMIN)
    return await _list(request, REFUNDS, refund_key)
