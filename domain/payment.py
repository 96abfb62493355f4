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

from domain.fraud import FraudRules, Outcome, Screen, outcome_of, stateless_hits
from domain.money import Money
from domain.refunds import (
    FINAL_REFUND_STATES,
    RefundChange,
    RefundLine,
    RefundOutcome,
    RefundRequested,
    RefundState,
    processed,
    refundable,
)
from domain.status import TERMINAL, PaymentStatus, can_move


class CaptureMode(StrEnum):
    AUTOMATIC = "automatic"
    MANUAL = "manual"


class Operation(StrEnum):
    AUTHORIZE = "authorize"  # authorize, and capture too when capture is automatic
    CAPTURE = "capture"
    CANCEL = "cancel"
    REFUND = "refund"


class Source(StrEnum):
    """Where a status change came from."""

    REQUEST = "request"
    GATEWAY = "gateway"
    WEBHOOK = "webhook"
    POLL = "poll"
    JANITOR = "janitor"
    FRAUD = "fraud"  # the fraud rules held or blocked it
    REVIEW = "review"  # a person rejected a held payment


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
    # Routed payments: gateways to fail over to, in order, and the method's token for each.
    fallbacks: tuple[str, ...] = ()
    method_tokens: Mapping[str, str] = field(default_factory=dict)
    method_type: str = "card"  # payment_method.type, for analytics
    # What the fraud rules read: the card's fingerprint (its token when none was given) and
    # the countries, when the client gave them.
    card_fingerprint: str = ""
    billing_country: str | None = None
    ip_country: str | None = None


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
    refund_state: RefundState | None = None  # for refund news
    refund_reference: str | None = None
    capture_needed: bool = False  # the gateway waits for our capture (an approved order)


class Verdict(StrEnum):
    """What a status check got from the gateway."""

    FOUND = "found"  # the gateway knows the payment: `status` is what it says now
    NOT_CHARGED = "not_charged"  # the gateway confirms it holds no payment for our id
    NO_ANSWER = "no_answer"  # the gateway could not answer (down, timeout, circuit open)


@dataclass(frozen=True, slots=True)
class StatusChecked:
    """The janitor asked the gateway about a payment it had no news of (`domain.janitor`)."""

    payment_id: str
    check: int  # the payment's `checks` count when it was asked: a stale answer is ignored
    source: Source  # janitor (an `unknown` payment) or poll (a stale pending/processing one)
    verdict: Verdict
    occurred_at_ms: int
    status: PaymentStatus | None = None
    gateway_reference: str | None = None
    captured_amount: int = 0
    decline_code: str | None = None
    error_code: str | None = None


@dataclass(frozen=True, slots=True)
class CaptureRequested:
    payment_id: str
    request_id: str  # the client's idempotency key: a retried request is the same request
    requested_at_ms: int
    amount: int | None = None  # None captures everything authorized


@dataclass(frozen=True, slots=True)
class CancelRequested:
    payment_id: str
    request_id: str
    requested_at_ms: int


@dataclass(frozen=True, slots=True)
class FraudVerdict:
    """The fraud rules' answer about a payment: allow, review (hold) or block."""

    payment_id: str
    outcome: Outcome
    hits: tuple[str, ...]
    occurred_at_ms: int


@dataclass(frozen=True, slots=True)
class ReviewDecided:
    """A person's decision about a payment the fraud rules held."""

    payment_id: str
    request_id: str
    approve: bool
    requested_at_ms: int


