"""Payment statuses, the explicit terminal set, and which moves between them are legal."""

from __future__ import annotations

from enum import StrEnum


class PaymentStatus(StrEnum):
    PENDING = "pending"
    REQUIRES_ACTION = "requires_action"
    PROCESSING = "processing"
    AUTHORIZED = "authorized"
    SUCCEEDED = "succeeded"  # captured
    FAILED = "failed"
    CANCELED = "canceled"
    PARTIALLY_REFUNDED = "partially_refunded"
    REFUNDED = "refunded"
    DISPUTED = "disputed"
    UNKNOWN = "unknown"  # a gateway timeout: we do not know whether money moved
    IN_REVIEW = "in_review"  # held by the fraud rules for a person to approve or reject


S = PaymentStatus

# Nothing moves a payment out of these.
TERMINAL: frozenset[PaymentStatus] = frozenset({S.FAILED, S.CANCELED, S.DISPUTED})

# The charge attempt has an answer; a client waiting on the payment can stop waiting.
SETTLED: frozenset[PaymentStatus] = frozenset(
    {S.AUTHORIZED, S.SUCCEEDED, S.FAILED, S.CANCELED, S.PARTIALLY_REFUNDED, S.REFUNDED, S.DISPUTED}
)

_BEFORE_OUTCOME = {S.REQUIRES_ACTION, S.PROCESSING, S.UNKNOWN}
# A dispute implies a capture, and gateways do not deliver webhooks in order: news of a
# dispute may come before news of the capture, so it is reachable from every open state.
_OUTCOMES = {S.AUTHORIZED, S.SUCCEEDED, S.FAILED, S.CANCELED, S.DISPUTED}

ALLOWED: dict[PaymentStatus, frozenset[PaymentStatus]] = {
    S.PENDING: frozenset(_BEFORE_OUTCOME | _OUTCOMES | {S.IN_REVIEW}),
    # Approved, the payment goes to its gateway and stays `in_review` until it answers.
    S.IN_REVIEW: frozenset(_BEFORE_OUTCOME | _OUTCOMES),
    # `unknown` only ever follows `pending`: once the gateway told us anything, a later
    # timeout must not erase what we know.
    S.UNKNOWN: frozenset({S.REQUIRES_ACTION, S.PROCESSING} | _OUTCOMES),
    S.REQUIRES_ACTION: frozenset({S.PROCESSING} | _OUTCOMES),
    S.PROCESSING: frozenset(_OUTCOMES),
    S.AUTHORIZED: frozenset({S.SUCCEEDED, S.CANCELED, S.FAILED, S.DISPUTED}),
    S.SUCCEEDED: frozenset({S.PARTIALLY_REFUNDED, S.REFUNDED, S.DISPUTED}),
    S.PARTIALLY_REFUNDED: frozenset({S.PARTIALLY_REFUNDED, S.REFUNDED, S.DISPUTED}),
    S.REFUNDED: frozenset({S.DISPUTED}),
    S.FAILED: frozenset(),
    S.CANCELED: frozenset(),
    S.DISPUTED: frozenset(),
}


def can_move(current: PaymentStatus, new: PaymentStatus) -> bool:
    """True when `new` is a forward move from `current`."""
    return new in ALLOWED[current]
