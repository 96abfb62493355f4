"""PayPal adapter mappings: every SDK status mapped, exact amounts, errors and webhooks by type."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from paypalserversdk.models.authorization_status import AuthorizationStatus
from paypalserversdk.models.capture_status import CaptureStatus
from paypalserversdk.models.order_status import OrderStatus
from paypalserversdk.models.refund_status import RefundStatus as SdkRefundStatus

from domain.errors import (
    GatewayAuthError,
    GatewayDeclined,
    GatewayError,
    GatewayInvalidRequest,
    GatewayUnavailable,
    InvalidMoney,
    UnknownCurrency,
)
from domain.money import MAX_MINOR_UNITS, Money
from domain.status import PaymentStatus
from gateways.base import EventKind, RefundStatus
from gateways.paypal import (
    AUTHORIZATION_STATUS_MAP,
    CAPTURE_STATUS_MAP,
    HANDLED_EVENTS,
    ORDER_STATUS_MAP,
    REFUND_STATUS_MAP,
    card_details,
    interpret_event,
    order_result,
    to_minor_units,
    to_value,
    translate_api_error,
)


def sdk_values(enum: type) -> set[str]:
    """The values an SDK enum class declares (its upper-case class attributes)."""
    return {v for k, v in vars(enum).items() if k.isupper() and isinstance(v, str)}


@pytest.mark.parametrize(
    ("enum", "mapping"),
    [
        (OrderStatus, ORDER_STATUS_MAP),
        (CaptureStatus, CAPTURE_STATUS_MAP),
        (AuthorizationStatus, AUTHORIZATION_STATUS_MAP),
        (SdkRefundStatus, REFUND_STATUS_MAP),
    ],
)
def test_every_sdk_status_is_mapped(enum: type, mapping: dict[str, Any]) -> None:
    values = sdk_values(enum)

    assert values, f"could not read {enum.__name__} from the SDK"
    assert values == set(mapping)


def test_statuses_map_to_our_enums() -> None:
    for mapping in (ORDER_STATUS_MAP, CAPTURE_STATUS_MAP, AUTHORIZATION_STATUS_MAP):
        assert all(isinstance(v, PaymentStatus) for v in mapping.values())
    assert all(isinstance(v, RefundStatus) for v in REFUND_STATUS_MAP.values())


# --- amounts --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("currency", "minor", "value"),
    [
        ("USD", 1000, "10.00"),
        ("USD", 5, "0.05"),
        ("USD", 0, "0.00"),
        ("JPY", 1000, "1000"),
        ("BHD", 1234, "1.234"),
        ("BHD", 1, "0.001"),
    ],
)
def test_amounts_convert_exactly(currency: str, minor: int, value: str) -> None:
    assert to_value(Money(minor, currency)) == value
    assert to_minor_units(value, currency) == minor


@pytest.mark.parametrize("currency", ["JPY", "USD", "BHD"])
@given(minor=st.integers(min_value=0, max_value=MAX_MINOR_UNITS))
def test_amounts_round_trip(currency: str, minor: int) -> None:
    assert to_minor_units(to_value(Money(minor, currency)), currency) == minor


def test_fewer_decimals_than_the_currency_are_read_exactly() -> None:
    assert to_minor_units("10.5", "USD") == 1050
    assert to_minor_units("1", "BHD") == 1000


@pytest.mark.parametrize(
    ("value", "currency"),
    [
        ("10.001", "USD"),
        ("10.5", "JPY"),
        ("1.2345", "BHD"),
        ("", "USD"),
        ("1.", "USD"),
        (".5", "USD"),
        ("-1.00", "USD"),
        ("+1.00", "USD"),
        ("1e3", "USD"),
        (" 1.00", "USD"),
        ("1,00", "USD"),
        ("NaN", "USD"),
        ("١٢", "JPY"),  # Arabic-Indic digits: `\d` would take them
        (10.0, "USD"),  # a float is never money
        (None, "USD"),
    ],
)
def test_bad_amounts_are_rejected(value: object, currency: str) -> None:
    with pytest.raises(InvalidMoney):
        to_minor_units(value, currency)


def test_unknown_currency_is_rejected() -> None:
    with pytest.raises(UnknownCurrency):
        to_minor_units("1.00", "XXX")


# --- errors ---------------------------------------------------------------------------------


def error(status: int, issue: str | None = None) -> GatewayError:
    body: dict[str, Any] = {"name": "UNPROCESSABLE_ENTITY", "debug_id": "abc"}
    if issue:
        body["details"] = [{"issue": issue, "description": "..."}]
    return translate_api_error(status, body)


@pytest.mark.parametrize(
    ("status", "issue", "kind", "code"),
    [
        (422, "INSTRUMENT_DECLINED", GatewayDeclined, "card_declined"),
        (422, "TRANSACTION_REFUSED", GatewayDeclined, "card_declined"),
        (422, "INSUFFICIENT_FUNDS", GatewayDeclined, "insufficient_funds"),
        (422, "PAYER_ACTION_REQUIRED", GatewayInvalidRequest, "requires_action"),
        (422, "PAYPAL_REQUEST_ID_PREVIOUSLY_USED", GatewayInvalidRequest, "idempotency_error"),
        (422, "REFUND_AMOUNT_EXCEEDED", GatewayInvalidRequest, "invalid_request"),
        (400, "INVALID_PARAMETER_SYNTAX", GatewayInvalidRequest, "invalid_request"),
        (404, "INVALID_RESOURCE_ID", GatewayInvalidRequest, "invalid_request"),
        (401, None, GatewayAuthError, "authentication_failed"),
        (403, "PERMISSION_DENIED", GatewayAuthError, "authentication_failed"),
        (409, None, GatewayUnavailable, "gateway_unavailable"),
        (429, "RATE_LIMIT_REACHED", GatewayUnavailable, "gateway_unavailable"),
        (500, None, GatewayUnavailable, "gateway_unavailable"),
        (503, None, GatewayUnavailable, "gateway_unavailable"),
        (422, "ORDER_COMPLETION_IN_PROGRESS", GatewayUnavailable, "gateway_unavailable"),
    ],
)
def test_paypal_errors_become_typed_errors(
    status: int, issue: str | None, kind: type[GatewayError], code: str
) -> None:
    exc = error(status, issue)

    assert isinstance(exc, kind)
    assert exc.code == code
    assert "abc" in exc.message  # PayPal's debug_id, for support tickets


def test_declines_keep_the_issue_as_decline_code() -> None:
    exc = error(422, "INSTRUMENT_DECLINED")

    assert isinstance(exc, GatewayDeclined)
    assert exc.decline_code == "instrument_declined"
    assert not exc.retryable


# --- results --------------------------------------------------------------------------------


def capture(status: str, **extra: Any) -> dict[str, Any]:
    return {
        "id": "CAP1",
        "status": status,
        "amount": {"currency_code": "USD", "value": "10.00"},
    } | extra


def order(status: str, payments: dict[str, Any] | None = None, **extra: Any) -> dict[str, Any]:
    unit: dict[str, Any] = {
        "amount": {"currency_code": "USD", "value": "10.00"},
        "custom_id": "pay_1",
    }
    if payments:
        unit["payments"] = payments
    return {"id": "ORD1", "status": status, "purchase_units": [unit]} | extra


def test_completed_order_is_what_its_capture_says() -> None:
    result = order_result(order("COMPLETED", {"captures": [capture("COMPLETED")]}))

    assert (result.status, result.gateway_reference, result.captured_amount) == (
        PaymentStatus.SUCCEEDED,
        "CAP1",
        1000,
    )


def test_declined_capture_carries_the_processor_reason() -> None:
    declined = capture("DECLINED", processor_response={"response_code": "5120"})

    result = order_result(order("COMPLETED", {"captures": [declined]}))

    assert result.status is PaymentStatus.FAILED
    assert (result.decline_code, result.error_code) == ("insufficient_funds", "insufficient_funds")
    assert result.captured_amount == 0


def test_pending_capture_is_processing_with_nothing_captured() -> None:
    result = order_result(order("COMPLETED", {"captures": [capture("PENDING")]}))

    assert (result.status, result.captured_amount) == (PaymentStatus.PROCESSING, 0)


def test_completed_authorize_order_is_authorized_by_its_authorization() -> None:
    auth = {"id": "AUTH1", "status": "CREATED"}

    result = order_result(order("COMPLETED", {"authorizations": [auth]}))

    assert (result.status, result.gateway_reference) == (PaymentStatus.AUTHORIZED, "AUTH1")


def test_order_waiting_for_the_buyer_is_referenced_by_the_order() -> None:
    result = order_result(order("PAYER_ACTION_REQUIRED"))

    assert (result.status, result.gateway_reference) == (PaymentStatus.REQUIRES_ACTION, "ORD1")


def test_unmapped_status_is_an_error_never_a_guess() -> None:
    with pytest.raises(GatewayInvalidRequest):
        order_result(order("SOMETHING_NEW"))


def test_card_details_keep_only_brand_last4_expiry_and_token() -> None:
    source = {"card": {"brand": "VISA", "last_digits": "4242", "expiry": "2030-12", "name": "A B"}}

    card = card_details(order("COMPLETED", payment_source=source), "vault_1")

    assert card is not None
    assert (card.brand, card.last4, card.exp_month, card.exp_year, card.token) == (
        "visa",
        "4242",
        12,
        2030,
        "vault_1",
    )


# --- webhooks -------------------------------------------------------------------------------


def event(resource: dict[str, Any]) -> dict[str, Any]:
    return {"id": "WH-1", "event_version": "1.0", "resource": resource}


@pytest.mark.parametrize(
    ("event_type", "status", "amount"),
    [
        ("PAYMENT.CAPTURE.COMPLETED", PaymentStatus.SUCCEEDED, 1000),
        ("PAYMENT.CAPTURE.PENDING", PaymentStatus.PROCESSING, 0),
        ("PAYMENT.CAPTURE.DENIED", PaymentStatus.FAILED, 0),
        ("PAYMENT.CAPTURE.DECLINED", PaymentStatus.FAILED, 0),
    ],
)
def test_capture_events(event_type: str, status: PaymentStatus, amount: int) -> None:
    effect = interpret_event(event_type, event(capture("X", custom_id="pay_1")))

    assert effect is not None
    assert (effect.kind, effect.status, effect.amount) == (EventKind.PAYMENT, status, amount)
    assert effect.gateway_reference == "CAP1"
    assert (effect.decline_code is not None) == (status is PaymentStatus.FAILED)


@pytest.mark.parametrize(
    ("event_type", "status"),
    [
        ("PAYMENT.AUTHORIZATION.CREATED", PaymentStatus.AUTHORIZED),
        ("PAYMENT.AUTHORIZATION.VOIDED", PaymentStatus.CANCELED),
    ],
)
def test_authorization_events(event_type: str, status: PaymentStatus) -> None:
    effect = interpret_event(event_type, event({"id": "AUTH1", "status": "X"}))

    assert effect is not None
    assert (effect.status, effect.gateway_reference) == (status, "AUTH1")


def test_refund_event_names_the_capture_from_its_up_link() -> None:
    refund = {
        "id": "REF1",
        "status": "COMPLETED",
        "amount": {"currency_code": "JPY", "value": "300"},
        "links": [{"href": "https://api/v2/payments/captures/CAP9", "rel": "up", "method": "GET"}],
    }

    effect = interpret_event("PAYMENT.CAPTURE.REFUNDED", event(refund))

    assert effect is not None
    assert (effect.kind, effect.refund_status, effect.amount) == (
        EventKind.REFUND,
        RefundStatus.PROCESSED,
        300,
    )
    assert (effect.gateway_reference, effect.refund_reference) == ("CAP9", "REF1")


def test_dispute_event() -> None:
    dispute = {
        "dispute_id": "PP-D-1",
        "disputed_transactions": [{"seller_transaction_id": "CAP1", "custom": "pay_1"}],
        "dispute_amount": {"currency_code": "BHD", "value": "1.500"},
    }

    effect = interpret_event("CUSTOMER.DISPUTE.CREATED", event(dispute))

    assert effect is not None
    assert (effect.kind, effect.status, effect.gateway_reference, effect.amount) == (
        EventKind.DISPUTE,
        PaymentStatus.DISPUTED,
        "CAP1",
        1500,
    )


def test_order_approved_means_the_capture_is_next() -> None:
    effect = interpret_event("CHECKOUT.ORDER.APPROVED", event({"id": "ORD1"}))

    assert effect is not None
    assert (effect.status, effect.gateway_reference) == (PaymentStatus.PROCESSING, "ORD1")


def test_every_handled_event_is_interpreted_and_others_are_not() -> None:
    resource = capture("COMPLETED") | {
        "disputed_transactions": [{"seller_transaction_id": "CAP1"}],
    }
    assert all(interpret_event(t, event(resource)) is not None for t in HANDLED_EVENTS)
    assert interpret_event("BILLING.SUBSCRIPTION.CREATED", event(resource)) is None
