"""Prometheus metrics of the worker process (served on the worker's web port at /metrics)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge

INPUTS_IGNORED = Counter(
    "payments_inputs_ignored_total",
    "Inputs the payment agent recorded and did not apply, by topic and reason "
    "(duplicate, regressive, unhandled webhook type, ...).",
    ["topic", "reason"],
)
WEBHOOKS_UNHANDLED = Counter(
    "payments_webhooks_unhandled_total",
    "Verified webhooks of a type we do not act on, by gateway and event type.",
    ["gateway", "event_type"],
)
DEAD_LETTERS = Counter(
    "payments_dead_letters_total", "Records sent to dead_letter, by source topic.", ["topic"]
)
CALLS_SKIPPED = Counter(
    "payments_gateway_calls_skipped_total",
    "Redelivered gateway commands answered from the idempotency table, not called again.",
    ["gateway"],
)
CALLS_IN_FLIGHT = Gauge(
    "payments_gateway_calls_in_flight", "Gateway calls running now (bounded by the executor)."
)
CALLS_IN_FLIGHT_PEAK = Gauge(
    "payments_gateway_calls_in_flight_peak", "The most gateway calls ever in flight at once."
)
CIRCUIT_STATE = Gauge(
    "payments_gateway_circuit_state",
    "Each gateway's circuit breaker: 0 closed, 1 half-open (one probe call), 2 open (refusing).",
    ["gateway"],
)
JANITOR_CHECKS = Counter(
    "payments_janitor_checks_total",
    "Status checks the janitor made, by gateway, source (janitor: unknown; poll: stale "
    "pending/processing) and verdict (found, not_charged, no_answer).",
    ["gateway", "source", "verdict"],
)
JANITOR_EXHAUSTED = Counter(
    "payments_janitor_exhausted_total",
    "Payments still without an answer after the janitor's last scheduled check: for an operator.",
    ["gateway", "status"],
)
STALE_COMMANDS = Counter(
    "payments_gateway_commands_stale_total",
    "Redelivered gateway commands refused because their payment no longer waits for them.",
    ["gateway", "operation"],
)
