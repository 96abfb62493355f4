"""Table declarations. Every table is changelog-backed and partitioned like its source topic."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import faust

from payments.settings import Settings


@dataclass(frozen=True)
class Tables:
    payments: Any  # payment_id -> row (tables.rows.payment_to_row)
    refunds: Any  # refund_id -> refund row with its payment_id; written with its payment


def declare_tables(app: faust.App, settings: Settings) -> Tables:
    payments = app.Table(
        "payments",
        default=None,
        partitions=settings.topic_partitions,
        key_type=str,  # app default key serializer is raw; str keys round-trip as UTF-8
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
    return Tables(payments=payments, refunds=refunds)
