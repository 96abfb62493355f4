"""Capture, cancel and refunds through the whole pipeline, for every gateway that has them."""

from __future__ import annotations

import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from payments.devstack import DevStack
from tests.integration.helpers import (
    api_client,
    payment_body,
    post_payment,
    wait_refund,
    wait_settled,
    wait_status,
)

pytestmark = [pytest.mark.stack, pytest.mark.tansu]

OK = {"stripe": "pm_card_visa", "paypal": "paypal_vault_ok", "square": "cnon:card-nonce-ok"}


@pytest.fixture(scope="module")
def client(stack: DevStack) -> httpx.Client:
    return api_client(stack, timeout=15)


@pytest.fixture(scope="module")
def sandbox(stack: DevStack) -> httpx.Client:
    return httpx.Client(base_url=stack.endpoints["sandbox_url"], timeout=15)


def post(client: httpx.Client, path: str, body: dict | None = None, key: str | None = None):
    return client.post(path, json=body or {}, headers={"Idempotency-Key": key or uuid.uuid4().hex})


def paid(client: httpx.Client, gateway: str, amount: int = 1000) -> str:
    r = post_payment(client, payment_body(OK[gateway], gateway=gateway, amount=amount))
    pid = r.json()["payment_id"]
    assert wait_settled(client, pid)["status"] == "succeeded"
    return pid


@pytest.mark.parametrize("gateway", sorted(OK))
def test_refund_partial_then_full(gateway: str, client, sandbox) -> None:
    pid = paid(client, gateway)
    first = post(client, f"/v1/payments/{pid}/refunds", {"amount": 300, "reason": "duplicate"})
    assert first.status_code == 202, first.text
    refund = wait_refund(client, first.json()["refund_id"], {"processed", "failed"})
    assert (refund["status"], refund["amount"]) == ("processed", 300)
    doc = wait_status(client, pid, {"partially_refunded"})
    assert doc["refunded_amount"] == 300
    rest = post(client, f"/v1/payments/{pid}/refunds", {})
    assert wait_refund(client, rest.json()["refund_id"], {"processed"})["amount"] == 700
    assert wait_status(client, pid, {"refunded"})["refunded_amount"] == 1000
    ledger = sandbox.get("/_sandbox/ledger/summary").json()[pid]
    assert (ledger["captured"], ledger["refunded"], ledger["refunds"]) == (1000, 1000, 2)


def test_concurrent_refunds_beyond_the_capture_are_partly_refused(client, sandbox) -> None:
    pid = paid(client, "stripe")
    with ThreadPoolExecutor(4) as pool:
        answers = list(
            pool.map(
                lambda _: post(client, f"/v1/payments/{pid}/refunds", {"amount": 400}), range(4)
            )
        )
    ids = [a.json()["refund_id"] for a in answers]
    final = [wait_refund(client, rid, {"processed", "failed"}) for rid in ids]
    done = [r for r in final if r["status"] == "processed"]
    refused = [r for r in final if r["status"] == "failed"]
    assert len(done) == 2 and len(refused) == 2  # 2 x 400 fit in 1000; a third would not
    assert {r["error_code"] for r in refused} == {"amount_exceeds_refundable"}
    ledger = sandbox.get("/_sandbox/ledger/summary").json()[pid]
    assert ledger["refunded"] == 800 <= ledger["captured"]


def test_same_refund_key_twice_is_one_refund(client, sandbox) -> None:
    pid = paid(client, "stripe")
    key = uuid.uuid4().hex
    a = post(client, f"/v1/payments/{pid}/refunds", {"amount": 100}, key)
    b = post(client, f"/v1/payments/{pid}/refunds", {"amount": 100}, key)
    assert a.json()["refund_id"] == b.json()["refund_id"]
    wait_refund(client, a.json()["refund_id"], {"processed"})
    conflict = post(client, f"/v1/payments/{pid}/refunds", {"amount": 200}, key)
    assert conflict.status_code == 409
    time.sleep(0.5)
    assert sandbox.get("/_sandbox/ledger/summary").json()[pid]["refunds"] == 1


@pytest.mark.parametrize("gateway", ["stripe", "paypal"])
def test_partial_capture_of_an_authorization(gateway: str, client, sandbox) -> None:
    r = post_payment(client, payment_body(OK[gateway], gateway=gateway, capture="manual"))
    pid = r.json()["payment_id"]
    assert wait_settled(client, pid, manual_capture=True)["status"] == "authorized"
    assert post(client, f"/v1/payments/{pid}/capture", {"amount": 600}).status_code == 202
    doc = wait_status(client, pid, {"succeeded"})
    assert doc["captured_amount"] == 600
    assert sandbox.get("/_sandbox/ledger/summary").json()[pid]["captured"] == 600


def test_cancel_an_authorization(client, sandbox) -> None:
    r = post_payment(client, payment_body("cnon:card-nonce-ok", gateway="square", capture="manual"))
    pid = r.json()["payment_id"]
    assert wait_settled(client, pid, manual_capture=True)["status"] == "authorized"
    assert post(client, f"/v1/payments/{pid}/cancel").status_code == 202
    assert wait_status(client, pid, {"canceled"})["status"] == "canceled"
    assert sandbox.get("/_sandbox/ledger/summary").json().get(pid, {}).get("captured", 0) == 0


def test_refund_of_an_unknown_payment_or_in_another_currency_is_refused(client) -> None:
    r = post(client, "/v1/payments/pay_nope/refunds", {"amount": 1})
    assert r.status_code == 404 and r.json()["error"]["code"] == "payment_not_found"
    pid = paid(client, "stripe")
    r = post(client, f"/v1/payments/{pid}/refunds", {"amount": 1, "currency": "JPY"})
    assert r.status_code == 400 and r.json()["error"]["code"] == "currency_mismatch"
    r = post(client, f"/v1/payments/{pid}/refunds", {"amount": 1.5})
    assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_request"
    assert client.get("/v1/refunds/re_nope").status_code == 404
