"""Mapping between Avro record dicts and domain objects. Pure; no I/O."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from domain.errors import SerializationError
from domain.fraud import Outcome, Screen, outcome_of
from domain.metrics import DEFAULT_METHOD, Attempt
from domain.money import Money
from domain.payment import (
    CancelRequested,
    CaptureMode,
    CaptureRequested,
    CardSummary,
    FraudVerdict,
    GatewayCommand,
    GatewayOutcome,
    Operation,
    Payment,
    PaymentRequested,
    ReviewDecided,
    Source,
    StatusChange,
    StatusChecked,
    Verdict,
)
from domain.refunds import RefundChange, RefundOutcome, RefundRequested, RefundState
from domain.status import PaymentStatus

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def to_ms(value: int | datetime) -> int:
    """Avro timestamp-millis as an int, whether fastavro gave a datetime or an int."""
    if isinstance(value, datetime):
        return (value - _EPOCH) // timedelta(milliseconds=1)
    return int(value)


def payment_requested_from_record(rec: dict[str, Any]) -> PaymentRequested:
    try:
        return PaymentRequested(
            payment_id=rec["payment_id"],
            order_id=rec["order_id"],
            user_id=rec["user_id"],
            amount=Money(rec["amount"], rec["currency"]),
            gateway=rec["gateway"],
            method_token=rec["payment_method"]["token"],
            capture=CaptureMode(rec["capture"]),
            fingerprint=rec["fingerprint"],
            requested_at_ms=to_ms(rec["requested_at"]),
            metadata=dict(rec.get("metadata") or {}),
            fallbacks=tuple(rec.get("fallback_gateways") or ()),
            method_tokens=dict(rec.get("method_tokens") or {}),
            method_type=rec["payment_method"]["type"],
            card_fingerprint=rec.get("card_fingerprint") or rec["payment_method"]["token"],
            billing_country=rec.get("billing_country"),
            ip_country=rec.get("ip_country"),
        )
    except (KeyError, ValueError, TypeError) as exc:
        raise SerializationError(f"invalid PaymentRequested: {exc}") from exc


def command_to_record(cmd: GatewayCommand) -> dict[str, Any]:
    return {
        "command_id": cmd.command_id,
        "payment_id": cmd.payment_id,
        "operation": cmd.operation.value,
        "gateway": cmd.gateway,
        "amount": cmd.amount.amount,
        "currency": cmd.amount.currency,
        "capture": cmd.capture.value,
        "method_token": cmd.method_token,
        "idempotency_key": cmd.idempotency_key,
        "order_id": cmd.order_id,
        "user_id": cmd.user_id,
        "gateway_reference": cmd.gateway_reference,
        "refund_id": cmd.refund_id,
        "reason": cmd.reason,
        "issued_at": cmd.issued_at_ms,
        "method_type": cmd.method_type,
    }


def command_from_record(rec: dict[str, Any]) -> GatewayCommand:
    try:
        return GatewayCommand(
            command_id=rec["command_id"],
            payment_id=rec["payment_id"],
            operation=Operation(rec["operation"]),
            gateway=rec["gateway"],
            amount=Money(rec["amount"], rec["currency"]),
            capture=CaptureMode(rec["capture"]),
            method_token=rec["method_token"],
            idempotency_key=rec["idempotency_key"],
            order_id=rec["order_id"],
            user_id=rec["user_id"],
            issued_at_ms=to_ms(rec["issued_at"]),
            gateway_reference=rec.get("gateway_reference"),
            refund_id=rec.get("refund_id"),
            reason=rec.get("reason"),
            method_type=rec.get("method_type") or "card",
        )
    except (KeyError, ValueError, TypeError) as exc:
        raise SerializationError(f"invalid GatewayCommand: {exc}") from exc


def outcome_to_record(out: GatewayOutcome, *, gateway: str, latency_ms: int) -> dict[str, Any]:
    return {
        "command_id": out.command_id,
        "payment_id": out.payment_id,
        "operation": out.operation.value,
        "gateway": gateway,
        "status": out.status.value,
        "gateway_reference": out.gateway_reference,
        "captured_amount": out.captured_amount,
        "decline_code": out.decline_code,
        "error_code": out.error_code,
        "error_message": out.error_message,
        "latency_ms": latency_ms,
        "card_brand": out.card.brand if out.card else None,
        "card_last4": out.card.last4 if out.card else None,
        "card_exp_month": out.card.exp_month if out.card else None,
        "card_exp_year": out.card.exp_year if out.card else None,
        "occurred_at": out.occurred_at_ms,
    }


def refund_outcome_to_record(
    out: RefundOutcome, *, gateway: str, amount: int, latency_ms: int
) -> dict[str, Any]:
    return {
        "command_id": out.command_id,
        "payment_id": out.payment_id,
        "operation": Operation.REFUND.value,
        "gateway": gateway,
        "status": "refund",
        "captured_amount": amount,
        "error_code": out.error_code,
        "latency_ms": latency_ms,
        "refund_id": out.refund_id,
        "refund_status": out.state.value,
        "refund_reference": out.gateway_reference,
        "occurred_at": out.occurred_at_ms,
    }


def result_from_record(rec: dict[str, Any]) -> GatewayOutcome | RefundOutcome:
    """A `gateway_results` record: a payment outcome, or a refund's when operation=refund."""
    if rec.get("operation") != Operation.REFUND.value:
        return outcome_from_record(rec)
    try:
        return RefundOutcome(
            payment_id=rec["payment_id"],
            refund_id=rec["refund_id"],
            command_id=rec["command_id"],
            state=RefundState(rec["refund_status"]),
            occurred_at_ms=to_ms(rec["occurred_at"]),
            gateway_reference=rec.get("refund_reference"),
            error_code=rec.get("error_code"),
        )
    except (KeyError, ValueError, TypeError) as exc:
        raise SerializationError(f"invalid refund GatewayResult: {exc}") from exc


