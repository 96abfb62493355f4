"""Prometheus metrics of the ingress process, and the `/metrics` page.

With `payments ingress --workers N` every uvicorn process counts on its own; the CLI then
sets `PROMETHEUS_MULTIPROC_DIR` and the page adds up all of them (prometheus-client's
multiprocess mode), whichever process answers the scrape.
"""

from __future__ import annotations

import os

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    generate_latest,
    multiprocess,
)
from starlette.requests import Request
from starlette.responses import Response

WEBHOOKS = Counter(
    "payments_webhooks_total",
    "Webhooks received, by gateway and outcome (accepted, unroutable, or the rejection code).",
    ["gateway", "outcome"],
)
WEBHOOK_VERIFICATIONS = Counter(
    "payments_webhook_verifications_total",
    "Webhook signature verifications, by gateway, result (ok, failed) and the reason a "
    "failed one was refused (bad_signature, stale_timestamp, ...; empty when ok).",
    ["gateway", "result", "reason"],
)
DEAD_LETTERS = Counter(
    "payments_dead_letters_total",
    "Records the ingress sent to dead_letter (verified webhooks naming no payment of ours), "
    "by source topic.",
    ["topic"],
)


async def metrics_page(request: Request) -> Response:
    registry = REGISTRY
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)
