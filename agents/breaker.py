"""A circuit breaker per gateway: stop calling a gateway that keeps failing, try again later.

Closed: calls go through; `failures` consecutive unavailable answers (5xx, timeouts, refused
connections) open it. Open: calls are refused before anything is sent, until `reset_after_s`
has passed. Half-open: one probe call goes through; its success closes the breaker, its
failure opens it again. A decline or an invalid request is an answer, so it counts as a
success: the gateway is up.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from enum import IntEnum

from domain.errors import CircuitOpen


class State(IntEnum):  # the gauge's values
    CLOSED = 0
    HALF_OPEN = 1
    OPEN = 2


class CircuitBreaker:
    def __init__(
        self,
        name: str,
        *,
        failures: int = 5,
        reset_after_s: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
        on_change: Callable[[str, State], None] | None = None,
    ) -> None:
        self.name = name
        self._threshold = failures
        self._reset_after_s = reset_after_s
        self._clock = clock
        self._on_change = on_change
        self._failures = 0
        self._opened_at = 0.0
        self._probing = False
        self.state = State.CLOSED

    def before_call(self) -> None:
        """Raise `CircuitOpen` unless a call may go out now."""
        if self.state is State.OPEN and self._clock() - self._opened_at >= self._reset_after_s:
            self._move(State.HALF_OPEN)
        if self.state is State.OPEN or (self.state is State.HALF_OPEN and self._probing):
            raise CircuitOpen(f"{self.name} circuit is open: not called")
        if self.state is State.HALF_OPEN:
            self._probing = True

    def succeeded(self) -> None:
        self._failures = 0
        self._probing = False
        if self.state is not State.CLOSED:
            self._move(State.CLOSED)

    def failed(self) -> None:
        self._failures += 1
        self._probing = False
        if self.state is State.HALF_OPEN or self._failures >= self._threshold:
            self._opened_at = self._clock()
            self._move(State.OPEN)

    def _move(self, state: State) -> None:
        self.state = state
        if self._on_change is not None:
            self._on_change(self.name, state)


def breakers_for(
    gateways: list[str], *, failures: int, reset_after_s: float
) -> dict[str, CircuitBreaker]:
    """One breaker per gateway, each reporting its state to the worker's metrics."""
    from agents.metrics import CIRCUIT_STATE

    def report(name: str, state: State) -> None:
        CIRCUIT_STATE.labels(name).set(int(state))

    out = {}
    for name in gateways:
        out[name] = CircuitBreaker(
            name, failures=failures, reset_after_s=reset_after_s, on_change=report
        )
        report(name, State.CLOSED)
    return out