def action_from_record(
    rec: dict[str, Any],
) -> CaptureRequested | CancelRequested | ReviewDecided:
    try:
        at = to_ms(rec["requested_at"])
        if rec["action"] == "capture":
            return CaptureRequested(rec["payment_id"], rec["request_id"], at, rec.get("amount"))
        if rec["action"] == "cancel":
            return CancelRequested(rec["payment_id"], rec["request_id"], at)
        if rec["action"] in ("approve", "reject"):
            approve = rec["action"] == "approve"
            return ReviewDecided(rec["payment_id"], rec["request_id"], approve, at)
    except (KeyError, ValueError, TypeError) as exc:
        raise SerializationError(f"invalid PaymentAction: {exc}") from exc
    raise SerializationError(f"unknown payment action {rec.get('action')!r}")


def refund_requested_from_record(rec: dict[str, Any]) -> RefundRequested:
    try:
        return RefundRequested(
            payment_id=rec["payment_id"],
            refund_id=rec["refund_id"],
            amount=rec.get("amount"),
            fingerprint=rec["fingerprint"],
            requested_at_ms=to_ms(rec["requested_at"]),
            reason=rec.get("reason"),
        )
    except (KeyError, ValueError, TypeError) as exc:
        raise SerializationError(f"invalid RefundRequested: {exc}") from exc


def refund_status_record(change: RefundChange, currency: str) -> dict[str, Any]:
    return {
        "refund_id": change.refund_id,
        "payment_id": change.payment_id,
        "seq": change.seq,
        "status": change.state.value,
        "previous_status": change.previous_state.value if change.previous_state else None,
        "amount": change.amount,
        "currency": currency,
        "reason": change.reason,
        "error_code": change.error_code,
        "gateway_reference": change.gateway_reference,
        "occurred_at": change.occurred_at_ms,
    }


def outcome_from_record(rec: dict[str, Any]) -> GatewayOutcome:
    try:
        return GatewayOutcome(
            payment_id=rec["payment_id"],
            command_id=rec["command_id"],
            operation=Operation(rec["operation"]),
            status=PaymentStatus(rec["status"]),
            occurred_at_ms=to_ms(rec["occurred_at"]),
            gateway_reference=rec.get("gateway_reference"),
            captured_amount=int(rec.get("captured_amount") or 0),
            decline_code=rec.get("decline_code"),
            error_code=rec.get("error_code"),
            error_message=rec.get("error_message"),
            card=_card(rec),
        )
    except (KeyError, ValueError, TypeError) as exc:
        raise SerializationError(f"invalid GatewayResult: {exc}") from exc


def _card(rec: dict[str, Any]) -> CardSummary | None:
    if not (rec.get("card_brand") or rec.get("card_last4")):
        return None
    return CardSummary(
        brand=rec.get("card_brand"),
        last4=rec.get("card_last4"),
        exp_month=rec.get("card_exp_month"),
        exp_year=rec.get("card_exp_year"),
    )


def status_record(payment: Payment, change: StatusChange) -> dict[str, Any]:
    """The public `payment_status` record for one transition."""
    return {
        "payment_id": payment.payment_id,
        "seq": change.seq,
        "order_id": payment.order_id,
        "user_id": payment.user_id,
        "gateway": payment.gateway,
        "status": change.status.value,
        "previous_status": change.previous_status.value if change.previous_status else None,
        "amount": payment.amount.amount,
        "captured_amount": payment.captured_amount,
        "refunded_amount": payment.refunded_amount,
        "currency": payment.amount.currency,
        "decline_code": payment.decline_code,
        "error_code": payment.error_code,
        "gateway_reference": payment.gateway_reference,
        "source": change.source.value,
        "card_brand": payment.card.brand if payment.card else None,
        "card_last4": payment.card.last4 if payment.card else None,
        "occurred_at": change.occurred_at_ms,
    }


