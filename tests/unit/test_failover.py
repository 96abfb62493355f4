"""Failover: a routed payment moves to the next gateway only when the one before provably
did not charge."""

from __future__ import annotations

import dataclasses

from domain.payment import GatewayOutcome, Operation, Payment, decide
from domain.status import PaymentStatus
from tests.unit.test_payment_decide import request

S = PaymentStatus
TOKENS = {"square": "cnon:card-nonce-ok", "stripe": "pm_card_visa", "paypal": "vault-1"}


def routed() -> Payment:
    req = dataclasses.replace(
        request(),
        gateway="square",
        method_token=TOKENS["square"],
        fallbacks=("stripe", "paypal"),
        method_tokens=TOKENS,
    )
    state = decide(None, req).state
    assert state is not None
    return state


def answer(state: Payment, status: PaymentStatus, error: str | None) -> GatewayOutcome:
    (cmd,) = [c for c in state.pending_commands if c.command_id == state.outstanding_command]
    return GatewayOutcome(
        payment_id=state.payment_id,
        command_id=cmd.command_id,
        operation=Operation.AUTHORIZE,
        status=status,
        occurred_at_ms=5,
        error_code=error,
    )


def test_a_refusal_before_sending_moves_the_payment_to_the_next_gateway() -> None:
    state = routed()
    d = decide(state, answer(state, S.FAILED, "gateway_circuit_open"))
    assert d.state is not None and d.state.status is S.PENDING and d.changes == ()
    (cmd,) = d.commands
    assert (cmd.gateway, cmd.method_token) == ("stripe", "pm_card_visa")
    assert cmd.command_id == cmd.idempotency_key == "pay_1:authorize:2"
    assert d.state.gateway == "stripe" and d.state.fallbacks == ("paypal",)
    assert d.state.pending_commands == (cmd,) and d.state.outstanding_command == cmd.command_id
    assert d.ignored == "failover:square->stripe"
    # ... and from there to the last one, then no further.
    d2 = decide(d.state, answer(d.state, S.FAILED, "gateway_circuit_open"))
    assert d2.state is not None and d2.commands[0].gateway == "paypal"
    d3 = decide(d2.state, answer(d2.state, S.FAILED, "gateway_circuit_open"))
    assert d3.state is not None and d3.state.status is S.FAILED and d3.commands == ()
    assert d3.state.error_code == "gateway_circuit_open"


def test_a_timeout_never_fails_over() -> None:
    """The first gateway may have charged: the payment waits in `unknown` for the janitor."""
    state = routed()
    d = decide(state, answer(state, S.UNKNOWN, "gateway_timeout"))
    assert d.state is not None and d.state.status is S.UNKNOWN and d.commands == ()
    assert d.state.gateway == "square"


def test_a_decline_never_fails_over() -> None:
    state = routed()
    d = decide(state, answer(state, S.FAILED, "card_declined"))
    assert d.state is not None and d.state.status is S.FAILED and d.commands == ()


def test_a_redelivered_refusal_does_not_fail_over_twice() -> None:
    state = routed()
    refusal = answer(state, S.FAILED, "gateway_circuit_open")
    first = decide(state, refusal)
    assert first.state is not None
    again = decide(first.state, refusal)
    assert again.commands == () and again.state == first.state


def test_a_payment_that_named_its_gateway_never_fails_over() -> None:
    state = decide(None, request()).state
    assert state is not None and state.fallbacks == ()
    d = decide(state, answer(state, S.FAILED, "gateway_circuit_open"))
    assert d.state is not None and d.state.status is S.FAILED and d.commands == ()
