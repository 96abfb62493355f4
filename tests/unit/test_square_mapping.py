"""Every Square status and error code the SDK knows lands on one of ours.

Payment, card and refund statuses are plain `str` in the SDK (no Literal), documented only in
the field docstrings; the tests read the values from that documentation in the installed SDK
and also pin Square's documented sets, so a new value or a parse failure both fail loudly.
Error codes and categories are `typing.Literal`s and are enumerated directly.
"""

from __future__ import annotations

import inspect
import re
import typing
from typing import Any

import aiohttp
import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st
from square.types.card_payment_details import CardPaymentDetails
from square.types.error_category import ErrorCategory
from square.types.error_code import ErrorCode
from square.types.payment import Payment
from square.types.payment_refund import PaymentRefund

from domain.errors import (
    GatewayAuthError,
    GatewayDeclined,
    GatewayError,
    GatewayInvalidRequest,
    GatewayTimeout,
    GatewayUnavailable,
)
from domain.status import PaymentStatus
from gateways.base import EventKind, RefundStatus
from gateways.square import (
    CARD_STATUS_MAP,
    ERROR_CATEGORIES,
    ERROR_CODES,
    HANDLED_EVENTS,
    MAX_IDEMPOTENCY_KEY,
    REFUND_STATUS_MAP,
    STATUS_MAP,
    VerificationRequired,
    interpret_event,
    square_idempotency_key,
    to_refund_result,
    to_result,
    translate_error,
    translate_transport_error,
)

PAYMENT_STATUSES = {"APPROVED", "PENDING", "COMPLETED", "CANCELED", "FAILED"}
CARD_STATUSES = {"AUTHORIZED", "CAPTURED", "VOIDED", "FAILED"}
REFUND_STATUSES = {"PENDING", "COMPLETED", "REJECTED", "FAILED"}


def documented_values(model: type[Any], field: str) -> set[str]:
    """The upper-case values listed in the SDK's docstring of `model.field`."""
    source = inspect.getsource(model)
    match = re.search(rf"\n    {field}: [^\n]*\n    \"\"\"(.*?)\"\"\"", source, re.DOTALL)
    assert match, f"no docstring for {model.__name__}.{field} in the SDK"
    return set(re.findall(r"\b[A-Z][A-Z_]{2,}\b", match.group(1)))


def literal_values(alias: Any) -> set[str]:
    literal = next(a for a in typing.get_args(alias) if typing.get_origin(a) is typing.Literal)
    return set(typing.get_args(literal))


# --- statuses -----------------------------------------------------------------------------


def test_every_square_payment_status_is_mapped() -> None:
    assert documented_values(Payment, "status") == PAYMENT_STATUSES
    assert set(STATUS_MAP) == PAYMENT_STATUSES
    assert all(isinstance(v, PaymentStatus) for v in STATUS_MAP.values())


def test_every_square_card_payment_status_is_mapped() -> None:
    assert documented_values(CardPaymentDetails, "status") == CARD_STATUSES
    assert set(CARD_STATUS_MAP) == CARD_STATUSES


def test_every_square_refund_status_is_mapped() -> None:
    assert documented_values(PaymentRefund, "status") == REFUND_STATUSES
    assert set(REFUND_STATUS_MAP) == REFUND_STATUSES
    assert all(isinstance(v, RefundStatus) for v in REFUND_STATUS_MAP.values())


@pytest.mark.parametrize(
    ("square", "ours", "captured"),
    [
        ("APPROVED", PaymentStatus.AUTHORIZED, 0),
        ("PENDING", PaymentStatus.PROCESSING, 0),
        ("COMPLETED", PaymentStatus.SUCCEEDED, 1000),
        ("CANCELED", PaymentStatus.CANCELED, 0),
        ("FAILED", PaymentStatus.FAILED, 0),
    ],
)
def test_payment_maps_to_result(square: str, ours: PaymentStatus, captured: int) -> None:
    result = to_result(payment_json(square), token="cnon:card-nonce-ok")

    assert (result.status, result.provider_status, result.captured_amount) == (
        ours,
        square,
        captured,
    )
    assert result.gateway_reference == "sq_pay_1"
    assert result.card is not None
    assert (result.card.brand, result.card.last4) == ("visa", "1111")
    assert (result.card.exp_month, result.card.exp_year) == (12, 2032)
    assert result.card.token == "cnon:card-nonce-ok"


