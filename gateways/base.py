"""The one `Gateway` protocol every adapter implements, with its typed requests and results.

Adapters raise the typed errors from `domain.errors` (`GatewayDeclined`, `GatewayUnavailable`,
`GatewayTimeout`, `GatewayAuthError`, `GatewayInvalidRequest`, `NotSupported`); the executor
decides retries and outcomes by type, in one place.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Protocol, runtime_checkable

from domain.errors import NotSupported
from domain.money import Money
from domain.payment import CaptureMode
from domain.status import PaymentStatus

__all__ = [
    "AuthorizeRequest",
    "CancelRequest",
    "CaptureRequest",
    "CardDetails",
    "EventKind",
    "Gateway",
    "GatewayResult",
    "LookupRequest",
    "NotSupported",
    "RefundRequest",
    "RefundResult",
    "RefundStatus",
    "WebhookEffect",
]


@dataclass(frozen=True, slots=True)
class CardDetails:
    """The only card data we keep: never the full number."""

    brand: str | None = None
    last4: str | None = None
    exp_month: int | None = None
    exp_year: int | None = None
    token: str | None = None


@dataclass(frozen=True, slots=True)
class AuthorizeRequest:
    payment_id: str
    amount: Money
    capture: CaptureMode
    method_token: str
    idempotency_key: str
    order_id: str
    user_id: str
    metadata: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class CaptureRequest:
    payment_id: str
    gateway_reference: str
    idempotency_key: str
    amount: Money | None = None  # None captures everything authorized


@dataclass(frozen=True, slots=True)
class CancelRequest:
    payment_id: str
    gateway_reference: str
    idempotency_key: str


@dataclass(frozen=True, slots=True)
class RefundRequest:
    refund_id: str
    payment_id: str
    gateway_reference: str
    amount: Money
    idempotency_key: str
    reason: str | None = None


@dataclass(frozen=True, slots=True)
class LookupRequest:
    """The janitor's question: what does the gateway hold for this payment of ours?"""

    payment_id: str
    created_at_ms: int
    gateway_reference: str | None = None  # the gateway's object, once it told us
    # The authorize call that went unanswered, with its idempotency key: a gateway with no
    # way to search by our id is asked by replaying it (see each adapter's `lookup`).
    authorize: AuthorizeRequest | None = None
    # The creation times, [from, until) in ms, at which the gateway can hold a payment our
    # create calls made for this one (`domain.janitor.lookup_window`): a gateway searched by
    # time searches only these. None: from shortly before `created_at_ms` until now.
    window: tuple[int, int] | None = None


@dataclass(frozen=True, slots=True)
class GatewayResult:
    """A gateway's answer about a payment, already mapped to our statuses."""

    status: PaymentStatus
    gateway_reference: str
    provider_status: str
    captured_amount: int = 0
    decline_code: str | None = None
    error_code: str | None = None
    message: str | None = None
    card: CardDetails | None = None


class RefundStatus(StrEnum):
    INITIATED = "initiated"
    PROCESSED = "processed"
    FAILED = "failed"


@dataclass(frozen=True, slots=True)
class RefundResult:
    status: RefundStatus
    refund_reference: str
    amount: int
    provider_status: str


class EventKind(StrEnum):
    PAYMENT = "payment"
    REFUND = "refund"
    DISPUTE = "dispute"


@dataclass(frozen=True, slots=True)
class WebhookEffect:
    """What one verified gateway webhook says, in our terms.

    Each adapter module exposes `interpret_event(event_type, payload) -> WebhookEffect | None`
    (None: an event type we do not act on) and `HANDLED_EVENTS`, the types it maps.
    """

    kind: EventKind
    status: PaymentStatus | None = None  # the payment status the event reports
    refund_status: RefundStatus | None = None
    gateway_reference: str | None = None  # the gateway's payment object (pi_..., order, payment)
    refund_reference: str | None = None
    amount: int | None = None  # captured amount (payment) or refunded amount (refund), minor units
    decline_code: str | None = None
    # The gateway waits for us to capture (PayPal after the buyer approved an order).
    capture_needed: bool = False


@runtime_checkable
class Gateway(Protocol):
    name: str

    async def authorize(self, req: AuthorizeRequest) -> GatewayResult:
        """Create and confirm a charge; captures too when `req.capture` is automatic."""
        ...

    async def capture(self, req: CaptureRequest) -> GatewayResult: ...

    async def cancel(self, req: CancelRequest) -> GatewayResult: ...

    async def refund(self, req: RefundRequest) -> RefundResult: ...

    async def fetch(self, gateway_reference: str) -> GatewayResult: ...

    async def lookup(self, req: LookupRequest) -> GatewayResult | None:
        """What the gateway says now about our payment, or None when it confirms it holds no
        payment for our id (nothing was charged)."""
        ...

    async def charges_since(self, since_ms: int) -> list[tuple[str, GatewayResult]]:
        """Every payment the gateway holds that was created from `since_ms` on, with our
        payment id, from its list API: what `payments audit --against gateways` compares.
        `NotSupported` for a gateway with no such API."""
        ...

    async def close(self) -> None: ...