Input = (
    PaymentRequested
    | FraudVerdict
    | ReviewDecided
    | GatewayOutcome
    | GatewayNotice
    | CaptureRequested
    | CancelRequested
    | RefundRequested
    | RefundOutcome
    | StatusChecked
)


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
    gateway_reference: str | None = None  # the gateway's object, for capture/cancel/refund
    refund_id: str | None = None
    reason: str | None = None
    method_type: str = "card"  # the payment method's type, carried for analytics


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
    decline_code: str | None = None
    error_code: str | None = None
    outstanding_command: str | None = None
    card: CardSummary | None = None
    refunds: tuple[RefundLine, ...] = ()
    # The outbox: commands issued and not yet answered, and the last status change. A crash
    # can lose outputs that were sent but not yet acknowledged while the table write survived;
    # a redelivered input then finds itself a duplicate and re-emits these (the gateway dedupes
    # by idempotency key, consumers by seq), so nothing accepted is lost.
    pending_commands: tuple[GatewayCommand, ...] = ()
    last_change: StatusChange | None = None
    # Recently applied inputs ("<command_id>=<status>" or "evt:<event id>"), to spot redeliveries.
    recent_inputs: tuple[str, ...] = ()
    # Bumped by every input that changed the state: dedup records name the version they made,
    # so a dedup entry whose payment write was lost in a crash is not mistaken for a duplicate.
    version: int = 0
    # Status checks made since the status last changed, and when the last one was answered:
    # the janitor's schedule (`domain.janitor.due_at`) counts from them.
    checks: int = 0
    checked_at_ms: int = 0
    # Gateways still to fail over to, in order, with the method's token for each.
    fallbacks: tuple[str, ...] = ()
    method_tokens: Mapping[str, str] = field(default_factory=dict)
    method_type: str = "card"
    # Fraud screening: `awaiting` the rules' verdict, or held for `review`; the authorize
    # command waits in `held_commands` meanwhile (never sent, never replayed). `fraud_hits`
    # are the rules that fired: while awaiting, the stateless ones decided at the request.
    screening: str | None = None
    held_commands: tuple[GatewayCommand, ...] = ()
    fraud_hits: tuple[str, ...] = ()
    card_fingerprint: str = ""
    billing_country: str | None = None
    ip_country: str | None = None

    @property
    def awaiting_verdict(self) -> bool:
        """Waiting for the fraud rules' verdict (the janitor sends its screen again if late)."""
        return self.screening == _AWAITING

    def screen(self) -> Screen:
        """The payment as the fraud rules see it."""
        return Screen(
            payment_id=self.payment_id,
            user_id=self.user_id,
            card=self.card_fingerprint,
            amount=self.amount.amount,
            currency=self.amount.currency,
            at_ms=self.created_at_ms,
            billing_country=self.billing_country,
            ip_country=self.ip_country,
            hits=self.fraud_hits,
        )

    @property
    def refunded_amount(self) -> int:
        return processed(self.refunds)

    def refund(self, refund_id: str) -> RefundLine | None:
        return next((r for r in self.refunds if r.refund_id == refund_id), None)


@dataclass(frozen=True, slots=True)
class Decision:
    state: Payment | None
    changes: tuple[StatusChange, ...] = ()
    commands: tuple[GatewayCommand, ...] = ()
    refund_changes: tuple[RefundChange, ...] = ()
    ignored: str | None = None  # why the input moved no status, when it did not
    screens: tuple[Screen, ...] = ()  # payments for the fraud stages to screen
    declines: tuple[Screen, ...] = ()  # declined cards, for the card stage's history
    verdict: FraudVerdict | None = None  # the fraud verdict reached in this decision itself


def command_id(payment_id: str, operation: Operation, attempt: int = 1) -> str:
    """Deterministic id of a command; it doubles as the gateway idempotency key."""
    return f"{payment_id}:{operation.value}:{attempt}"


def decide(state: Payment | None, event: Input, *, fraud: FraudRules | None = None) -> Decision:
    """What `event` does to the payment. With `fraud` rules, a new payment's authorize command
    waits for their verdict (`_screened`), and a card decline is reported to the card stage
    when the declines rule, which counts them, is on."""
    if isinstance(event, PaymentRequested):
        decision = _on_request(state, event, fraud=fraud)
    else:
        decision = _decide(state, event)
    if decision.ignored in _REPLAYS and decision.state is not None:
        return _replay(decision)
    new = decision.state
    if new is not None and new != state:
        new = dataclasses.replace(new, version=state.version + 1 if state is not None else 1)
        decision = dataclasses.replace(decision, state=new)
        declined = new.status is PaymentStatus.FAILED and new.decline_code is not None
        counted = fraud is not None and bool(fraud.declines)
        if counted and declined and (state is None or state.status is not PaymentStatus.FAILED):
            decision = dataclasses.replace(decision, declines=(new.screen(),))
    return decision


def duplicate(state: Payment, reason: str) -> Decision:
    """An input a dedup table already saw applied: change nothing, re-emit the outbox."""
    return _replay(Decision(state, ignored=reason))


# Duplicates that may be redeliveries after a crash: re-emit the outbox with them.
_REPLAYS = frozenset(
    {"duplicate_request", "duplicate_outcome", "duplicate_event", "duplicate_verdict"}
)
# ... and those that may be redeliveries of the input that issued the pending commands.
_COMMAND_REPLAYS = frozenset({"duplicate_request", "duplicate_verdict"})


