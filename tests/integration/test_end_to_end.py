"""A payment from HTTP through Kafka, the worker and the Stripe SDK, back out as Avro."""

from __future__ import annotations

import asyncio
import io
import time
import uuid
from collections import defaultdict
from typing import Any

import fastavro
import httpx
import pytest

from payments.devstack import DevStack
from streams import names
from tests.integration.helpers import (
    api_client,
    avro_schema,
    fresh_consumer,
    payment_body,
    post_payment,
    wait_settled,
)

pytestmark = pytest.mark.stack


@pytest.fixture(scope="module")
def client(stack: DevStack) -> httpx.Client:
    return api_client(stack, timeout=15)


async def read_status_records(bootstrap: str, payment_ids: set[str], timeout_s: float = 20):
    """Every payment_status record for `payment_ids`, decoded with the .avsc file itself."""
    schema = avro_schema("payment_status")
    consumer = fresh_consumer(bootstrap, names.PAYMENT_STATUS)
    await consumer.start()
    found: dict[str, list[dict[str, Any]]] = defaultdict(list)
    try:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            batches = await consumer.getmany(timeout_ms=200)
            for records in batches.values():
                for r in records:
                    rec = fastavro.schemaless_reader(io.BytesIO(r.value), schema, schema)
                    if rec["payment_id"] in payment_ids:
                        assert r.key == rec["payment_id"].encode()
                        found[rec["payment_id"]].append(rec)
            if all(
                any(rec["status"] in ("succeeded", "failed") for rec in found[p])
                for p in payment_ids
            ):
                break
    finally:
        await consumer.stop()
    return found


def test_success_and_decline_reach_final_status_over_http_and_avro(
    stack: DevStack, client: httpx.Client
) -> None:
    ok = post_payment(client, payment_body("pm_card_visa"))
    declined = post_payment(client, payment_body("pm_card_chargeDeclined"))
    assert ok.status_code == 202 and declined.status_code == 202
    assert ok.json()["status"] == "pending"
    ok_id, declined_id = ok.json()["payment_id"], declined.json()["payment_id"]

    ok_doc = wait_settled(client, ok_id)
    assert ok_doc["status"] == "succeeded"
    assert ok_doc["captured_amount"] == 1000
    assert ok_doc["gateway_reference"].startswith("pi_")
    declined_doc = wait_settled(client, declined_id)
    assert declined_doc["status"] == "failed"
    assert declined_doc["decline_code"] == "generic_decline"
    assert declined_doc["error_code"] == "card_declined"

    records = asyncio.run(
        read_status_records(stack.endpoints["kafka_bootstrap"], {ok_id, declined_id})
    )
    ok_recs = sorted(records[ok_id], key=lambda r: r["seq"])
    assert [(r["seq"], r["status"]) for r in ok_recs] == [(1, "pending"), (2, "succeeded")]
    assert ok_recs[1]["previous_status"] == "pending"
    assert ok_recs[1]["amount"] == 1000 and ok_recs[1]["currency"] == "USD"
    assert [r["status"] for r in sorted(records[declined_id], key=lambda r: r["seq"])] == [
        "pending",
        "failed",
    ]

    ledger = httpx.get(f"{stack.endpoints['sandbox_url']}/_sandbox/ledger/summary").json()
    assert ledger[ok_id]["captured"] == 1000
    assert ledger[ok_id]["captures"] == 1
    assert declined_id not in ledger or ledger[declined_id]["captured"] == 0


def test_insufficient_funds_and_3ds_outcomes(client: httpx.Client) -> None:
    poor = post_payment(client, payment_body("pm_card_chargeDeclinedInsufficientFunds")).json()
    three_ds = post_payment(client, payment_body("pm_card_authenticationRequired")).json()
    doc = wait_settled(client, poor["payment_id"])
    assert (doc["status"], doc["error_code"]) == ("failed", "insufficient_funds")
    assert wait_settled(client, three_ds["payment_id"])["status"] == "requires_action"


def test_manual_capture_stops_at_authorized(client: httpx.Client) -> None:
    r = post_payment(client, payment_body("pm_card_visa", capture="manual", currency="JPY"))
    doc = wait_settled(client, r.json()["payment_id"], manual_capture=True)
    assert doc["status"] == "authorized" and doc["captured_amount"] == 0


