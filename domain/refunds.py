"""Refunds of a payment: their lines, states and the one rule that matters.

A refund is checked against what is still refundable: the captured amount minus every refund
already processed or still in flight. The payment agent is the single writer of a payment, so
two concurrent refund requests are decided one after the other and can never both pass.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum


class RefundState(StrEnum):
    INITIATED = "initiated"
    PROCESSED = "processed"
    FAILED = "failed"


FINAL_REFUND_STATES = frozenset({RefundState.PROCESSED, RefundState.FAILED})


@dataclass(frozen=True, slots=True)
class RefundLine:
    refund_id: str
    amount: int
    state: RefundState
    fingerprint: str
    created_at_ms: int
    updated_at_ms: int
    seq: int = 1
    reason: str | None = None
    gateway_reference: str | None = None
    error_code: str | None = None


@dataclass(frozen=True, slots=True)
class RefundRequested:
    payment_id: str
    refund_id: str
    amount: int | None  # None: everything still refundable
    fingerprint: str
    requested_at_ms: int
    reason: str | None = None


@dataclass(frozen=True, slots=True)
class RefundOutcome:
    """What the gateway answered to a refund command."""

    payment_id: str
    refund_id: str
    command_id: str
    state: RefundState
    occurred_at_ms: int
    gateway_reference: str | None = None
    error_code: str | None = None


@dataclass(frozen=True, slots=True)
class RefundChange:
    """One transition of one refund, for the `refund_status` topic."""

    refund_id: str
    payment_id: str
    seq: int
    state: RefundState
    previous_state: RefundState | None
    amount: int
    occurred_at_ms: int
    reason: str | None = None
    error_code: str | None = None
    gateway_reference: str | None = None


def reserved(lines: Iterable[RefundLine]) -> int:
    """Refunded or on its way to being refunded: counts against the capture."""
    return sum(line.amount for line in lines if line.state is not RefundState.FAILED)


def processed(lines: Iterable[RefundLine]) -> int:
    return sum(line.amount for line in lines if line.state is RefundState.PROCESSED)


def refundable(captured: int, lines: Iterable[RefundLine]) -> int:
    return max(0, captured - reserved(lines))
