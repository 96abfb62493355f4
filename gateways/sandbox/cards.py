"""Test payment-method tokens the sandbox understands, and what confirming with each one does.

The tokens mirror Stripe's documented test payment methods, so code exercised against the
sandbox behaves the same against Stripe's own test mode. `pm_card_processing` is ours: Stripe
has no card that stays `processing`, but we need one to exercise webhook-settled payments.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from types import MappingProxyType
from typing import Final

__all__ = ["CARDS", "CardBehaviour", "Outcome", "lookup"]


class Outcome(StrEnum):
    SUCCEED = "succeed"
    DECLINE = "decline"
    REQUIRES_ACTION = "requires_action"
    PROCESSING = "processing"


@dataclass(frozen=True, slots=True)
class CardBehaviour:
    outcome: Outcome
    brand: str = "visa"
    last4: str = "4242"
    # Only for declines: Stripe's error `code`, `decline_code` and customer-facing message.
    code: str | None = None
    decline_code: str | None = None
    message: str | None = None


_SUCCESS_VISA: Final = CardBehaviour(Outcome.SUCCEED)
_GENERIC_DECLINE: Final = CardBehaviour(
    Outcome.DECLINE,
    last4="0002",
    code="card_declined",
    decline_code="generic_decline",
    message="Your card was declined.",
)
_INSUFFICIENT_FUNDS: Final = CardBehaviour(
    Outcome.DECLINE,
    last4="9995",
    code="card_declined",
    decline_code="insufficient_funds",
    message="Your card was declined.",
)

CARDS: Final = MappingProxyType(
    {
        "pm_card_visa": _SUCCESS_VISA,
        "tok_visa": _SUCCESS_VISA,
        "pm_card_mastercard": CardBehaviour(Outcome.SUCCEED, brand="mastercard", last4="4444"),
        "pm_card_chargeDeclined": _GENERIC_DECLINE,
        "tok_chargeDeclined": _GENERIC_DECLINE,
        "pm_card_chargeDeclinedInsufficientFunds": _INSUFFICIENT_FUNDS,
        "tok_chargeDeclinedInsufficientFunds": _INSUFFICIENT_FUNDS,
        # Stripe reports an expired card with its own code and the same decline_code.
        "pm_card_chargeDeclinedExpiredCard": CardBehaviour(
            Outcome.DECLINE,
            last4="0069",
            code="expired_card",
            decline_code="expired_card",
            message="Your card has expired.",
        ),
        "pm_card_authenticationRequired": CardBehaviour(Outcome.REQUIRES_ACTION, last4="3184"),
        "pm_card_threeDSecure2Required": CardBehaviour(Outcome.REQUIRES_ACTION, last4="3220"),
        "pm_card_processing": CardBehaviour(Outcome.PROCESSING, last4="0077"),
    }
)


def lookup(token: str) -> CardBehaviour | None:
    """The behaviour of a test token, or None when the sandbox does not know it."""
    return CARDS.get(token)