def test_failed_payment_carries_the_decline_code() -> None:
    payment = payment_json("FAILED")
    payment["card_details"]["errors"] = [
        {"category": "PAYMENT_METHOD_ERROR", "code": "INSUFFICIENT_FUNDS"}
    ]

    result = to_result(payment)

    assert (result.decline_code, result.error_code) == ("insufficient_funds", "insufficient_funds")


def test_card_status_is_the_fallback_when_payment_status_is_absent() -> None:
    payment = payment_json("COMPLETED")
    del payment["status"]

    assert to_result(payment).status is PaymentStatus.SUCCEEDED


def test_unknown_payment_status_is_an_error_not_a_guess() -> None:
    with pytest.raises(GatewayInvalidRequest, match="unmapped"):
        to_result(payment_json("SOMETHING_NEW"))


def test_refund_result_maps_status_and_amount() -> None:
    refund = {
        "id": "rf_1",
        "status": "REJECTED",
        "amount_money": {"amount": 300, "currency": "USD"},
    }

    result = to_refund_result(refund)

    assert (result.status, result.amount, result.provider_status) == (
        RefundStatus.FAILED,
        300,
        "REJECTED",
    )
    assert to_refund_result({**refund, "status": "NEW"}).status is RefundStatus.INITIATED


# --- errors -------------------------------------------------------------------------------


def test_every_mapped_error_code_and_category_exists_in_the_sdk() -> None:
    assert set(ERROR_CODES) <= literal_values(ErrorCode)
    assert set(ERROR_CATEGORIES) == literal_values(ErrorCategory)


@pytest.mark.parametrize("code", sorted(literal_values(ErrorCode)))
def test_every_square_error_code_becomes_a_typed_error(code: str) -> None:
    error = translate_error(400, [{"category": "INVALID_REQUEST_ERROR", "code": code}])

    assert isinstance(error, GatewayError)
    assert type(error) is not GatewayError  # always one of the specific types


@pytest.mark.parametrize(
    ("code", "kind", "our_code", "decline_code"),
    [
        ("GENERIC_DECLINE", GatewayDeclined, "card_declined", "generic_decline"),
        ("CVV_FAILURE", GatewayDeclined, "card_declined", "cvv_failure"),
        ("CARD_EXPIRED", GatewayDeclined, "card_declined", "card_expired"),
        ("INSUFFICIENT_FUNDS", GatewayDeclined, "insufficient_funds", "insufficient_funds"),
        (
            "CARD_DECLINED_VERIFICATION_REQUIRED",
            VerificationRequired,
            "card_declined",
            "card_declined_verification_required",
        ),
        ("INVALID_CARD_DATA", GatewayInvalidRequest, "invalid_request", None),
        ("REFUND_AMOUNT_INVALID", GatewayInvalidRequest, "invalid_request", None),
        ("IDEMPOTENCY_KEY_REUSED", GatewayInvalidRequest, "idempotency_error", None),
        ("UNAUTHORIZED", GatewayAuthError, "authentication_failed", None),
        ("ACCESS_TOKEN_EXPIRED", GatewayAuthError, "authentication_failed", None),
        ("RATE_LIMITED", GatewayUnavailable, "gateway_unavailable", None),
        ("INTERNAL_SERVER_ERROR", GatewayUnavailable, "gateway_unavailable", None),
        ("SERVICE_UNAVAILABLE", GatewayUnavailable, "gateway_unavailable", None),
        ("GATEWAY_TIMEOUT", GatewayTimeout, "gateway_timeout", None),
    ],
)
def test_square_error_code_mapping(
    code: str, kind: type[GatewayError], our_code: str, decline_code: str | None
) -> None:
    error = translate_error(400, [{"category": "API_ERROR", "code": code, "detail": "x"}])

    assert type(error) is kind
    assert error.code == our_code
    if decline_code is not None:
        assert isinstance(error, GatewayDeclined)
        assert error.decline_code == decline_code


