"""Stripe webhooks end to end: sandbox -> signed webhook -> ingress -> Kafka -> payment agent."""

from __future__ import annotations

import asyncio
import json
import time
import uuid

import httpx
import pytest
import stripe

from payments.devstack import DevStack
from schemas import decode
from streams import names
from tests.integration.helpers import (
    api_client,
    payment_body,
    post_payment,
    scan_topic,
    wait_settled,
    wait_status,
)

pytestmark = [pytest.mark.stack, pytest.mark.tansu]
SECRET = "whsec_sandbox"  # the default both the sandbox and the ingress use


@pytest.fixture(scope="module")
def client(stack: DevStack) -> httpx.Client:
    return api_client(stack, timeout=15)


@pytest.fixture
def sandbox(stack: DevStack):
    with httpx.Client(base_url=stack.endpoints["sandbox_url"], timeout=15) as c:
        yield c
        c.delete("/_sandbox/faults")
        c.post("/_sandbox/webhooks/policy", json={"duplicates": 1, "reorder_window_ms": 0})


def test_processing_payment_settles_by_webhook(client: httpx.Client, sandbox) -> None:
    pid = post_payment(client, payment_body("pm_card_processing")).json()["payment_id"]
    doc = wait_status(client, pid, {"processing"})
    r = sandbox.post(
        f"/_sandbox/stripe/payment_intents/{doc['gateway_reference']}/settle",
        json={"outcome": "succeeded"},
    )
    assert r.status_code == 200
    done = wait_status(client, pid, {"succeeded"})
    assert done["captured_amount"] == 1000
    assert sandbox.get("/_sandbox/ledger/summary").json()[pid]["captures"] == 1


def test_3ds_payment_fails_by_webhook_when_authentication_fails(
    client: httpx.Client, sandbox
) -> None:
    pid = post_payment(client, payment_body("pm_card_authenticationRequired")).json()["payment_id"]
    doc = wait_status(client, pid, {"requires_action"})
    sandbox.post(
        f"/_sandbox/stripe/payment_intents/{doc['gateway_reference']}/settle",
        json={"outcome": "failed"},
    )
    assert wait_status(client, pid, {"failed"})["status"] == "failed"


def test_dispute_webhook_moves_the_payment_to_disputed(client: httpx.Client, sandbox) -> None:
    pid = post_payment(client, payment_body("pm_card_visa")).json()["payment_id"]
    doc = wait_settled(client, pid)
    sandbox.post(f"/_sandbox/stripe/payment_intents/{doc['gateway_reference']}/dispute")
    assert wait_status(client, pid, {"disputed"})["status"] == "disputed"


def test_duplicated_and_reordered_webhooks_end_in_the_clean_state(
    stack: DevStack, client: httpx.Client, sandbox
) -> None:
    sandbox.post("/_sandbox/webhooks/policy", json={"duplicates": 3, "reorder_window_ms": 300})
    pid = post_payment(client, payment_body("pm_card_processing")).json()["payment_id"]
    doc = wait_status(client, pid, {"processing"})
    sandbox.post(
        f"/_sandbox/stripe/payment_intents/{doc['gateway_reference']}/settle",
        json={"outcome": "succeeded"},
    )
    assert wait_status(client, pid, {"succeeded"})["seq"] == 3  # pending, processing, succeeded
    time.sleep(1.5)  # let every duplicate land
    final = client.get(f"/v1/payments/{pid}").json()
    assert (final["status"], final["seq"]) == ("succeeded", 3)
    deliveries = sandbox.get("/_sandbox/webhooks/deliveries").json()["deliveries"]
    mine = [d for d in deliveries if d["gateway"] == "stripe" and d["delivered"]]
    assert len(mine) >= 6  # processing and succeeded, three times each


def _signed_post(client: httpx.Client, body: bytes, header: str | None) -> httpx.Response:
    headers = {"content-type": "application/json"}
    if header is not None:
        headers["stripe-signature"] = header
    return client.post("/v1/webhooks/stripe", content=body, headers=headers)


def _event(event_id: str, event_type: str = "payment_intent.succeeded") -> bytes:
    return json.dumps(
        {
            "id": event_id,
            "object": "event",
            "type": event_type,
            "created": int(time.time()),
            "data": {"object": {"id": "pi_x", "metadata": {"payment_id": "pay_forged"}}},
        }
    ).encode()


def test_invalid_webhooks_are_refused_and_nothing_reaches_kafka(
    stack: DevStack, client: httpx.Client
) -> None:
    marker = f"evt_{uuid.uuid4().hex}"
    body = _event(marker)
    gen = stripe.WebhookSignature.generate_signature_header
    cases = {
        "signature_missing": None,
        "signature_invalid": gen(body.decode(), "whsec_wrong"),
        "signature_expired": gen(body.decode(), SECRET, timestamp=int(time.time()) - 600),
    }
    for code, header in cases.items():
        r = _signed_post(client, body, header)
        assert r.status_code == 400 and r.json()["error"]["code"] == code
    tampered = _signed_post(client, body.replace(b"pi_x", b"pi_y"), gen(body.decode(), SECRET))
    assert tampered.status_code == 400
    assert tampered.json()["error"]["code"] == "signature_invalid"

    records = asyncio.run(scan_topic(stack.endpoints["kafka_bootstrap"], names.GATEWAY_EVENTS))
    events = [decode("gateway_event", r.value, dict(r.headers)) for r in records]
    assert marker not in {e["event_id"] for e in events}


def test_valid_webhook_is_produced_once_acknowledged(stack: DevStack, client: httpx.Client) -> None:
    marker = f"evt_{uuid.uuid4().hex}"
    body = _event(marker, "customer.created")  # a type we do not act on: acknowledged anyway
    header = stripe.WebhookSignature.generate_signature_header(body.decode(), SECRET)
    r = _signed_post(client, body, header)
    assert r.status_code == 200 and r.json() == {"received": True, "routed": True}
    records = asyncio.run(scan_topic(stack.endpoints["kafka_bootstrap"], names.GATEWAY_EVENTS))
    mine = [
        decode("gateway_event", r.value, dict(r.headers)) for r in records if r.key == b"pay_forged"
    ]
    assert [e["event_id"] for e in mine if e["event_id"] == marker] == [marker]
    assert mine[-1]["payload"] == body
    # The worker skips the type it does not act on, and counts it.
    metric = 'payments_webhooks_unhandled_total{event_type="customer.created",gateway="stripe"}'
    deadline = time.monotonic() + 10
    while metric not in httpx.get(f"{stack.endpoints['worker_url']}/metrics").text:
        assert time.monotonic() < deadline, "unhandled webhook type was never counted"
        time.sleep(0.1)