def _replay(decision: Decision) -> Decision:
    """The outbox again: pending commands (for a repeated request), the last status change and
    each refund's last change. A crash can lose any of them after the state was saved, a
    refused refund's `failed` record included; consumers dedupe by seq."""
    state = decision.state
    assert state is not None
    repeated = decision.ignored == "duplicate_request"
    commands = state.pending_commands if decision.ignored in _COMMAND_REPLAYS else ()
    screens = (state.screen(),) if repeated and state.screening == _AWAITING else ()
    changes = (state.last_change,) if state.last_change is not None else ()
    refunds = tuple(
        _refund_change(
            line,
            state.payment_id,
            None if line.seq == 1 else RefundState.INITIATED,
            line.updated_at_ms,
        )
        for line in state.refunds
    )
    return dataclasses.replace(
        decision, commands=commands, changes=changes, refund_changes=refunds, screens=screens
    )


def _decide(state: Payment | None, event: Input) -> Decision:
    if isinstance(event, PaymentRequested):
        return _on_request(state, event, fraud=None)
    if isinstance(event, FraudVerdict):
        return _on_verdict(state, event)
    if isinstance(event, ReviewDecided):
        return _on_review(state, event)
    if isinstance(event, GatewayOutcome):
        return _on_outcome(state, event)
    if isinstance(event, GatewayNotice):
        return _on_notice(state, event)
    if isinstance(event, CaptureRequested | CancelRequested):
        return _on_action(state, event)
    if isinstance(event, RefundRequested):
        return _on_refund_request(state, event)
    if isinstance(event, StatusChecked):
        return _on_check(state, event)
    return _on_refund_outcome(state, event)


def _on_request(
    state: Payment | None, req: PaymentRequested, *, fraud: FraudRules | None
) -> Decision:
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
        fallbacks=req.fallbacks,
        method_tokens=dict(req.method_tokens),
        method_type=req.method_type,
        card_fingerprint=req.card_fingerprint,
        billing_country=req.billing_country,
        ip_country=req.ip_country,
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
        method_type=req.method_type,
    )
    if fraud is not None:  # the command waits for the fraud rules' verdict
        held = dataclasses.replace(
            payment, held_commands=(command,), screening=_AWAITING, last_change=change
        )
        return _screened(held, change, fraud)
    payment = dataclasses.replace(payment, pending_commands=(command,), last_change=change)
    return Decision(payment, changes=(change,), commands=(command,))


def _screened(held: Payment, change: StatusChange, fraud: FraudRules) -> Decision:
    """A new payment, its authorize held, against the fraud rules.

    The stateless rules are decided here, at once: they need neither history nor ordering,
    and a topic hop for them cost every payment two round trips before its gateway call.
    Their verdict is final when no rule with history is on, or when it is `block` (nothing
    can be stricter): the payment is released, held for review or failed in this very
    decision, exactly as a verdict from the stages would do it. Otherwise the payment goes,
    carrying these hits, to the stages that have a rule on, and waits for their verdict,
    which combines both (the strictest outcome wins).
    """
    hits = tuple(hit.label() for hit in stateless_hits(fraud, held.screen()))
    held = dataclasses.replace(held, fraud_hits=hits)
    outcome = outcome_of(hits)
    if fraud.stages and outcome is not Outcome.BLOCK:
        return Decision(held, changes=(change,), screens=(held.screen(),))
    verdict = FraudVerdict(held.payment_id, outcome, hits, occurred_at_ms=change.occurred_at_ms)
    decided = _on_verdict(held, verdict)
    return dataclasses.replace(decided, changes=(change, *decided.changes), verdict=verdict)


_AWAITING = "awaiting"
_HELD = "review"


def _release(state: Payment) -> Decision:
    """Send the held authorize command: the payment goes to its gateway."""
    new = dataclasses.replace(
        state,
        screening=None,
        held_commands=(),
        pending_commands=(*state.pending_commands, *state.held_commands),
    )
    return Decision(new, commands=state.held_commands)


