"""Identifiers. A payment id is derived from the client's idempotency key, so a retried
request maps to the same payment even when every cache in front of Kafka is gone."""

from __future__ import annotations

import base64
import hashlib


def payment_id_for(idempotency_key: str, *, scope: str = "default") -> str:
    digest = hashlib.sha256(f"payment\0{scope}\0{idempotency_key}".encode()).digest()
    return "pay_" + base64.b32encode(digest[:15]).decode().lower()


def refund_id_for(payment_id: str, idempotency_key: str) -> str:
    """A refund's id, derived from its payment and the client's key, like a payment's."""
    digest = hashlib.sha256(f"refund\0{payment_id}\0{idempotency_key}".encode()).digest()
    return "re_" + base64.b32encode(digest[:15]).decode().lower()
