"""The circuit breaker's states, and how the executor's retries use it."""

from __future__ import annotations

import pytest

from agents.breaker import CircuitBreaker, State
from agents.executor import _with_retries
from domain.errors import CircuitOpen, GatewayDeclined, GatewayUnavailable


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_it_opens_after_consecutive_failures_and_probes_after_the_reset() -> None:
    clock = Clock()
    seen: list[State] = []
    breaker = CircuitBreaker("stripe", failures=3, reset_after_s=10, clock=clock,
                             on_change=lambda name, state: seen.append(state))  # fmt: skip
    for _ in range(2):
        breaker.before_call()
        breaker.failed()
    breaker.before_call()
    breaker.succeeded()  # a success in between starts the count again
    for _ in range(3):
        breaker.before_call()
        breaker.failed()
    assert breaker.state is State.OPEN
    with pytest.raises(CircuitOpen):
        breaker.before_call()
    clock.now = 10
    breaker.before_call()  # the probe
    assert breaker.state is State.HALF_OPEN
    with pytest.raises(CircuitOpen):
        breaker.before_call()  # one probe at a time
    breaker.failed()
    assert breaker.state is State.OPEN
    clock.now = 20
    breaker.before_call()
    breaker.succeeded()
    assert breaker.state is State.CLOSED
    assert seen == [State.OPEN, State.HALF_OPEN, State.OPEN, State.HALF_OPEN, State.CLOSED]


async def test_a_refusal_before_any_attempt_is_circuit_open_after_one_it_is_unavailable() -> None:
    breaker = CircuitBreaker("square", failures=1, reset_after_s=60)
    calls = 0

    async def down() -> None:
        nonlocal calls
        calls += 1
        raise GatewayUnavailable("503")

    # The first attempt goes out and fails; the retry is refused: ambiguous, so unavailable.
    with pytest.raises(GatewayUnavailable) as first:
        await _with_retries(down, breaker)
    assert not isinstance(first.value, CircuitOpen) and calls == 1
    # A new command is refused before sending: provably not charged.
    with pytest.raises(CircuitOpen):
        await _with_retries(down, breaker)
    assert calls == 1


async def test_a_decline_is_an_answer_and_keeps_the_circuit_closed() -> None:
    breaker = CircuitBreaker("stripe", failures=1, reset_after_s=60)

    async def declined() -> None:
        raise GatewayDeclined("no", decline_code="generic_decline")

    for _ in range(3):
        with pytest.raises(GatewayDeclined):
            await _with_retries(declined, breaker)
    assert breaker.state is State.CLOSED
