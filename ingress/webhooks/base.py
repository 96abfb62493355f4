"""What every webhook verifier returns, and the one error it raises."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

from domain.errors import PipelineError


class WebhookRejected(PipelineError):
    """The webhook is not provably from the gateway (or not readable): 400, nothing enqueued.

    Codes: `signature_missing`, `signature_invalid`, `signature_expired`,
    `certificate_untrusted`, `webhook_replayed`, `payload_invalid`.
    """

    code = "signature_invalid"


@dataclass(frozen=True, slots=True)
class VerifiedEvent:
    """A webhook whose signature checked out, normalised across gateways."""

    gateway: str
    event_id: str  # the gateway's event id: the dedup key
    event_type: str  # as the gateway names it, e.g. payment_intent.succeeded
    object_id: str  # the gateway's own object (pi_..., capture id, Square payment id)
    payment_id: str | None  # ours, carried in the gateway's metadata
    amount: int | None  # minor units, when the event carries an amount
    currency: str | None  # ISO 4217, upper case
    occurred_at_ms: int
    payload: bytes  # the raw body, exactly as received
    replay_key: str | None = None  # a one-time transmission id, when the gateway has one
    # The gateway's id of the payment the event concerns (a Stripe PaymentIntent, a Square
    # payment): how an event that carries no id of ours (a dispute, a Square refund) is routed.
    gateway_payment: str | None = None


class WebhookVerifier(Protocol):
    gateway: str

    async def verify(self, headers: Mapping[str, str], body: bytes) -> VerifiedEvent:
        """Check the signature over the raw `body`; raise `WebhookRejected` otherwise.

        `headers` keys are lower-case.
        """
        ...
