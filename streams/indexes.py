"""Sorted-set indexes of the Redis read model, behind `GET /v1/payments` and `GET /v1/refunds`.

Every index is a sorted set whose members are ids and whose score is the creation time in ms:
the `occurred_at` of the creation record (seq 1: `pending` for a payment, `initiated` or
`failed` for a refund), which is the request time. It is the first record of its payment, so
the entry exists once the projection wrote any document for it (the ingress's seq-0 seed is
not indexed). Only that record is indexed: a later record
may carry a gateway's time (a Stripe webhook's `created` is in whole seconds, and 0 when
missing), which would move the entry below payments created after it. `ZADD ... LT` keeps the
earliest creation time seen, so replays and redeliveries leave an entry where it is.

Only immutable attributes are indexed (user, order, gateway; the refund's payment). Status
changes, so it is never indexed: a listing filtered by status reads the documents.
"""

from __future__ import annotations

from typing import Any

from schemas.records import to_ms

_PAYMENTS = "payments:idx:payments:"
_REFUNDS = "payments:idx:refunds:"

PAYMENTS_ALL = _PAYMENTS + "all"
REFUNDS_ALL = _REFUNDS + "all"


def payments_by_user(user_id: str) -> str:
    return f"{_PAYMENTS}user:{user_id}"


def payments_by_order(order_id: str) -> str:
    return f"{_PAYMENTS}order:{order_id}"


def payments_by_gateway(gateway: str) -> str:
    return f"{_PAYMENTS}gateway:{gateway}"


def refunds_by_payment(payment_id: str) -> str:
    return f"{_REFUNDS}payment:{payment_id}"


def gateway_payment_key(gateway: str, reference: str) -> str:
    """A plain key: a gateway's payment id -> ours, for webhooks that carry only the former."""
    return f"{_PAYMENTS}gateway-ref:{gateway}:{reference}"


def payment_index_keys(rec: dict[str, Any]) -> list[str]:
    """Every index a payment belongs to."""
    return [
        PAYMENTS_ALL,
        payments_by_user(rec["user_id"]),
        payments_by_order(rec["order_id"]),
        payments_by_gateway(rec["gateway"]),
    ]


def refund_index_keys(rec: dict[str, Any]) -> list[str]:
    """Every index a refund belongs to."""
    return [REFUNDS_ALL, refunds_by_payment(rec["payment_id"])]


def is_creation(rec: dict[str, Any]) -> bool:
    """The record that creates a payment or refund: the one whose time is indexed."""
    return int(rec["seq"]) == 1


def queue_payment_index(pipe: Any, rec: dict[str, Any]) -> None:
    """Queue (not run) on `pipe` the index writes of a decoded `payment_status` record."""
    if is_creation(rec):
        _queue(pipe, payment_index_keys(rec), rec["payment_id"], to_ms(rec["occurred_at"]))
    if rec.get("gateway_reference"):
        pipe.set(gateway_payment_key(rec["gateway"], rec["gateway_reference"]), rec["payment_id"])


def queue_refund_index(pipe: Any, rec: dict[str, Any]) -> None:
    """Queue (not run) on `pipe` the index writes of a decoded `refund_status` record."""
    if is_creation(rec):
        _queue(pipe, refund_index_keys(rec), rec["refund_id"], to_ms(rec["occurred_at"]))


def _queue(pipe: Any, keys: list[str], member: str, created_ms: int) -> None:
    for key in keys:
        # LT: add when absent, else only lower the score: the earliest creation time seen.
        pipe.zadd(key, {member: created_ms}, lt=True)
