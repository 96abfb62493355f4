"""The Redis read model behind the ingress GET endpoints.

Written by the projection agent from `payment_status` (and once by the ingress at accept
time, with seq 0). A write only lands when its seq is newer than the stored one, so
redelivered or reordered status records can never move a payment backwards.
"""

from __future__ import annotations

import json
from typing import Any

PAYMENT_KEY = "payments:payment:{}"
REFUND_KEY = "payments:refund:{}"
IDEMPOTENCY_KEY = "payments:idem:{}"

# KEYS[1] payment key; ARGV[1] seq; ARGV[2] document JSON
SET_IF_NEWER = """
local cur = redis.call('HGET', KEYS[1], 'seq')
if cur and tonumber(cur) >= tonumber(ARGV[1]) then return 0 end
redis.call('HSET', KEYS[1], 'seq', ARGV[1], 'doc', ARGV[2])
return 1
"""


def payment_key(payment_id: str) -> str:
    return PAYMENT_KEY.format(payment_id)


def refund_key(refund_id: str) -> str:
    return REFUND_KEY.format(refund_id)


def refund_document(rec: dict[str, Any], occurred_at_ms: int) -> dict[str, Any]:
    """The public JSON view of a refund, built from a `refund_status` record."""
    return {
        "refund_id": rec["refund_id"],
        "payment_id": rec["payment_id"],
        "status": rec["status"],
        "amount": rec["amount"],
        "currency": rec["currency"],
        "reason": rec["reason"],
        "error_code": rec["error_code"],
        "gateway_reference": rec["gateway_reference"],
        "seq": rec["seq"],
        "updated_at_ms": occurred_at_ms,
    }


def idempotency_key(key: str) -> str:
    return IDEMPOTENCY_KEY.format(key)


def document_from_status(rec: dict[str, Any], occurred_at_ms: int) -> dict[str, Any]:
    """The public JSON view of a payment, built from a `payment_status` record."""
    return {
        "payment_id": rec["payment_id"],
        "status": rec["status"],
        "order_id": rec["order_id"],
        "user_id": rec["user_id"],
        "gateway": rec["gateway"],
        "amount": rec["amount"],
        "currency": rec["currency"],
        "captured_amount": rec["captured_amount"],
        "refunded_amount": rec["refunded_amount"],
        "decline_code": rec["decline_code"],
        "error_code": rec["error_code"],
        "gateway_reference": rec["gateway_reference"],
        "card": {"brand": rec.get("card_brand"), "last4": rec.get("card_last4")}
        if rec.get("card_last4")
        else None,
        "seq": rec["seq"],
        "updated_at_ms": occurred_at_ms,
    }


def dumps(doc: dict[str, Any]) -> str:
    return json.dumps(doc, separators=(",", ":"), sort_keys=True)


# Metrics windows (`payment_metrics`), for the dashboard: each window's latest record as a
# JSON string, and per window size a sorted set of window keys scored by start time.
METRICS_WINDOW_KEY = "payments:metrics:window:{}"
METRICS_INDEX_KEY = "payments:metrics:index:{}"
METRICS_KEEP_S = 2 * 86400  # how long the read model keeps a window after its start


def metrics_window_key(window: str) -> str:
    return METRICS_WINDOW_KEY.format(window)


def metrics_index_key(size_s: int) -> str:
    return METRICS_INDEX_KEY.format(size_s)


def metrics_document(rec: dict[str, Any], start_ms: int, end_ms: int) -> dict[str, Any]:
    """The dashboard's JSON view of a `payment_metrics` record."""
    return {
        **{k: v for k, v in rec.items() if k not in ("window_start", "window_end", "emitted_at")},
        "window_start": start_ms,
        "window_end": end_ms,
    }


OWNER_KEY = "payments:owner:{}"  # payment id -> the name of the API key that created it


def owner_key(payment_id: str) -> str:
    return OWNER_KEY.format(payment_id)
