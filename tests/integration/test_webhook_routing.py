"""Webhooks that carry no id of ours: routed by the gateway's payment id, or parked in
dead_letter with the reason. Real Square refunds and disputes, and Stripe disputes, are
like this."""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import UTC, datetime

import httpx
import pytest

from gateways.sandbox.square import signature_headers
from payments.devstack import DevStack
from streams import names
from tests.integration.helpers import (
    payment_body,
    post_payment,
    scan_topic,
    wait_settled,
    wait_status,
)

pytestmark = pytest.mark.stack
SQUARE_KEY = "square_signature_key_sandbox"  # the default the ingress uses


@pytest.fixture(scope="module")
def client(stack: DevStack) -> httpx.Client:
    return httpx.Client(base_url=stack.endpoints["ingress_url"], timeout=15)


def _square_dispute(client: httpx.Client, square_payment: str) -> httpx.Response:
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


def test_a_square_dispute_is_routed_by_square_payment_id(client: httpx.Client) -> None:
    pid = post_payment(client, payment_body("cnon:card-nonce-ok", gateway="square")).json()[
        "payment_id"
    ]
    doc = wait_settled(client, pid)
    assert doc["status"] == "succeeded"
    r = _square_dispute(client, doc["gateway_reference"])
    assert r.status_code == 200, r.text
    assert r.json() == {"received": True, "routed": True}
    assert wait_status(client, pid, {"disputed"})["status"] == "disputed"


def test_an_event_about_no_payment_of_ours_is_parked_in_dead_letter(
    stack: DevStack, client: httpx.Client
) -> None:
    stranger = f"sq_{uuid.uuid4().hex}"
    r = _square_dispute(client, stranger)
    assert r.status_code == 200 and r.json() == {"received": True, "routed": False}
    records = asyncio.run(scan_topic(stack.endpoints["kafka_bootstrap"], names.DEAD_LETTER))
    mine = [rec for rec in records if rec.key == stranger.encode()]
    assert len(mine) == 1
    headers = dict(mine[0].headers)
    assert headers[names.DLQ_ERROR_TYPE] == b"Unroutable"
    assert headers[names.DLQ_SOURCE_TOPIC] == names.GATEWAY_EVENTS.encode()
    assert stranger.encode() in headers[names.DLQ_ERROR_MESSAGE]
