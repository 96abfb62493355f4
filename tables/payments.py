"""Table declarations. Every table is changelog-backed and partitioned like its source topic."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import faust

from payments.settings import Settings
from tables.dedup import ExpiringTable, faust_scan


@dataclass(frozen=True)
class Tables:
    payments: Any  # payment_id -> row (tables.rows.payment_to_row)
    refunds: Any  # refund_id -> refund row with its payment_id; written with its payment
    # Client idempotency keys (payment, capture, cancel, refund) and gateway calls answered.
    idempotency: ExpiringTable
    seen_events: ExpiringTable  # gateway webhook event ids, and what became of each


def declare_tables(app: faust.App, settings: Settings) -> Tables:
    payments = app.Table(
        "payments",
        default=None,
        partitions=settings.topic_partitions,
        key_type=str,  # str keys are stored JSON-encoded (faust's serializer for str)
        # values use the app default serializer, json
        help="Payment state by payment id; the payment agent is its only writer.",
    )
    refunds = app.Table(
        "refunds",
        default=None,
        partitions=settings.topic_partitions,
        key_type=str,
        help="Refunds by refund id, written by the payment agent next to their payment.",
    )
    idempotency = app.Table(
        "idempotency",
        default=None,
        partitions=settings.topic_partitions,
        key_type=str,
        help="Client idempotency keys and answered gateway calls, kept idempotency_ttl_s.",
    )
    seen_events = app.Table(
        "seen_events",
        default=None,
        partitions=settings.topic_partitions,
        key_type=str,
        help="Gateway webhook event ids, kept seen_events_ttl_s.",
    )
    return Tables(
        payments=payments,
        refunds=refunds,
        idempotency=ExpiringTable(
            idempotency, faust_scan(idempotency), ttl_ms=settings.idempotency_ttl_s * 1000
        ),
        seen_events=ExpiringTable(
            seen_events, faust_scan(seen_events), ttl_ms=settings.seen_events_ttl_s * 1000
        ),
    )