def test_retryable_codes_are_retryable_and_declines_are_not() -> None:
    assert translate_error(429, [{"code": "RATE_LIMITED"}]).retryable
    assert translate_error(504, [{"code": "GATEWAY_TIMEOUT"}]).retryable
    assert not translate_error(402, [{"code": "GENERIC_DECLINE"}]).retryable
    assert not translate_error(400, [{"code": "INVALID_CARD_DATA"}]).retryable


@pytest.mark.parametrize(
    ("category", "kind"),
    [
        ("PAYMENT_METHOD_ERROR", GatewayDeclined),
        ("AUTHENTICATION_ERROR", GatewayAuthError),
        ("RATE_LIMIT_ERROR", GatewayUnavailable),
        ("API_ERROR", GatewayUnavailable),
        ("REFUND_ERROR", GatewayInvalidRequest),
    ],
)
def test_unknown_code_falls_back_on_category(category: str, kind: type[GatewayError]) -> None:
    error = translate_error(400, [{"category": category, "code": "SOMETHING_NEW"}])

    assert type(error) is kind


@pytest.mark.parametrize(
    ("status", "kind"),
    [
        (401, GatewayAuthError),
        (403, GatewayAuthError),
        (402, GatewayDeclined),
        (400, GatewayInvalidRequest),
        (404, GatewayInvalidRequest),
        (429, GatewayUnavailable),
        (500, GatewayUnavailable),
        (502, GatewayUnavailable),
        (504, GatewayTimeout),
        (None, GatewayUnavailable),
    ],
)
def test_error_without_square_body_falls_back_on_http_status(
    status: int | None, kind: type[GatewayError]
) -> None:
    assert type(translate_error(status, [])) is kind


def test_verification_required_carries_the_failed_payment() -> None:
    body = {"errors": [], "payment": payment_json("FAILED")}

    error = translate_error(402, [{"code": "CARD_DECLINED_VERIFICATION_REQUIRED"}], body)

    assert isinstance(error, VerificationRequired)
    assert error.payment is not None and error.payment["id"] == "sq_pay_1"


def test_connect_failures_are_unavailable_and_lost_answers_are_timeouts() -> None:
    refused = httpx.ConnectTimeout("refused")
    refused.__cause__ = aiohttp.ClientConnectorError(
        aiohttp.client_reqrep.ConnectionKey("h", 1, False, True, None, None, None),
        OSError(111, "refused"),
    )
    hung_up = httpx.ConnectTimeout("server disconnected")
    hung_up.__cause__ = aiohttp.ServerDisconnectedError()

    assert type(translate_transport_error(httpx.ConnectError("x"))) is GatewayUnavailable
    assert type(translate_transport_error(refused)) is GatewayUnavailable
    assert type(translate_transport_error(hung_up)) is GatewayTimeout
    assert type(translate_transport_error(httpx.ReadTimeout("x"))) is GatewayTimeout
    assert type(translate_transport_error(httpx.RemoteProtocolError("x"))) is GatewayTimeout


# --- idempotency keys ---------------------------------------------------------------------


def test_short_idempotency_keys_pass_unchanged() -> None:
    key = "pay_abcdefghijklmnopqrstuvwx:authorize:1"
    assert square_idempotency_key(key) == key


@given(st.text(min_size=MAX_IDEMPOTENCY_KEY + 1, max_size=300))
def test_long_idempotency_keys_hash_to_45_deterministic_characters(key: str) -> None:
    derived = square_idempotency_key(key)

    assert len(derived) == MAX_IDEMPOTENCY_KEY
    assert derived == square_idempotency_key(key)
    assert derived.startswith("h:")


@given(st.text(max_size=100), st.text(max_size=100))
def test_distinct_keys_stay_distinct(a: str, b: str) -> None:
    if a != b:
        assert square_idempotency_key(a) != square_idempotency_key(b)