def _on_verdict(state: Payment | None, verdict: FraudVerdict) -> Decision:
    if state is None:
        return Decision(None, ignored="unknown_payment")
    if state.screening != _AWAITING:
        return Decision(state, ignored="duplicate_verdict")
    hits = verdict.hits
    if verdict.outcome is Outcome.ALLOW:
        return _release(dataclasses.replace(state, fraud_hits=hits))
    held = verdict.outcome is Outcome.REVIEW
    decision = _advance(
        dataclasses.replace(state, fraud_hits=hits),
        key=f"fraud={verdict.outcome.value}",
        status=PaymentStatus.IN_REVIEW if held else PaymentStatus.FAILED,
        source=Source.FRAUD,
        occurred_at_ms=verdict.occurred_at_ms,
        gateway_reference=None,
        captured_amount=0,
        decline_code=None,
        error_code=None if held else "fraud_suspected",
        outstanding=state.outstanding_command if held else None,
    )
    assert decision.state is not None
    screening, commands = (_HELD, state.held_commands) if held else (None, ())
    new = dataclasses.replace(decision.state, screening=screening, held_commands=commands)
    return dataclasses.replace(decision, state=new)


def _on_review(state: Payment | None, review: ReviewDecided) -> Decision:
    """A person approves a held payment (its authorize command goes out) or rejects it."""
    if state is None:
        return Decision(None, ignored="unknown_payment")
    key = f"review:{review.request_id}=request"
    if key in state.recent_inputs:
        return Decision(state, ignored="duplicate_request")
    if state.screening != _HELD:
        return Decision(state, ignored=f"not_in_review:{state.status.value}")
    state = dataclasses.replace(state, recent_inputs=_remember(state.recent_inputs, key))
    if review.approve:
        return _release(state)
    decision = _advance(
        state,
        key=key,
        status=PaymentStatus.FAILED,
        source=Source.REVIEW,
        occurred_at_ms=review.requested_at_ms,
        gateway_reference=None,
        captured_amount=0,
        decline_code=None,
        error_code="fraud_rejected",
        outstanding=None,
    )
    assert decision.state is not None
    new = dataclasses.replace(decision.state, screening=None, held_commands=())
    return dataclasses.replace(decision, state=new)


def _on_outcome(state: Payment | None, out: GatewayOutcome) -> Decision:
    if state is None:
        return Decision(None, ignored="unknown_payment")
    key = f"{out.command_id}={out.status.value}"
    if key in state.recent_inputs:
        return Decision(state, ignored="duplicate_outcome")
    if out.operation in (Operation.CAPTURE, Operation.CANCEL) and out.status in _NO_ANSWER:
        # A failed capture or cancel leaves the authorization as it was; the client may retry.
        cleared = dataclasses.replace(
            state,
            outstanding_command=None
            if out.command_id == state.outstanding_command
            else state.outstanding_command,
            recent_inputs=_remember(state.recent_inputs, key),
            pending_commands=tuple(
                c for c in state.pending_commands if c.command_id != out.command_id
            ),
        )
        reason = out.error_code or out.status.value
        return Decision(cleared, ignored=f"{out.operation.value}_failed:{reason}")
    if _may_fail_over(state, out):
        return _fail_over(state, out)
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


# Answers that prove the gateway charged nothing: only these allow another gateway to be
# asked. A timeout never does (`unknown`): the first gateway may have charged.
NOT_CHARGED_ERRORS = frozenset({"gateway_circuit_open"})


def _may_fail_over(state: Payment, out: GatewayOutcome) -> bool:
    return (
        out.operation is Operation.AUTHORIZE
        and out.status is PaymentStatus.FAILED
        and out.error_code in NOT_CHARGED_ERRORS
        and out.command_id == state.outstanding_command
        and state.status is PaymentStatus.PENDING
        and any(g in state.method_tokens for g in state.fallbacks)
    )


