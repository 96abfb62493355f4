import pytest
from pydantic import ValidationError

from domain.errors import UnknownCurrency
from domain.ids import payment_id_for
from ingress.models import CreatePayment


def body(**over: object) -> dict:
    base = {
        "order_id": "o-1",
        "user_id": "u-1",
        "amount": 1000,
        "currency": "usd",
        "gateway": "stripe",
        "payment_method": {"type": "card", "token": "pm_card_visa"},
    }
    return base | over


def test_valid_body_normalises_currency_and_defaults_capture() -> None:
    p = CreatePayment.model_validate(body())
    assert p.currency == "USD" and p.capture == "automatic" and p.metadata == {}


@pytest.mark.parametrize(
    "over",
    [
        {"amount": 10.5},
        {"amount": "1000"},
        {"amount": 0},
        {"amount": -5},
        {"gateway": "bitpay"},
        {"payment_method": {"type": "card"}},
        {"payment_method": {"type": "bank", "token": "x"}},
        {"capture": "later"},
        {"unexpected": 1},
        {"order_id": ""},
        {"metadata": {"k": 1}},
    ],
)
def test_invalid_bodies_are_refused(over: dict) -> None:
    with pytest.raises(ValidationError):
        CreatePayment.model_validate(body(**over))


def test_unknown_currency_is_its_own_error() -> None:
    with pytest.raises(UnknownCurrency):
        CreatePayment.model_validate(body(currency="XYZ"))


def test_fingerprint_depends_on_body_not_on_key_order() -> None:
    a = CreatePayment.model_validate(body(metadata={"x": "1", "y": "2"}))
    b = CreatePayment.model_validate(body(metadata={"y": "2", "x": "1"}))
    c = CreatePayment.model_validate(body(amount=1001))
    assert a.fingerprint() == b.fingerprint() != c.fingerprint()


def test_payment_id_is_derived_from_the_idempotency_key() -> None:
    assert payment_id_for("k-1") == payment_id_for("k-1")
    assert payment_id_for("k-1") != payment_id_for("k-2")
    assert payment_id_for("k-1").startswith("pay_")