def test_same_key_same_body_charges_once(stack: DevStack, client: httpx.Client) -> None:
    body, key = payment_body("pm_card_visa"), uuid.uuid4().hex
    answers = [post_payment(client, body, key) for _ in range(3)]
    assert {a.status_code for a in answers} == {202}
    assert len({a.json()["payment_id"] for a in answers}) == 1
    pid = answers[0].json()["payment_id"]
    assert wait_settled(client, pid)["status"] == "succeeded"
    time.sleep(0.5)  # give any (wrong) second charge time to show up
    ledger = httpx.get(f"{stack.endpoints['sandbox_url']}/_sandbox/ledger/summary").json()
    assert ledger[pid]["captures"] == 1 and ledger[pid]["captured"] == 1000


def test_same_key_different_body_is_409(client: httpx.Client) -> None:
    key = uuid.uuid4().hex
    assert post_payment(client, payment_body(amount=100), key).status_code == 202
    r = post_payment(client, payment_body(amount=200), key)
    assert r.status_code == 409
    assert r.json()["error"]["code"] == "idempotency_key_reused"


@pytest.mark.parametrize(
    ("mutate", "status", "code"),
    [
        (lambda b: b | {"amount": 10.5}, 400, "invalid_request"),
        (lambda b: b | {"currency": "XYZ"}, 400, "unsupported_currency"),
        (lambda b: b | {"gateway": "bitpay"}, 400, "invalid_request"),
        (lambda b: b | {"metadata": {"n": "4242 4242 4242 4242"}}, 400, "raw_card_number_rejected"),
        (
            lambda b: b | {"payment_method": {"type": "card", "token": "4000000000000002"}},
            400,
            "raw_card_number_rejected",
        ),
    ],
)
def test_bad_input_gets_a_coded_4xx(
    client: httpx.Client, mutate: Any, status: int, code: str
) -> None:
    r = post_payment(client, mutate(payment_body()))
    assert r.status_code == status
    error = r.json()["error"]
    assert error["code"] == code and error["message"]
    assert "4242" not in r.text and "4000000000000002" not in r.text


def test_missing_idempotency_key_and_wrong_content_type(client: httpx.Client) -> None:
    r = client.post("/v1/payments", json=payment_body())
    assert r.status_code == 400 and r.json()["error"]["code"] == "idempotency_key_required"
    r = client.post(
        "/v1/payments",
        content=b"{}",
        headers={"Idempotency-Key": "k", "content-type": "text/plain"},
    )
    assert r.status_code == 415 and r.json()["error"]["code"] == "unsupported_media_type"
    r = client.post(
        "/v1/payments",
        content=b"{not json",
        headers={"Idempotency-Key": "k2", "content-type": "application/json"},
    )
    assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_json"


def test_unknown_payment_is_404(client: httpx.Client) -> None:
    r = client.get("/v1/payments/pay_doesnotexist")
    assert r.status_code == 404 and r.json()["error"]["code"] == "payment_not_found"


def test_health_readiness_and_openapi(client: httpx.Client) -> None:
    assert client.get("/healthz").json() == {"ok": True}
    ready = client.get("/readyz")
    assert ready.status_code == 200 and ready.json()["checks"] == {"broker": True, "redis": True}
    spec = client.get("/openapi.json").json()
    assert "/v1/payments" in spec["paths"] and "CreatePayment" in spec["components"]["schemas"]


async def _produce_garbage_then_read_dead_letter(bootstrap: str, marker: bytes) -> dict[str, bytes]:
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        await producer.send_and_wait(names.PAYMENT_INITIATION, b"\x00garbage" + marker, key=marker)
    finally:
        await producer.stop()
    consumer = fresh_consumer(bootstrap, names.DEAD_LETTER)
    await consumer.start()
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            for records in (await consumer.getmany(timeout_ms=200)).values():
                for r in records:
                    if r.key == marker:
                        return {k: bytes(v) for k, v in r.headers}
    finally:
        await consumer.stop()
    raise AssertionError("poison record never reached dead_letter")


def test_poison_message_goes_to_dead_letter_and_the_pipeline_keeps_flowing(
    stack: DevStack, client: httpx.Client
) -> None:
    marker = uuid.uuid4().hex.encode()
    headers = asyncio.run(
        _produce_garbage_then_read_dead_letter(stack.endpoints["kafka_bootstrap"], marker)
    )
    assert headers[names.DLQ_SOURCE_TOPIC] == names.PAYMENT_INITIATION.encode()
    assert headers[names.DLQ_ERROR_TYPE] == b"SerializationError"
    assert int(headers[names.DLQ_SOURCE_OFFSET]) >= 0
    r = post_payment(client, payment_body("pm_card_visa"))
    assert wait_settled(client, r.json()["payment_id"])["status"] == "succeeded"