def _fail_over(state: Payment, out: GatewayOutcome) -> Decision:
    """Ask the next gateway: a new command with its own id and idempotency key. The status
    stays `pending`; the attempt on each gateway is in `payment_analytics`."""
    remaining = list(state.fallbacks)
    while remaining[0] not in state.method_tokens:
        remaining.pop(0)
    gateway = remaining.pop(0)
    attempt = int(out.command_id.rsplit(":", 1)[1]) + 1  # `<payment>:authorize:<attempt>`
    cid = command_id(state.payment_id, Operation.AUTHORIZE, attempt)
    command = dataclasses.replace(
        _command(state, Operation.AUTHORIZE, cid, state.amount, at_ms=out.occurred_at_ms),
        gateway=gateway,
        method_token=state.method_tokens[gateway],
        gateway_reference=None,  # a new gateway: nothing of the old one's applies
    )
    new = dataclasses.replace(
        state,
        gateway=gateway,
        fallbacks=tuple(remaining),
        outstanding_command=cid,
        pending_commands=(
            *(c for c in state.pending_commands if c.command_id != out.command_id),
            command,
        ),
        recent_inputs=_remember(state.recent_inputs, f"{out.command_id}={out.status.value}"),
        updated_at_ms=max(state.updated_at_ms, out.occurred_at_ms),
    )
    return Decision(new, commands=(command,), ignored=f"failover:{state.gateway}->{gateway}")


def _on_notice(state: Payment | None, notice: GatewayNotice) -> Decision:
    if state is None:
        return Decision(None, ignored="unknown_payment")
    key = f"evt:{notice.event_id}"
    if key in state.recent_inputs:
        return Decision(state, ignored="duplicate_event")
    if notice.kind is NoticeKind.REFUND:
        return _on_refund_notice(state, notice, key)
    if notice.status is None:
        return Decision(state, ignored="no_status")
    decision = _advance(
        state,
        key=key,
        status=notice.status,
        source=notice.source,
        occurred_at_ms=notice.occurred_at_ms,
        gateway_reference=notice.gateway_reference,
        captured_amount=notice.amount or 0,
        decline_code=notice.decline_code,
        error_code=_error_for_decline(notice.decline_code),
        # A terminal status ends the payment: no command's answer can change it any more, so
        # none is outstanding (the answer, if it still comes, is ignored as no change).
        outstanding=None if notice.status in TERMINAL else state.outstanding_command,
    )
    if notice.capture_needed and decision.state is not None:
        return _capture_approved(decision, notice)
    return decision


def _on_check(state: Payment | None, chk: StatusChecked) -> Decision:
    """A status check's answer. It counts as one check whatever it says; what it found moves
    the payment like any gateway news, and a confirmed absence fails an `unknown` payment."""
    if state is None:
        return Decision(None, ignored="unknown_payment")
    if chk.check != state.checks or not (state.status in CHECKED or stuck_refunds(state)):
        return Decision(state, ignored="stale_check")
    checked = dataclasses.replace(
        state, checks=state.checks + 1, checked_at_ms=max(state.checked_at_ms, chk.occurred_at_ms)
    )
    key = f"chk:{chk.check}:{chk.occurred_at_ms}"
    if chk.verdict is Verdict.FOUND and chk.status is not None:
        return _advance(
            checked,
            key=key,
            status=chk.status,
            source=chk.source,
            occurred_at_ms=chk.occurred_at_ms,
            gateway_reference=chk.gateway_reference,
            captured_amount=chk.captured_amount,
            decline_code=chk.decline_code,
            error_code=chk.error_code or _error_for_decline(chk.decline_code),
            outstanding=None if chk.status not in _STILL_WAITING else state.outstanding_command,
        )
    if chk.verdict is Verdict.NOT_CHARGED and state.status is PaymentStatus.UNKNOWN:
        # Provably no money moved. The authorize command leaves the outbox with the status,
        # and the executor refuses a redelivered copy of it (`agents.executor`).
        return _advance(
            checked,
            key=key,
            status=PaymentStatus.FAILED,
            source=chk.source,
            occurred_at_ms=chk.occurred_at_ms,
            gateway_reference=None,
            captured_amount=0,
            decline_code=None,
            error_code="gateway_not_charged",
            outstanding=None,
        )
    if chk.verdict is Verdict.NOT_CHARGED and state.status is PaymentStatus.PENDING:
        # The gateway never saw the authorize: its command was lost on the way (a stream that
        # skipped it). Send it again, same idempotency key: a late first copy cannot charge
        # twice.
        lost = tuple(c for c in state.pending_commands if c.command_id == state.outstanding_command)
        if lost:
            return Decision(checked, commands=lost, ignored="check_not_charged:command_resent")
    return Decision(checked, ignored=f"check_{chk.verdict.value}")


# Statuses the janitor checks on: no answer yet, or an answer that more news must follow.
CHECKED = frozenset({PaymentStatus.PENDING, PaymentStatus.PROCESSING, PaymentStatus.UNKNOWN})


