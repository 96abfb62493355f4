"""Routing rules: the first matching rule orders the gateways; disabled or tokenless ones
are skipped."""

from __future__ import annotations

import pytest

from domain.routing import DEFAULT_RULES, parse_rules, route

ALL = ("stripe", "square", "paypal")
RULES = parse_rules("JPY:card=square>stripe; *:card=stripe>square>paypal", ALL)


def test_the_first_matching_rule_orders_the_gateways() -> None:
    assert route(RULES, currency="JPY", method="card", enabled=ALL, tokens=None) == (
        "square",
        "stripe",
    )
    assert route(RULES, currency="USD", method="card", enabled=ALL, tokens=None) == ALL


def test_disabled_gateways_and_gateways_without_a_token_are_skipped() -> None:
    assert route(
        RULES, currency="USD", method="card", enabled=("stripe", "paypal"), tokens=None
    ) == ("stripe", "paypal")
    assert route(
        RULES, currency="USD", method="card", enabled=ALL, tokens={"paypal", "square"}
    ) == ("square", "paypal")
    assert route(RULES, currency="JPY", method="card", enabled=ALL, tokens={"paypal"}) == ()


def test_the_default_rule_routes_every_card_payment() -> None:
    rules = parse_rules(DEFAULT_RULES, ALL)
    assert route(rules, currency="BHD", method="card", enabled=ALL, tokens=None) == ALL


@pytest.mark.parametrize(
    "written",
    ["", "USD=stripe", "USD:card=", "USD:card=stripe>adyen", "USD:card=stripe>stripe"],
)
def test_a_malformed_rule_is_refused(written: str) -> None:
    with pytest.raises(ValueError):
        parse_rules(written, ALL)
