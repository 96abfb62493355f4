"""Payment state <-> the JSON row stored in the `payments` table. Pure."""

from __future__ import annotations

import dataclasses
from typing import Any

from domain.money import Money
from domain.payment import (
    CaptureMode,
    CardSummary,
    GatewayCommand,
    Operation,
    Payment,
    Source,
    StatusChange,
)
from domain.refunds import RefundLine, RefundState
from domain.status import PaymentStatus

ROW_VERSION = 1


def payment_to_row(p: Payment) -> dict[str, Any]:
    return {
        "v": ROW_VERSION,
        "payment_id": p.payment_id,
        "order_id": p.order_id,
        "user_id": p.user_id,
        "amount": p.amount.amount,
        "currency": p.amount.currency,
        "gateway": p.gateway,
        "capture": p.capture.value,
        "fingerprint": p.fingerprint,
        "status": p.status.value,
        "seq": p.seq,
        "created_at_ms": p.created_at_ms,
        "updated_at_ms": p.updated_at_ms,
        "metadata": dict(p.metadata),
        "gateway_reference": p.gateway_reference,
        "captured_amount": p.captured_amount,
        "refunded_amount": p.refunded_amount,  # derived; kept for people reading rows
        "refunds": [dataclasses.asdict(r) for r in p.refunds],
        "decline_code": p.decline_code,
        "error_code": p.error_code,
        "outstanding_command": p.outstanding_command,
        "card": dataclasses.asdict(p.card) if p.card else None,
        "pending_commands": [_command_row(c) for c in p.pending_commands],
        "last_change": _change_row(p.last_change) if p.last_change else None,
        "recent_inputs": list(p.recent_inputs),
        "version": p.version,
        "checks": p.checks,
        "checked_at_ms": p.checked_at_ms,
        "fallbacks": list(p.fallbacks),
        "method_tokens": dict(p.method_tokens),
        "method_type": p.method_type,
        "screening": p.screening,
        "held_commands": [_command_row(c) for c in p.held_commands],
        "fraud_hits": list(p.fraud_hits),
        "card_fingerprint": p.card_fingerprint,
        "billing_country": p.billing_country,
        "ip_country": p.ip_country,
    }


def payment_from_row(row: dict[str, Any]) -> Payment:
    return Payment(
        payment_id=row["payment_id"],
        order_id=row["order_id"],
        user_id=row["user_id"],
        amount=Money(row["amount"], row["currency"]),
        gateway=row["gateway"],
        capture=CaptureMode(row["capture"]),
        fingerprint=row["fingerprint"],
        status=PaymentStatus(row["status"]),
        seq=row["seq"],
        created_at_ms=row["created_at_ms"],
        updated_at_ms=row["updated_at_ms"],
        metadata=row.get("metadata") or {},
        gateway_reference=row.get("gateway_reference"),
        captured_amount=row.get("captured_amount", 0),
        refunds=tuple(_refund(r) for r in row.get("refunds") or ()),
        decline_code=row.get("decline_code"),
        error_code=row.get("error_code"),
        outstanding_command=row.get("outstanding_command"),
        card=CardSummary(**row["card"]) if row.get("card") else None,
        pending_commands=tuple(_command(c) for c in row.get("pending_commands") or ()),
        last_change=_change(row["last_change"]) if row.get("last_change") else None,
        recent_inputs=tuple(row.get("recent_inputs") or ()),
        version=row.get("version", 0),
        checks=row.get("checks", 0),
        checked_at_ms=row.get("checked_at_ms", 0),
        fallbacks=tuple(row.get("fallbacks") or ()),
        method_tokens=row.get("method_tokens") or {},
        method_type=row.get("method_type") or "card",
        screening=row.get("screening"),
        held_commands=tuple(_command(c) for c in row.get("held_commands") or ()),
        fraud_hits=tuple(row.get("fraud_hits") or ()),
        card_fingerprint=row.get("card_fingerprint") or "",
        billing_country=row.get("billing_country"),
        ip_country=row.get("ip_country"),
    )


def _refund(row: dict[str, Any]) -> RefundLine:
    return RefundLine(**{**row, "state": RefundState(row["state"])})


def refund_to_row(line: RefundLine, payment_id: str) -> dict[str, Any]:
    return {"v": ROW_VERSION, "payment_id": payment_id, **dataclasses.asdict(line)}


def _command_row(c: GatewayCommand) -> dict[str, Any]:
    row = dataclasses.asdict(c)
    row["amount"] = c.amount.amount
    row["currency"] = c.amount.currency
    return row


def _command(row: dict[str, Any]) -> GatewayCommand:
    fields = {k: v for k, v in row.items() if k != "currency"}
    return GatewayCommand(
        **{
            **fields,
            "operation": Operation(row["operation"]),
            "capture": CaptureMode(row["capture"]),
            "amount": Money(row["amount"], row["currency"]),
        }
    )


def _change_row(c: StatusChange) -> dict[str, Any]:
    return dataclasses.asdict(c)


def _change(row: dict[str, Any]) -> StatusChange:
    previous = row.get("previous_status")
    return StatusChange(
        **{
            **row,
            "status": PaymentStatus(row["status"]),
            "previous_status": PaymentStatus(previous) if previous else None,
            "source": Source(row["source"]),
        }
    )