def stuck_refunds(state: Payment) -> tuple[GatewayCommand, ...]:
    """Refund commands the gateway never answered (no refund reference yet): the janitor
    sends them again, with the same idempotency key, on its schedule."""
    waiting = {
        line.refund_id
        for line in state.refunds
        if line.state is RefundState.INITIATED and line.gateway_reference is None
    }
    return tuple(
        c
        for c in state.pending_commands
        if c.operation is Operation.REFUND and c.refund_id in waiting
    )


def _capture_approved(decision: Decision, notice: GatewayNotice) -> Decision:
    """The buyer approved (3-D Secure, wallet): an automatic-capture payment is captured now."""
    state = decision.state
    assert state is not None
    if state.capture is not CaptureMode.AUTOMATIC or state.status not in _AWAITING_CAPTURE:
        return decision
    cid = f"{state.payment_id}:capture:approved"
    if cid in (c.command_id for c in state.pending_commands):
        return decision
    command = dataclasses.replace(
        _command(state, Operation.CAPTURE, cid, state.amount, at_ms=notice.occurred_at_ms),
        gateway_reference=notice.gateway_reference or state.gateway_reference,
    )
    # The approval answers the authorize call that asked for it: only the capture is pending.
    waiting = tuple(c for c in state.pending_commands if c.operation is not Operation.AUTHORIZE)
    new = dataclasses.replace(state, outstanding_command=cid, pending_commands=(*waiting, command))
    return dataclasses.replace(decision, state=new, commands=(*decision.commands, command))


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
        return Decision(
            _with_details(state, card, gateway_reference, outstanding), ignored="no_change"
        )
    if not can_move(state.status, status):
        return Decision(
            _with_details(state, card, gateway_reference, outstanding),
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
        checks=0,  # a new status starts the janitor's schedule again
        checked_at_ms=0,
    )
    change = StatusChange(
        payment_id=state.payment_id,
        seq=new.seq,
        status=new.status,
        previous_status=state.status,
        source=source,
        occurred_at_ms=occurred_at_ms,
    )
    new = dataclasses.replace(
        new, last_change=change, pending_commands=_unanswered(new, state.outstanding_command)
    )
    return Decision(new, changes=(change,))


_NO_ANSWER = frozenset({PaymentStatus.FAILED, PaymentStatus.UNKNOWN})
_AWAITING_CAPTURE = frozenset(
    {
        PaymentStatus.REQUIRES_ACTION,
        PaymentStatus.PROCESSING,
        PaymentStatus.PENDING,
        PaymentStatus.IN_REVIEW,
    }
)
_CAPTURABLE = frozenset({PaymentStatus.AUTHORIZED})
_CANCELABLE = frozenset({PaymentStatus.AUTHORIZED, PaymentStatus.REQUIRES_ACTION})
_REFUNDABLE = frozenset({PaymentStatus.SUCCEEDED, PaymentStatus.PARTIALLY_REFUNDED})


def _command(
    state: Payment,
    operation: Operation,
    cid: str,
    amount: Money,
    *,
    at_ms: int,
    refund_id: str | None = None,
    reason: str | None = None,
) -> GatewayCommand:
    return GatewayCommand(
        command_id=cid,
        payment_id=state.payment_id,
        operation=operation,
        gateway=state.gateway,
        amount=amount,
        capture=state.capture,
        method_token="",
        idempotency_key=cid,
        order_id=state.order_id,
        user_id=state.user_id,
        issued_at_ms=at_ms,
        gateway_reference=state.gateway_reference,
        refund_id=refund_id,
        reason=reason,
        method_type=state.method_type,
    )


def _on_action(state: Payment | None, req: CaptureRequested | CancelRequested) -> Decision:
    """Capture or cancel an authorization: one command at a time, from a state that allows it."""
    capture = isinstance(req, CaptureRequested)
    operation = Operation.CAPTURE if capture else Operation.CANCEL
    if state is None:
        return Decision(None, ignored="unknown_payment")
    cid = f"{state.payment_id}:{operation.value}:{req.request_id}"
    if cid == state.outstanding_command or f"{cid}=request" in state.recent_inputs:
        return Decision(state, ignored="duplicate_request")
    allowed = _CAPTURABLE if capture else _CANCELABLE
    if state.status not in allowed:
        return Decision(state, ignored=f"not_{operation.value}able:{state.status.value}")
    if state.outstanding_command is not None:
        return Decision(state, ignored="command_in_progress")
    amount = state.amount.amount
    if isinstance(req, CaptureRequested) and req.amount is not None:
        if not 0 < req.amount <= state.amount.amount:
            return Decision(state, ignored="capture_amount_invalid")
        amount = req.amount
    command = _command(
        state, operation, cid, Money(amount, state.amount.currency), at_ms=req.requested_at_ms
    )
    new = dataclasses.replace(
        state,
        outstanding_command=cid,
        recent_inputs=_remember(state.recent_inputs, f"{cid}=request"),
        pending_commands=(*state.pending_commands, command),
    )
    return Decision(new, commands=(command,))


