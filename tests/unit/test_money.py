import pytest

from domain.errors import CurrencyMismatch, InvalidMoney, UnknownCurrency
from domain.money import (
    EXPONENTS,
    Money,
    exponent,
    from_decimal_string,
    normalize_currency,
    to_decimal_string,
)


@pytest.mark.parametrize(
    ("currency", "exp"), [("JPY", 0), ("USD", 2), ("EUR", 2), ("BHD", 3), ("KWD", 3), ("CLF", 4)]
)
def test_iso_4217_exponents(currency: str, exp: int) -> None:
    assert exponent(currency) == exp


def test_every_code_is_three_upper_letters() -> None:
    assert len(EXPONENTS) > 150
    assert all(len(c) == 3 and c.isalpha() and c.isupper() for c in EXPONENTS)


def test_unknown_currency_is_refused() -> None:
    with pytest.raises(UnknownCurrency):
        Money(100, "XXQ")
    with pytest.raises(UnknownCurrency):
        normalize_currency("BTC")


def test_currency_is_normalised_to_upper_case() -> None:
    assert normalize_currency(" usd ") == "USD"
    with pytest.raises(UnknownCurrency):
        Money(1, "usd")


@pytest.mark.parametrize("bad", [10.5, 10.0, "10", True, None])
def test_amount_must_be_an_integer(bad: object) -> None:
    with pytest.raises(InvalidMoney):
        Money(bad, "USD")  # type: ignore[arg-type]


def test_negative_and_huge_amounts_are_refused() -> None:
    with pytest.raises(InvalidMoney):
        Money(-1, "USD")
    with pytest.raises(InvalidMoney):
        Money(10**16, "USD")


def test_arithmetic_refuses_mixed_currencies() -> None:
    assert Money(100, "USD") + Money(250, "USD") == Money(350, "USD")
    assert Money(300, "USD") - Money(100, "USD") == Money(200, "USD")
    assert Money(1, "USD") < Money(2, "USD")
    with pytest.raises(CurrencyMismatch):
        Money(100, "USD") + Money(100, "EUR")
    with pytest.raises(CurrencyMismatch):
        _ = Money(100, "USD") <= Money(100, "JPY")


@pytest.mark.parametrize(
    ("money", "text"),
    [
        (Money(1000, "USD"), "10.00 USD"),
        (Money(5, "USD"), "0.05 USD"),
        (Money(1000, "JPY"), "1000 JPY"),
        (Money(1234, "BHD"), "1.234 BHD"),
    ],
)
def test_display_uses_the_exponent(money: Money, text: str) -> None:
    assert money.display() == text


@pytest.mark.parametrize(
    ("amount", "currency", "text"),
    [(1000, "USD", "10.00"), (5, "USD", "0.05"), (1000, "JPY", "1000"), (1234, "BHD", "1.234")],
)
def test_decimal_strings_round_trip_exactly(amount: int, currency: str, text: str) -> None:
    assert to_decimal_string(amount, currency) == text
    assert from_decimal_string(text, currency) == amount


@pytest.mark.parametrize("bad", ["10.001", "1e3", "-1", "", "1,00", "\u0661\u0660", 10.0, None])
def test_bad_decimal_strings_are_refused(bad: object) -> None:
    with pytest.raises(InvalidMoney):
        from_decimal_string(bad, "USD")