def test_a_short_key_cannot_impersonate_a_digest() -> None:
    digest = square_idempotency_key("x" * 100)

    assert square_idempotency_key(digest) != digest


# --- webhooks -----------------------------------------------------------------------------


def test_handled_events() -> None:
    expected = {
        "payment.created",
        "payment.updated",
        "refund.created",
        "refund.updated",
        "dispute.created",
    }
    assert set(HANDLED_EVENTS) == expected


@pytest.mark.parametrize("square", sorted(PAYMENT_STATUSES))
def test_payment_events_report_the_payment_status(square: str) -> None:
    effect = interpret_event("payment.updated", event("payment", {"payment": payment_json(square)}))

    assert effect is not None
    assert (effect.kind, effect.status) == (EventKind.PAYMENT, STATUS_MAP[square])
    assert effect.gateway_reference == "sq_pay_1"
    assert effect.amount == (1000 if square == "COMPLETED" else 0)


def test_failed_payment_event_carries_the_decline() -> None:
    payment = payment_json("FAILED")
    payment["card_details"]["errors"] = [{"code": "GENERIC_DECLINE"}]

    effect = interpret_event("payment.created", event("payment", {"payment": payment}))

    assert effect is not None and effect.decline_code == "generic_decline"


def test_payment_event_with_unknown_status_is_skipped() -> None:
    payload = event("payment", {"payment": payment_json("SOMETHING_NEW")})
    assert interpret_event("payment.updated", payload) is None


@pytest.mark.parametrize("square", sorted(REFUND_STATUSES))
def test_refund_events_report_the_refund(square: str) -> None:
    refund = {
        "id": "rf_1",
        "status": square,
        "payment_id": "sq_pay_1",
        "amount_money": {"amount": 300, "currency": "USD"},
    }

    effect = interpret_event("refund.updated", event("refund", {"refund": refund}))

    assert effect is not None
    assert (effect.kind, effect.refund_status) == (EventKind.REFUND, REFUND_STATUS_MAP[square])
    assert (effect.gateway_reference, effect.refund_reference, effect.amount) == (
        "sq_pay_1",
        "rf_1",
        300,
    )


@pytest.mark.parametrize("wrapper", ["object", "dispute"])
def test_dispute_created_marks_the_payment_disputed(wrapper: str) -> None:
    dispute = {
        "id": "dp_1",
        "amount_money": {"amount": 1000, "currency": "USD"},
        "disputed_payment": {"payment_id": "sq_pay_1"},
        "state": "EVIDENCE_REQUIRED",
    }

    effect = interpret_event("dispute.created", event("dispute", {wrapper: dispute}))

    assert effect is not None
    assert (effect.kind, effect.status) == (EventKind.DISPUTE, PaymentStatus.DISPUTED)
    assert (effect.gateway_reference, effect.amount) == ("sq_pay_1", 1000)


def test_unhandled_event_types_are_none() -> None:
    assert interpret_event("customer.created", event("customer", {})) is None


# --- builders -----------------------------------------------------------------------------


def payment_json(status: str) -> dict[str, Any]:
    card_status = {
        "APPROVED": "AUTHORIZED",
        "COMPLETED": "CAPTURED",
        "CANCELED": "VOIDED",
        "FAILED": "FAILED",
    }
    card_details: dict[str, Any] = {
        "card": {"card_brand": "VISA", "last_4": "1111", "exp_month": 12, "exp_year": 2032}
    }
    if status in card_status:
        card_details["status"] = card_status[status]
    return {
        "id": "sq_pay_1",
        "status": status,
        "amount_money": {"amount": 1000, "currency": "USD"},
        "total_money": {"amount": 1000, "currency": "USD"},
        "reference_id": "pay_1",
        "card_details": card_details,
    }


def event(object_type: str, wrapped: dict[str, Any]) -> dict[str, Any]:
    return {
        "merchant_id": "M",
        "type": f"{object_type}.updated",
        "event_id": "6a8f5f28-54a1-4eb0-a98a-3111513fd4fc",
        "created_at": "2026-01-02T03:04:05.678Z",
        "data": {"type": object_type, "id": "x", "object": wrapped},
    }