def _refund_change(
    line: RefundLine, payment_id: str, previous: RefundState | None, at_ms: int
) -> RefundChange:
    return RefundChange(
        refund_id=line.refund_id,
        payment_id=payment_id,
        seq=line.seq,
        state=line.state,
        previous_state=previous,
        amount=line.amount,
        occurred_at_ms=at_ms,
        reason=line.reason,
        # An `initiated` line may hold the executor's "unanswered" for the janitor; a
        # record says an error only for a refund that failed.
        error_code=None if line.state is RefundState.INITIATED else line.error_code,
        gateway_reference=line.gateway_reference,
    )


def _on_refund_request(state: Payment | None, req: RefundRequested) -> Decision:
    line = RefundLine(
        refund_id=req.refund_id,
        amount=req.amount or 0,
        state=RefundState.INITIATED,
        fingerprint=req.fingerprint,
        created_at_ms=req.requested_at_ms,
        updated_at_ms=req.requested_at_ms,
        reason=req.reason,
    )
    if state is None:
        refused = dataclasses.replace(line, state=RefundState.FAILED, error_code="unknown_payment")
        change = _refund_change(refused, req.payment_id, None, req.requested_at_ms)
        return Decision(None, refund_changes=(change,), ignored="unknown_payment")
    existing = state.refund(req.refund_id)
    if existing is not None:
        same = existing.fingerprint == req.fingerprint
        return Decision(state, ignored="duplicate_request" if same else "idempotency_conflict")
    available = refundable(state.captured_amount, state.refunds)
    amount = available if req.amount is None else req.amount
    error = None
    if state.status not in _REFUNDABLE:
        error = "payment_not_refundable"
    elif not 0 < amount <= available:
        error = "amount_exceeds_refundable"
    line = dataclasses.replace(line, amount=amount)
    if error is not None:
        line = dataclasses.replace(line, state=RefundState.FAILED, error_code=error)
    new = dataclasses.replace(state, refunds=(*state.refunds, line))
    change = _refund_change(line, state.payment_id, None, req.requested_at_ms)
    if error is not None:
        return Decision(new, refund_changes=(change,))
    command = _command(
        state,
        Operation.REFUND,
        f"{req.refund_id}:refund",
        Money(amount, state.amount.currency),
        at_ms=req.requested_at_ms,
        refund_id=req.refund_id,
        reason=req.reason,
    )
    new = dataclasses.replace(new, pending_commands=(*new.pending_commands, command))
    return Decision(new, commands=(command,), refund_changes=(change,))


def _on_refund_outcome(state: Payment | None, out: RefundOutcome) -> Decision:
    if state is None:
        return Decision(None, ignored="unknown_payment")
    line = state.refund(out.refund_id)
    if line is None:
        return Decision(state, ignored="unknown_refund")
    if line.state in FINAL_REFUND_STATES:
        return Decision(state, ignored="duplicate_outcome")
    if out.state is RefundState.INITIATED:
        # Accepted, not yet done: keep the gateway's reference so its webhook can find it.
        # With none, the call went unanswered: its error code says so to the janitor.
        updated = dataclasses.replace(
            line,
            gateway_reference=out.gateway_reference,
            error_code=None if out.gateway_reference else out.error_code,
        )
        return Decision(_replace_refund(state, updated), ignored="refund_pending")
    return _settle_refund(
        state, line, out.state, Source.GATEWAY, out.occurred_at_ms, out.gateway_reference,
        out.error_code,
    )  # fmt: skip


