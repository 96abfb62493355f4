"""Table declarations. Every table is changelog-backed and partitioned like its source topic."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import faust

from payments.settings import Settings
from tables.dedup import ExpiringTable, faust_scan
from tables.schedule import DueIndex


@dataclass(frozen=True)
class Tables:
    payments: Any  # payment_id -> row (tables.rows.payment_to_row)
    refunds: Any  # refund_id -> refund row with its payment_id; written with its payment
    # Client idempotency keys (payment, capture, cancel, refund) and gateway calls answered.
    idempotency: ExpiringTable
    seen_events: ExpiringTable  # gateway webhook event ids, and what became of each
    janitor: DueIndex  # payments due for a status check with their gateway, soonest first
    inputs: Any  # "<topic>:<partition>" -> the last input offset applied (streams.ledger)
    metrics: Any  # metrics windows' totals, and an index of them by end time (agents.analytics)
    fraud_users: Any  # user id -> recent payments, for the fraud rules' first stage
    fraud_cards: Any  # card -> recent payments and declines, for the second stage


def declare_tables(app: faust.App, settings: Settings) -> Tables:
    def table(name: str, help: str) -> Any:
        return app.Table(
            name,
            default=None,
            partitions=settings.topic_partitions,
            key_type=str,  # str keys are stored JSON-encoded (faust's serializer for str)
            help=help,  # values: the app's default serializer, json
        )

    def expiring(name: str, help: str, ttl_s: int) -> ExpiringTable:
        declared = table(name, help)
        return ExpiringTable(declared, faust_scan(declared), ttl_ms=ttl_s * 1000)

    return Tables(
        payments=table(
            "payments", "Payment state by payment id; the payment agent is its only writer."
        ),
        refunds=table(
            "refunds", "Refunds by refund id, written by the payment agent next to their payment."
        ),
        idempotency=expiring(
            "idempotency",
            "Client idempotency keys and answered gateway calls, kept idempotency_ttl_s.",
            settings.idempotency_ttl_s,
        ),
        seen_events=expiring(
            "seen_events",
            "Gateway webhook event ids, kept seen_events_ttl_s.",
            settings.seen_events_ttl_s,
        ),
        inputs=table(
            "inputs", "The last offset of each input partition the payment agent applied."
        ),
        janitor=_due_index(
            table("janitor", "Payments due for a janitor status check, by due time.")
        ),
        metrics=table(
            "metrics", "Tumbling-window totals of gateway attempts, by window and dimensions."
        ),
        fraud_users=table("fraud_users", "Recent payments per user, for the fraud rules."),
        fraud_cards=table(
            "fraud_cards", "Recent payments and declines per card, for the fraud rules."
        ),
    )


def _due_index(declared: Any) -> DueIndex:
    return DueIndex(declared, faust_scan(declared))