def attempt_record(
    cmd: GatewayCommand,
    *,
    outcome: str,
    decline_code: str | None,
    error_code: str | None,
    latency_ms: int,
    occurred_at_ms: int,
) -> dict[str, Any]:
    """The `payment_analytics` record of one gateway attempt."""
    return {
        "payment_id": cmd.payment_id,
        "command_id": cmd.command_id,
        "gateway": cmd.gateway,
        "payment_method": cmd.method_type,
        "operation": cmd.operation.value,
        "outcome": outcome,
        "decline_code": decline_code,
        "error_code": error_code,
        "amount": cmd.amount.amount,
        "currency": cmd.amount.currency,
        "latency_ms": latency_ms,
        "occurred_at": occurred_at_ms,
    }


def check_to_record(chk: StatusChecked, *, gateway: str) -> dict[str, Any]:
    return {
        "payment_id": chk.payment_id,
        "check": chk.check,
        "source": chk.source.value,
        "gateway": gateway,
        "verdict": chk.verdict.value,
        "status": chk.status.value if chk.status else None,
        "gateway_reference": chk.gateway_reference,
        "captured_amount": chk.captured_amount,
        "decline_code": chk.decline_code,
        "error_code": chk.error_code,
        "checked_at": chk.occurred_at_ms,
    }


def check_from_record(rec: dict[str, Any]) -> StatusChecked:
    try:
        return StatusChecked(
            payment_id=rec["payment_id"],
            check=int(rec["check"]),
            source=Source(rec["source"]),
            verdict=Verdict(rec["verdict"]),
            occurred_at_ms=to_ms(rec["checked_at"]),
            status=PaymentStatus(rec["status"]) if rec.get("status") else None,
            gateway_reference=rec.get("gateway_reference"),
            captured_amount=int(rec.get("captured_amount") or 0),
            decline_code=rec.get("decline_code"),
            error_code=rec.get("error_code"),
        )
    except (KeyError, ValueError, TypeError) as exc:
        raise SerializationError(f"invalid PaymentCheck: {exc}") from exc


def attempt_from_record(rec: dict[str, Any]) -> Attempt:
    """A `payment_analytics` record as the metrics windows read it."""
    try:
        return Attempt(
            gateway=rec["gateway"],
            payment_method=rec.get("payment_method") or DEFAULT_METHOD,
            currency=rec["currency"],
            operation=rec["operation"],
            outcome=rec["outcome"],
            amount=int(rec["amount"]),
            latency_ms=int(rec["latency_ms"]),
            occurred_at_ms=to_ms(rec["occurred_at"]),
            decline_code=rec.get("decline_code"),
            error_code=rec.get("error_code"),
        )
    except (KeyError, ValueError, TypeError) as exc:
        raise SerializationError(f"invalid PaymentAttempt: {exc}") from exc


def screen_to_record(screen: Screen, *, kind: str) -> dict[str, Any]:
    """A `fraud_check` record: a payment to screen, or (`decline`) a declined card."""
    return {
        "kind": kind,
        "payment_id": screen.payment_id,
        "user_id": screen.user_id,
        "card": screen.card,
        "amount": screen.amount,
        "currency": screen.currency,
        "billing_country": screen.billing_country,
        "ip_country": screen.ip_country,
        "hits": list(screen.hits),
        "at": screen.at_ms,
    }


def screen_from_record(rec: dict[str, Any]) -> tuple[str, Screen]:
    try:
        return rec["kind"], Screen(
            payment_id=rec["payment_id"],
            user_id=rec["user_id"],
            card=rec["card"],
            amount=int(rec["amount"]),
            currency=rec["currency"],
            at_ms=to_ms(rec["at"]),
            billing_country=rec.get("billing_country"),
            ip_country=rec.get("ip_country"),
            hits=tuple(rec.get("hits") or ()),
        )
    except (KeyError, ValueError, TypeError) as exc:
        raise SerializationError(f"invalid FraudCheck: {exc}") from exc


def verdict_to_record(payment_id: str, hits: tuple[str, ...], at_ms: int) -> dict[str, Any]:
    return {
        "payment_id": payment_id,
        "outcome": outcome_of(hits).value,
        "hits": list(hits),
        "occurred_at": at_ms,
    }


def verdict_from_record(rec: dict[str, Any]) -> FraudVerdict:
    try:
        return FraudVerdict(
            payment_id=rec["payment_id"],
            outcome=Outcome(rec["outcome"]),
            hits=tuple(rec.get("hits") or ()),
            occurred_at_ms=to_ms(rec["occurred_at"]),
        )
    except (KeyError, ValueError, TypeError) as exc:
        raise SerializationError(f"invalid FraudVerdict: {exc}") from exc