def _on_refund_notice(state: Payment, notice: GatewayNotice, key: str) -> Decision:
    line = _refund_for_notice(state, notice)
    if line is None:
        return Decision(state, ignored="unknown_refund")
    if line.state in FINAL_REFUND_STATES:
        return Decision(state, ignored="duplicate_event")
    if notice.refund_state not in FINAL_REFUND_STATES:
        return Decision(state, ignored="refund_pending")
    assert notice.refund_state is not None
    decision = _settle_refund(
        state, line, notice.refund_state, notice.source, notice.occurred_at_ms,
        notice.refund_reference, None,
    )  # fmt: skip
    assert decision.state is not None
    remembered = dataclasses.replace(
        decision.state, recent_inputs=_remember(decision.state.recent_inputs, key)
    )
    return dataclasses.replace(decision, state=remembered)


def _refund_for_notice(state: Payment, notice: GatewayNotice) -> RefundLine | None:
    """The refund a webhook speaks of: by the gateway's refund id, or, when the webhook beat
    the refund call's own answer, the one open refund of that amount."""
    if notice.refund_reference:
        for line in state.refunds:
            if line.gateway_reference == notice.refund_reference:
                return line
    candidates = [
        line
        for line in state.refunds
        if line.state is RefundState.INITIATED
        and line.gateway_reference is None
        and line.amount == notice.amount
    ]
    return candidates[0] if len(candidates) == 1 else None


def _replace_refund(state: Payment, line: RefundLine) -> Payment:
    refunds = tuple(line if r.refund_id == line.refund_id else r for r in state.refunds)
    return dataclasses.replace(state, refunds=refunds)


def _settle_refund(
    state: Payment,
    line: RefundLine,
    final: RefundState,
    source: Source,
    at_ms: int,
    gateway_reference: str | None,
    error_code: str | None,
) -> Decision:
    done = dataclasses.replace(
        line,
        state=final,
        seq=line.seq + 1,
        updated_at_ms=max(line.updated_at_ms, at_ms),
        gateway_reference=gateway_reference or line.gateway_reference,
        error_code=error_code if final is RefundState.FAILED else None,
    )
    refund_change = _refund_change(done, state.payment_id, line.state, at_ms)
    new = _replace_refund(state, done)
    command_id = f"{line.refund_id}:refund"
    new = dataclasses.replace(
        new, pending_commands=tuple(c for c in new.pending_commands if c.command_id != command_id)
    )
    if final is not RefundState.PROCESSED:
        return Decision(new, refund_changes=(refund_change,))
    status = (
        PaymentStatus.REFUNDED
        if new.refunded_amount >= state.captured_amount
        else PaymentStatus.PARTIALLY_REFUNDED
    )
    # Partially refunded twice is still a transition: the refunded amount moved.
    if status != state.status and not can_move(state.status, status):
        return Decision(new, refund_changes=(refund_change,))
    change = StatusChange(
        payment_id=state.payment_id,
        seq=state.seq + 1,
        status=status,
        previous_status=state.status,
        source=source,
        occurred_at_ms=at_ms,
    )
    new = dataclasses.replace(new, status=status, seq=change.seq, last_change=change)
    return Decision(new, changes=(change,), refund_changes=(refund_change,))


# While a command's outcome is one of these, more news about it is still expected.
_STILL_WAITING = frozenset(
    {PaymentStatus.REQUIRES_ACTION, PaymentStatus.PROCESSING, PaymentStatus.UNKNOWN}
)


def _unanswered(state: Payment, previously_outstanding: str | None) -> tuple[GatewayCommand, ...]:
    """Drop the command that was outstanding once it no longer is: it has its answer."""
    if previously_outstanding is None or state.outstanding_command == previously_outstanding:
        return state.pending_commands
    return tuple(c for c in state.pending_commands if c.command_id != previously_outstanding)


def _with_details(
    state: Payment, card: CardSummary | None, gateway_reference: str | None, outstanding: str | None
) -> Payment:
    """News that moves no status may still fill in what we lacked, and answer the command we
    were waiting on: a webhook can beat the gateway call's own answer."""
    new = dataclasses.replace(
        state,
        card=state.card or card,
        gateway_reference=state.gateway_reference or gateway_reference,
        outstanding_command=outstanding,
    )
    new = dataclasses.replace(new, pending_commands=_unanswered(new, state.outstanding_command))
    return state if new == state else new


def _remember(applied: tuple[str, ...], key: str) -> tuple[str, ...]:
    """Keep the last few applied inputs: enough to spot redeliveries of recent news."""
    if key in applied:
        return applied
    return (*applied, key)[-16:]
