"""Small helpers for tests that drive the real stack over HTTP and Kafka."""

from __future__ import annotations

import json
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import fastavro
import httpx
from aiokafka import AIOKafkaConsumer

from domain.status import SETTLED
from gateways.sandbox.square import signature_headers

SCHEMAS = Path(__file__).resolve().parents[2] / "schemas"
SQUARE_KEY = "square_signature_key_sandbox"  # the default the ingress uses


def auth(endpoints: dict[str, Any], role: str = "admin") -> dict[str, str]:
    """The Authorization header of the stack's API key of `role` (admin can do everything)."""
    return {"Authorization": f"Bearer {endpoints[f'{role}_api_key']}"}


def api_client(stack: Any, timeout: float = 15, role: str = "admin") -> httpx.Client:
    """An HTTP client of the stack's ingress, with its API key of `role`."""
    return httpx.Client(
        base_url=stack.endpoints["ingress_url"],
        timeout=timeout,
        headers=auth(stack.endpoints, role),
    )


def payment_body(token: str = "pm_card_visa", **over: Any) -> dict[str, Any]:
    body = {
        "order_id": f"o-{uuid.uuid4().hex[:8]}",
        "user_id": "u-1",
        "amount": 1000,
        "currency": "USD",
        "gateway": "stripe",
        "payment_method": {"type": "card", "token": token},
    }
    return body | over


def post_payment(
    client: httpx.Client, body: dict[str, Any], key: str | None = None
) -> httpx.Response:
    return client.post(
        "/v1/payments", json=body, headers={"Idempotency-Key": key or uuid.uuid4().hex}
    )


def wait_settled(
    client: httpx.Client, payment_id: str, timeout_s: float = 30, *, manual_capture: bool = False
) -> dict[str, Any]:
    """Poll GET until the payment has an answer (or stays in requires_action).

    `authorized` is an answer only for a manual-capture payment: an automatic one may pass
    through it (Square announces APPROVED before COMPLETED) on its way to `succeeded`.
    """
    answers = {s.value for s in SETTLED} | {"requires_action"}
    if not manual_capture:
        answers.discard("authorized")
    deadline = time.monotonic() + timeout_s
    doc: dict[str, Any] = {}
    while time.monotonic() < deadline:
        r = client.get(f"/v1/payments/{payment_id}")
        if r.status_code == 200:
            doc = r.json()
            if doc["status"] in answers:
                return doc
        time.sleep(0.05)
    raise AssertionError(f"{payment_id} not settled after {timeout_s}s: {doc}")


def fresh_consumer(bootstrap: str, topic: str) -> AIOKafkaConsumer:
    """A consumer in a group of its own, reading `topic` from the start."""
    return AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        auto_offset_reset="earliest",
        group_id=f"test-{uuid.uuid4().hex}",
        fetch_max_wait_ms=10,
    )


def avro_schema(name: str) -> Any:
    return fastavro.parse_schema(json.loads((SCHEMAS / f"{name}.avsc").read_text()))


def wait_status(
    client: httpx.Client, payment_id: str, statuses: set[str], timeout_s: float = 30
) -> dict[str, Any]:
    """Poll GET until the payment is in one of `statuses`."""
    return _poll_status(client, f"/v1/payments/{payment_id}", statuses, timeout_s, payment_id)


def _poll_status(
    client: httpx.Client, path: str, statuses: set[str], timeout_s: float, what: str
) -> dict[str, Any]:
    """GET `path` until its document's status is one of `statuses`."""
    deadline = time.monotonic() + timeout_s
    doc: dict[str, Any] = {}
    while time.monotonic() < deadline:
        r = client.get(path)
        if r.status_code == 200 and (doc := r.json())["status"] in statuses:
            return doc
        time.sleep(0.05)
    raise AssertionError(f"{what} never reached {statuses}: {doc}")


async def scan_topic(bootstrap: str, topic: str, idle_s: float = 1.5) -> list[Any]:
    """Every record of `topic`, read until nothing new arrives for `idle_s`."""
    consumer = fresh_consumer(bootstrap, topic)
    await consumer.start()
    records: list[Any] = []
    try:
        quiet_since = time.monotonic()
        while time.monotonic() - quiet_since < idle_s:
            batch = await consumer.getmany(timeout_ms=200)
            for part in batch.values():
                records.extend(part)
            if batch:
                quiet_since = time.monotonic()
    finally:
        await consumer.stop()
    return records


def square_dispute(client: httpx.Client, square_payment: str) -> httpx.Response:
    """A `dispute.created` as real Square sends it: the disputed payment, no reference_id."""
    body = json.dumps(
        {
            "merchant_id": "SANDBOX_MERCHANT",
            "type": "dispute.created",
            "event_id": str(uuid.uuid4()),
            "created_at": datetime.now(UTC).isoformat(),
            "data": {
                "type": "dispute",
                "id": "dp_1",
                "object": {
                    "object": {
                        "id": "dp_1",
                        "state": "EVIDENCE_REQUIRED",
                        "disputed_payment": {"payment_id": square_payment},
                        "amount_money": {"amount": 1000, "currency": "USD"},
                    }
                },
            },
        }
    ).encode()
    url = f"{str(client.base_url).rstrip('/')}/v1/webhooks/square"
    headers = signature_headers(body, signature_key=SQUARE_KEY, notification_url=url)
    return client.post(
        "/v1/webhooks/square", content=body, headers={"content-type": "application/json", **headers}
    )


def wait_refund(
    client: httpx.Client, refund_id: str, statuses: set[str], timeout_s: float = 30
) -> dict[str, Any]:
    """Poll GET until the refund is in one of `statuses`."""
    return _poll_status(
        client, f"/v1/refunds/{refund_id}", statuses, timeout_s, f"refund {refund_id}"
    )
