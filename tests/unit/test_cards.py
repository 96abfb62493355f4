from hypothesis import given
from hypothesis import strategies as st

from domain.cards import contains_pan, luhn_valid, redact_pans


def test_luhn() -> None:
    assert luhn_valid("4242424242424242")
    assert luhn_valid("4000000000000002")
    assert not luhn_valid("4242424242424241")


def test_finds_card_numbers_anywhere_in_json() -> None:
    assert contains_pan({"payment_method": {"token": "4242424242424242"}})
    assert contains_pan({"metadata": {"note": "card 4242 4242 4242 4242 thanks"}})
    assert contains_pan({"metadata": {"4000-0000-0000-0002": "x"}})
    assert contains_pan([1, {"a": 4242424242424242}])


def test_ignores_ids_and_short_or_invalid_numbers() -> None:
    assert not contains_pan({"order_id": "o-123", "amount": 1000, "token": "pm_card_visa"})
    assert not contains_pan({"phone": "4242424242424241"})  # fails Luhn
    assert not contains_pan({"n": "123456789012"})  # 12 digits


def test_redaction_removes_the_number() -> None:
    text = redact_pans("bad input 4242424242424242 here")
    assert "4242" not in text
    assert "[REDACTED]" in text


@given(st.text(alphabet="0123456789 -abc", max_size=60))
def test_redaction_leaves_no_detectable_pan(text: str) -> None:
    assert not contains_pan(redact_pans(text))
