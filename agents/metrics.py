"""Prometheus metrics of the worker process (served on the worker's web port at /metrics)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from faust.exceptions import ConsumerNotStarted
from prometheus_client import Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily

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
GATEWAY_CALLS = Counter(
    "payments_gateway_calls_total",
    "Gateway calls made, by gateway, operation (authorize, capture, cancel, refund) and "
    "outcome (the payment or refund status the call ended in: succeeded, failed, unknown, ...).",
    ["gateway", "operation", "outcome"],
)
GATEWAY_CALL_SECONDS = Histogram(
    "payments_gateway_call_seconds",
    "Gateway call time including retries, by gateway and operation.",
    ["gateway", "operation"],
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)
PAYMENTS_SETTLED = Counter(
    "payments_settled_total",
    "Payments that reached a settled status (succeeded, authorized, failed, canceled, ...), "
    "by gateway and status.",
    ["gateway", "status"],
)
PROCESSING_SECONDS = Histogram(
    "payments_processing_seconds",
    "From the payment request to its first settled status, by gateway.",
    ["gateway"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 3600),
)

EVENT_LOOP_LAG = Gauge(
    "payments_event_loop_lag_seconds",
    "How late the worker's event loop last woke a task that slept (`agents.looplag`): the "
    "time every agent, timer and heartbeat waited behind code that held the loop.",
)


class ConsumerLag:
    """`payments_consumer_lag`: per assigned input partition, the records between the
    group's committed offset and the partition's end (as of the last fetch)."""

    def __init__(self, app: Any, topics: frozenset[str]) -> None:
        self._app = app
        self._topics = topics

    def describe(self) -> Iterator[GaugeMetricFamily]:
        yield self._family()

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = self._family()
        try:
            consumer = self._app.consumer
            assigned = sorted(consumer.assignment())
        except ConsumerNotStarted:
            assigned = []
        for tp in assigned:
            if tp.topic not in self._topics:
                continue
            end = consumer.highwater(tp)
            done = consumer._committed_offset.get(tp) or consumer._read_offset.get(tp) or 0
            if end is not None:
                family.add_metric([tp.topic, str(tp.partition)], max(end - done, 0))
        yield family

    @staticmethod
    def _family() -> GaugeMetricFamily:
        return GaugeMetricFamily(
            "payments_consumer_lag",
            "Records behind the end of each assigned partition: high watermark minus the "
            "group's committed offset, by topic and partition.",
            labels=["topic", "partition"],
        )
