"""`GET /v1/payments` and `GET /v1/refunds` against the real stack: filters, newest first, and
cursor paging that returns every match exactly once.

Other tests share the stack and create payments at the same time, so every assertion is
scoped by user and order ids generated here, or checks only that ours are present.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import redis

from payments.devstack import DevStack
from streams import indexes
from streams.readmodel import dumps, payment_key
from tests.integration.helpers import api_client, payment_body, post_payment, wait_status

pytestmark = pytest.mark.stack


@pytest.fixture(scope="module")
def client(stack: DevStack) -> httpx.Client:
    return api_client(stack, timeout=15)


def _uid(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def listed(client: httpx.Client, path: str, **params: Any) -> dict[str, Any]:
    r = client.get(path, params=params)
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    assert set(body) == {"data", "next_cursor"}
    return body


def ids(client: httpx.Client, path: str, **params: Any) -> list[str]:
    body = listed(client, path, **params)
    key = "refund_id" if path.startswith("/v1/refunds") else "payment_id"
    return [item[key] for item in body["data"]]


def page_all(client: httpx.Client, path: str, **params: Any) -> tuple[list[dict[str, Any]], int]:
    """Every item over every page; asserts newest first across pages and no repeats."""
    key = "refund_id" if path.startswith("/v1/refunds") else "payment_id"
    items: list[dict[str, Any]] = []
    cursor: str | None = None
    pages = 0
    while True:
        body = listed(client, path, **params, **({"cursor": cursor} if cursor else {}))
        pages += 1
        assert len(body["data"]) <= int(params.get("limit", 50))
        items.extend(body["data"])
        cursor = body["next_cursor"]
        if cursor is None:
            break
        assert pages < 1000
    order = [(item["created_at_ms"], item[key]) for item in items]
    assert order == sorted(order, reverse=True), "not newest first across pages"
    assert len({item[key] for item in items}) == len(items), "an item was listed twice"
    return items, pages


@pytest.fixture(scope="module")
def made(client: httpx.Client) -> dict[str, Any]:
    """Five payments, one after the other (so each has its own creation millisecond)."""
    user_a, user_b, order = _uid("u-list-a"), _uid("u-list-b"), _uid("o-list")
    plan = [
        ("a_visa", user_a, "stripe", "pm_card_visa", _uid("o-list"), "succeeded"),
        ("a_declined", user_a, "stripe", "pm_card_chargeDeclined", order, "failed"),
        ("a_square", user_a, "square", "cnon:card-nonce-ok", order, "succeeded"),  # a retry
        ("b_visa", user_b, "stripe", "pm_card_visa", _uid("o-list"), "succeeded"),
        ("b_square", user_b, "square", "cnon:card-nonce-ok", _uid("o-list"), "succeeded"),
    ]
    out: dict[str, Any] = {"user_a": user_a, "user_b": user_b, "order": order}
    for name, user, gateway, token, order_id, status in plan:
        body = payment_body(token, user_id=user, gateway=gateway, order_id=order_id)
        r = post_payment(client, body)  # POST /v1/payments still answers beside the GET
        assert r.status_code == 202, r.text
        pid = r.json()["payment_id"]
        # a capture may follow `authorized`: wait for the final status itself
        wait_status(client, pid, {status})
        out[name] = pid
        time.sleep(0.005)
    return out


def test_by_user_newest_first_with_creation_time(client: httpx.Client, made: dict) -> None:
    body = listed(client, "/v1/payments", user_id=made["user_a"])
    got = [p["payment_id"] for p in body["data"]]
    assert got == [made["a_square"], made["a_declined"], made["a_visa"]]
    assert body["next_cursor"] is None
    created = [p["created_at_ms"] for p in body["data"]]
    assert created[0] > created[1] > created[2]
    for item in body["data"]:  # the item is the GET document plus its creation time
        doc = client.get(f"/v1/payments/{item['payment_id']}").json()
        assert {k: v for k, v in item.items() if k != "created_at_ms"} == doc
    assert ids(client, "/v1/payments", user_id=made["user_b"]) == [
        made["b_square"],
        made["b_visa"],
    ]


def test_by_status(client: httpx.Client, made: dict) -> None:
    user_a = made["user_a"]
    assert ids(client, "/v1/payments", user_id=user_a, status="failed") == [made["a_declined"]]
    assert ids(client, "/v1/payments", user_id=user_a, status="succeeded") == [
        made["a_square"],
        made["a_visa"],
    ]
    assert ids(client, "/v1/payments", user_id=user_a, status="refunded") == []
    failed, _ = page_all(client, "/v1/payments", status="failed", limit=200)
    assert made["a_declined"] in {p["payment_id"] for p in failed}
    assert all(p["status"] == "failed" for p in failed)


def test_by_gateway(client: httpx.Client, made: dict) -> None:
    assert ids(client, "/v1/payments", user_id=made["user_a"], gateway="square") == [
        made["a_square"]
    ]
    assert ids(client, "/v1/payments", user_id=made["user_b"], gateway="stripe") == [made["b_visa"]]
    square, _ = page_all(client, "/v1/payments", gateway="square", limit=200)
    assert {made["a_square"], made["b_square"]} <= {p["payment_id"] for p in square}
    assert all(p["gateway"] == "square" for p in square)


def test_by_order(client: httpx.Client, made: dict) -> None:
    order = made["order"]
    assert ids(client, "/v1/payments", order_id=order) == [made["a_square"], made["a_declined"]]
    assert ids(client, "/v1/payments", order_id=order, status="failed") == [made["a_declined"]]
    assert ids(client, "/v1/payments", order_id=order, user_id=made["user_b"]) == []


def test_created_range_is_inclusive(client: httpx.Client, made: dict) -> None:
    user_a = made["user_a"]
    by_id = {
        p["payment_id"]: p["created_at_ms"]
        for p in listed(client, "/v1/payments", user_id=user_a)["data"]
    }
    t_visa, t_declined, t_square = (by_id[made[k]] for k in ("a_visa", "a_declined", "a_square"))
    assert t_visa < t_declined < t_square
    only = ids(
        client, "/v1/payments", user_id=user_a, created_from=t_declined, created_to=t_declined
    )
    assert only == [made["a_declined"]]
    assert ids(client, "/v1/payments", user_id=user_a, created_from=t_declined) == [
        made["a_square"],
        made["a_declined"],
    ]
    assert ids(client, "/v1/payments", user_id=user_a, created_to=t_declined) == [
        made["a_declined"],
        made["a_visa"],
    ]
    assert ids(client, "/v1/payments", user_id=user_a, created_from=t_square + 1) == []


def test_paging_returns_every_match_exactly_once(client: httpx.Client, made: dict) -> None:
    user_a = made["user_a"]
    everything = [made["a_square"], made["a_declined"], made["a_visa"]]
    for limit in (1, 2):
        items, pages = page_all(client, "/v1/payments", user_id=user_a, limit=limit)
        assert [p["payment_id"] for p in items] == everything
        assert pages == -(-len(everything) // limit)
    first = listed(client, "/v1/payments", user_id=user_a, limit=2)
    assert len(first["data"]) == 2 and first["next_cursor"] is not None

    # The whole stripe index, two at a time, shared with every other test of the session.
    stripe, _ = page_all(client, "/v1/payments", gateway="stripe", limit=2)
    ours = {made["a_visa"], made["a_declined"], made["b_visa"]}
    assert ours <= {p["payment_id"] for p in stripe}
    # A status filter over the global index pages the same way.
    failed, _ = page_all(client, "/v1/payments", status="failed", limit=2)
    assert made["a_declined"] in {p["payment_id"] for p in failed}


@pytest.fixture
def tied(stack: DevStack) -> Iterator[tuple[str, list[str]]]:
    """Seven payments of one user created in the same millisecond, written straight into the
    read model the way the projection writes them."""
    r = redis.Redis.from_url(stack.endpoints["redis_url"])
    user = _uid("u-ties")
    score = int(time.time() * 1000) - 3_600_000
    pids = [f"pay_tie{uuid.uuid4().hex[:8]}{k}" for k in range(7)]
    keys = [indexes.payments_by_user(user)]
    for pid in pids:
        doc = {
            "payment_id": pid,
            "status": "succeeded",
            "order_id": "o-tie",
            "user_id": user,
            "gateway": "stripe",
            "amount": 1,
            "currency": "USD",
            "captured_amount": 1,
            "refunded_amount": 0,
            "decline_code": None,
            "error_code": None,
            "gateway_reference": None,
            "card": None,
            "seq": 2,
            "updated_at_ms": score,
        }
        r.hset(payment_key(pid), mapping={"seq": 2, "doc": dumps(doc)})
        r.zadd(keys[0], {pid: score}, lt=True)
        keys.append(payment_key(pid))
    try:
        yield user, pids
    finally:
        r.delete(*keys)
        r.close()


def test_items_sharing_a_millisecond_page_without_gaps_or_repeats(
    client: httpx.Client, tied: tuple[str, list[str]]
) -> None:
    user, pids = tied
    for limit in (1, 2, 3):
        items, pages = page_all(client, "/v1/payments", user_id=user, limit=limit)
        assert [p["payment_id"] for p in items] == sorted(pids, reverse=True)
        assert len({p["created_at_ms"] for p in items}) == 1
        assert pages == -(-len(pids) // limit)
    # the cursor holds (score, id): a later page starts strictly after the last item
    first = listed(client, "/v1/payments", user_id=user, limit=3)
    second = listed(client, "/v1/payments", user_id=user, limit=3, cursor=first["next_cursor"])
    assert [p["payment_id"] for p in first["data"] + second["data"]] == sorted(pids, reverse=True)[
        :6
    ]


@pytest.mark.parametrize(
    ("path", "params", "field"),
    [
        ("/v1/payments", {"limit": "0"}, "limit"),
        ("/v1/payments", {"limit": "201"}, "limit"),
        ("/v1/payments", {"limit": "ten"}, "limit"),
        ("/v1/payments", {"cursor": "definitely-not-a-cursor"}, "cursor"),
        ("/v1/payments", {"status": "settled"}, "status"),
        ("/v1/payments", {"gateway": "adyen"}, "gateway"),
        ("/v1/payments", {"created_from": "yesterday"}, "created_from"),
        ("/v1/payments", {"colour": "red"}, "colour"),
        ("/v1/payments", {"payment_id": "pay_x"}, "payment_id"),
        ("/v1/refunds", {"user_id": "u-1"}, "user_id"),
        ("/v1/refunds", {"status": "succeeded"}, "status"),
        ("/v1/refunds", {"limit": "-1"}, "limit"),
    ],
)
def test_bad_parameters_are_400(
    client: httpx.Client, path: str, params: dict[str, str], field: str
) -> None:
    r = client.get(path, params=params)
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["code"] == "invalid_request"
    assert field in {d["field"] for d in error["details"]}


def test_a_cursor_of_one_listing_is_refused_by_the_other(client: httpx.Client, made: dict) -> None:
    cursor = listed(client, "/v1/payments", user_id=made["user_a"], limit=1)["next_cursor"]
    assert cursor is not None
    r = client.get("/v1/refunds", params={"cursor": cursor})
    assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_request"


def _wait_refund(client: httpx.Client, refund_id: str, timeout_s: float = 30) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    doc: dict[str, Any] = {}
    while time.monotonic() < deadline:
        r = client.get(f"/v1/refunds/{refund_id}")
        if r.status_code == 200:
            doc = r.json()
            if doc["status"] == "processed":
                return doc
        time.sleep(0.05)
    raise AssertionError(f"refund {refund_id} not processed after {timeout_s}s: {doc}")


def test_refunds_by_payment(client: httpx.Client, made: dict) -> None:
    pid = made["b_visa"]
    refund_ids = []
    for _ in range(2):
        r = client.post(
            f"/v1/payments/{pid}/refunds",
            json={"amount": 100},
            headers={"Idempotency-Key": uuid.uuid4().hex},
        )
        assert r.status_code == 202, r.text
        refund_ids.append(r.json()["refund_id"])
        _wait_refund(client, refund_ids[-1])
    newest_first = list(reversed(refund_ids))

    body = listed(client, "/v1/refunds", payment_id=pid)
    assert [x["refund_id"] for x in body["data"]] == newest_first
    assert body["next_cursor"] is None
    for item in body["data"]:
        assert (item["payment_id"], item["status"], item["amount"]) == (pid, "processed", 100)
        doc = client.get(f"/v1/refunds/{item['refund_id']}").json()
        assert {k: v for k, v in item.items() if k != "created_at_ms"} == doc
    assert ids(client, "/v1/refunds", payment_id=pid, status="processed") == newest_first
    assert ids(client, "/v1/refunds", payment_id=pid, status="failed") == []
    items, pages = page_all(client, "/v1/refunds", payment_id=pid, limit=1)
    assert [x["refund_id"] for x in items] == newest_first and pages == 2
    everything, _ = page_all(client, "/v1/refunds", limit=2)
    assert set(refund_ids) <= {x["refund_id"] for x in everything}
    assert ids(client, "/v1/refunds", payment_id=made["a_visa"]) == []


def test_openapi_documents_both_listings(client: httpx.Client) -> None:
    doc = client.get("/openapi.json").json()
    assert {"get", "post"} <= set(doc["paths"]["/v1/payments"])
    params = {p["name"] for p in doc["paths"]["/v1/payments"]["get"]["parameters"]}
    assert params == {
        "status",
        "gateway",
        "user_id",
        "order_id",
        "created_from",
        "created_to",
        "limit",
        "cursor",
    }
    params = {p["name"] for p in doc["paths"]["/v1/refunds"]["get"]["parameters"]}
    assert params == {"status", "payment_id", "created_from", "created_to", "limit", "cursor"}
    assert "PaymentList" in doc["components"]["schemas"]
