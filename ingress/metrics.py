"""Prometheus metrics of the ingress process."""

from __future__ import annotations

from prometheus_client import Counter

WEBHOOKS = Counter(
    "payments_webhooks_total",
    "Webhooks received, by gateway and outcome (accepted, unroutable, or the rejection code).",
    ["gateway", "outcome"],
)
