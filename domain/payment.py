"""The payment aggregate and its pure transition function.

`decide(state, input)` returns the new state, the status records to emit and the gateway
commands to run. Agents only load, call and save; a replayed input is recognised and is a
no-op, which is what makes at-least-once delivery safe.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum

from domain.money import Money
from domain.status import PaymentStatus, can_move


class CaptureMode(StrEnum):
    AUTOMATIC = "automatic"
    MANUAL = "manual"


class Operation(StrEnum):
    AUTHORIZE = "authorize"  # authorize, and capture too when capture is automatic


class Source(StrEnum):
    """Where a status change came from."""

    REQUEST = "request"
    GATEWAY = "gateway"
    WEBHOOK = "webhook"
    POLL = "poll"
    JANITOR = "janitor"


@dataclass(frozen=True, slots=True)
class CardSummary:
    """All we ever keep of a card: never its number."""

    brand: str | None = None
    last4: str | None = None
    exp_month: int | None = None
    exp_year: int | None = None


# --- inputs -----------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class PaymentRequested:
    payment_id: str
    order_id: str
    user_id: str
    amount: Money
    gateway: str
    method_token: str
    capture: CaptureMode
    fingerprint: str  # hash of the client's request body, for idempotency conflicts
    requested_at_ms: int
    metadata: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class GatewayOutcome:
    """What a gateway said about one command (or why it could not say)."""

    payment_id: str
    command_id: str
    operation: Operation
    status: PaymentStatus
    occurred_at_ms: int
    gateway_reference: str | None = None
    captured_amount: int = 0
    decline_code: str | None = None
    error_code: str | None = None
    error_message: str | None = None
    card: CardSummary | None = None


class NoticeKind(StrEnum):
    PAYMENT = "payment"
    REFUND = "refund"
    DISPUTE = "dispute"


@dataclass(frozen=True, slots=True)
class GatewayNotice:
    """What a verified webhook (or a status poll) says about a payment, in our terms."""

    payment_id: str
    event_id: str  # the gateway's event id: a redelivery carries the same one
    event_type: str
    kind: NoticeKind
    status: PaymentStatus | None
    occurred_at_ms: int
    source: Source = Source.WEBHOOK
    gateway_reference: str | None = None
    amount: int | None = None
    decline_code: str | None = None


Input = PaymentRequested | GatewayOutcome | GatewayNotice


# --- outputs ----------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class GatewayCommand:
    command_id: str
    payment_id: str
    operation: Operation
    gateway: str
    amount: Money
    capture: CaptureMode
    method_token: str
    idempotency_key: str
    order_id: str
    user_id: str
    issued_at_ms: int


@dataclass(frozen=True, slots=True)
class StatusChange:
    payment_id: str
    seq: int
    status: PaymentStatus
    previous_status: PaymentStatus | None
    source: Source
    occurred_at_ms: int


@dataclass(frozen=True, slots=True)
class Payment:
    payment_id: str
    order_id: str
    user_id: str
    amount: Money
    gateway: str
    capture: CaptureMode
    fingerprint: str
    status: PaymentStatus
    seq: int
    created_at_ms: int
    updated_at_ms: int
    metadata: Mapping[str, str] = field(default_factory=dict)
    gateway_reference: str | None = None
    captured_amount: int = 0
    refunded_amount: int = 0
    decline_code: str | None = None
    error_code: str | None = None
    outstanding_command: str | None = None
    card: CardSummary | None = None
    # Recently applied inputs ("<command_id>=<status>" or "evt:<event id>"), to spot redeliveries.
    recent_inputs: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Decision:
    state: Payment | None
    changes: tuple[StatusChange, ...] = ()
    commands: tuple[GatewayCommand, ...] = ()
    ignored: str | None = None  # why the input moved no status, when it did not


def command_id(payment_id: str, operation: Operation, attempt: int = 1) -> str:
    """Deterministic id of a command; it doubles as the gateway idempotency key."""
    return f"{payment_id}:{operation.value}:{attempt}"


def decide(state: Payment | None, event: Input) -> Decision:
    if isinstance(event, PaymentRequested):
        return _on_request(state, event)
    if isinstance(event, GatewayOutcome):
        return _on_outcome(state, event)
    return _on_notice(state, event)


def _on_request(state: Payment | None, req: PaymentRequested) -> Decision:
    if state is not None:
        reason = (
            "duplicate_request" if state.fingerprint == req.fingerprint else "idempotency_conflict"
        )
        return Decision(state, ignored=reason)
    cid = command_id(req.payment_id, Operation.AUTHORIZE)
    payment = Payment(
        payment_id=req.payment_id,
        order_id=req.order_id,
        user_id=req.user_id,
        amount=req.amount,
        gateway=req.gateway,
        capture=req.capture,
        fingerprint=req.fingerprint,
        status=PaymentStatus.PENDING,
        seq=1,
        created_at_ms=req.requested_at_ms,
        updated_at_ms=req.requested_at_ms,
        metadata=dict(req.metadata),
        outstanding_command=cid,
    )
    change = StatusChange(
        payment_id=req.payment_id,
        seq=1,
        status=PaymentStatus.PENDING,
        previous_status=None,
        source=Source.REQUEST,
        occurred_at_ms=req.requested_at_ms,
    )
    command = GatewayCommand(
        command_id=cid,
        payment_id=req.payment_id,
        operation=Operation.AUTHORIZE,
        gateway=req.gateway,
        amount=req.amount,
        capture=req.capture,
        method_token=req.method_token,
        idempotency_key=cid,
        order_id=req.order_id,
        user_id=req.user_id,
        issued_at_ms=req.requested_at_ms,
    )
    return Decision(payment, changes=(change,), commands=(command,))


def _on_outcome(state: Payment | None, out: GatewayOutcome) -> Decision:
    if state is None:
        return Decision(None, ignored="unknown_payment")
    key = f"{out.command_id}={out.status.value}"
    if key in state.recent_inputs:
        return Decision(state, ignored="duplicate_outcome")
    outstanding = state.outstanding_command
    if out.command_id == outstanding and out.status not in _STILL_WAITING:
        outstanding = None
    return _advance(
        state,
        key=key,
        status=out.status,
        source=Source.GATEWAY,
        occurred_at_ms=out.occurred_at_ms,
        gateway_reference=out.gateway_reference,
        captured_amount=out.captured_amount,
        decline_code=out.decline_code,
        error_code=out.error_code,
        outstanding=outstanding,
        card=out.card,
    )


def _on_notice(state: Payment | None, notice: GatewayNotice) -> Decision:
    if state is None:
        return Decision(None, ignored="unknown_payment")
    key = f"evt:{notice.event_id}"
    if key in state.recent_inputs:
        return Decision(state, ignored="duplicate_event")
    if notice.kind is NoticeKind.REFUND:
        # Refunds are applied from refund requests and their results, not from news alone.
        return Decision(state, ignored="refund_event_not_tracked")
    if notice.status is None:
        return Decision(state, ignored="no_status")
    return _advance(
        state,
        key=key,
        status=notice.status,
        source=notice.source,
        occurred_at_ms=notice.occurred_at_ms,
        gateway_reference=notice.gateway_reference,
        captured_amount=notice.amount or 0,
        decline_code=notice.decline_code,
        error_code=_error_for_decline(notice.decline_code),
        outstanding=state.outstanding_command,
    )


def _error_for_decline(decline_code: str | None) -> str | None:
    if decline_code is None:
        return None
    return "insufficient_funds" if decline_code == "insufficient_funds" else "card_declined"


def _advance(
    state: Payment,
    *,
    key: str,
    status: PaymentStatus,
    source: Source,
    occurred_at_ms: int,
    gateway_reference: str | None,
    captured_amount: int,
    decline_code: str | None,
    error_code: str | None,
    outstanding: str | None,
    card: CardSummary | None = None,
) -> Decision:
    """Move to `status` if that is forward; otherwise record why not."""
    if status == state.status:
        return Decision(_with_details(state, card, gateway_reference), ignored="no_change")
    if not can_move(state.status, status):
        return Decision(
            _with_details(state, card, gateway_reference),
            ignored=f"regressive:{state.status.value}->{status.value}",
        )
    captured = state.captured_amount
    if status is PaymentStatus.SUCCEEDED:
        captured = captured_amount or state.amount.amount
    elif status is PaymentStatus.DISPUTED and not captured:
        captured = captured_amount or state.amount.amount  # disputed, so it was captured
    failed = status is PaymentStatus.FAILED
    new = dataclasses.replace(
        state,
        status=status,
        seq=state.seq + 1,
        updated_at_ms=max(state.updated_at_ms, occurred_at_ms),
        gateway_reference=gateway_reference or state.gateway_reference,
        captured_amount=captured,
        decline_code=decline_code if failed else state.decline_code,
        error_code=error_code if failed else state.error_code,
        outstanding_command=outstanding,
        card=card or state.card,
        recent_inputs=_remember(state.recent_inputs, key),
    )
    change = StatusChange(
        payment_id=state.payment_id,
        seq=new.seq,
        status=new.status,
        previous_status=state.status,
        source=source,
        occurred_at_ms=occurred_at_ms,
    )
    return Decision(new, changes=(change,))


# While a command's outcome is one of these, more news about it is still expected.
_STILL_WAITING = frozenset(
    {PaymentStatus.REQUIRES_ACTION, PaymentStatus.PROCESSING, PaymentStatus.UNKNOWN}
)


def _with_details(
    state: Payment, card: CardSummary | None, gateway_reference: str | None
) -> Payment:
    """News that moves no status may still fill in what we lacked (a webhook can beat the
    gateway call's own answer, and only the answer carries the card)."""
    if (card is None or state.card is not None) and (
        gateway_reference is None or state.gateway_reference is not None
    ):
        return state
    return dataclasses.replace(
        state,
        card=state.card or card,
        gateway_reference=state.gateway_reference or gateway_reference,
    )


def _remember(applied: tuple[str, ...], key: str) -> tuple[str, ...]:
    """Keep the last few applied inputs: enough to spot redeliveries of recent news."""
    if key in applied:
        return applied
    return (*applied, key)[-16:]
