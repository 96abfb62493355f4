"""`payments audit` on the real stack: clean after real payments and refunds, and a planted
mismatch in the read model is reported with a non-zero exit."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid

import pytest
import redis

from payments.devstack import DevStack
from streams.readmodel import payment_key
from tests.integration.helpers import (
    api_client,
    payment_body,
    post_payment,
    wait_settled,
    wait_status,
)

pytestmark = pytest.mark.stack


def _audit(stack: DevStack, *ids: str, against: str = "sandbox") -> tuple[int, list[dict]]:
    env = {
        **os.environ,
        "PAYMENTS_KAFKA_BOOTSTRAP": stack.endpoints["kafka_bootstrap"],
        "PAYMENTS_REDIS_URL": stack.endpoints["redis_url"],
        "PAYMENTS_SANDBOX_URL": stack.endpoints["sandbox_url"],
    }
    args = [a for pid in ids for a in ("--payment", pid)]
    done = subprocess.run(
        [sys.executable, "-m", "payments.cli", "audit", "--json", "--against", against, *args],
        capture_output=True, text=True, timeout=120, env=env,
    )  # fmt: skip
    assert done.returncode in (0, 1) and done.stdout.strip(), done.stderr[-1500:]
    return done.returncode, json.loads(done.stdout)


def test_audit_agrees_with_the_ledger_then_reports_a_planted_mismatch(stack: DevStack) -> None:
    client = api_client(stack, timeout=15)
    paid = post_payment(client, payment_body("pm_card_visa")).json()["payment_id"]
    declined = post_payment(client, payment_body("pm_card_chargeDeclined")).json()["payment_id"]
    wait_settled(client, paid)
    wait_settled(client, declined)
    refund = client.post(
        f"/v1/payments/{paid}/refunds",
        json={"amount": 400},
        headers={"Idempotency-Key": uuid.uuid4().hex},
    )
    assert refund.status_code == 202
    wait_status(client, paid, {"partially_refunded"})
    time.sleep(0.5)  # quiet: the refund's webhook has landed too

    code, findings = _audit(stack, paid, declined)
    assert (code, findings) == (0, [])

    store = redis.Redis.from_url(stack.endpoints["redis_url"])
    key = payment_key(paid)
    original = store.hget(key, "doc")
    assert original is not None
    planted = {**json.loads(original), "status": "failed", "captured_amount": 0}
    store.hset(key, "doc", json.dumps(planted))
    try:
        code, findings = _audit(stack, paid, declined)
    finally:
        store.hset(key, "doc", original)
    assert code == 1
    assert {(f["kind"], f["payment_id"]) for f in findings} >= {
        ("charged_not_succeeded", paid),
        ("amount_mismatch", paid),
    }
    assert all(f["payment_id"] == paid for f in findings)


def test_audit_against_the_gateways_own_apis(stack: DevStack) -> None:
    """`--against gateways`: Stripe's and Square's list APIs and PayPal by reference, through
    the official SDKs; a charge the pipeline does not show as captured is reported."""
    client = api_client(stack, timeout=15)
    ids = [
        post_payment(client, payment_body(token, gateway=gateway)).json()["payment_id"]
        for gateway, token in (
            ("stripe", "pm_card_visa"),
            ("square", "cnon:card-nonce-ok"),
            ("paypal", "paypal_vault_ok"),
        )
    ]
    for pid in ids:
        wait_settled(client, pid)
    code, findings = _audit(stack, *ids, against="gateways")
    assert (code, findings) == (0, [])

    store = redis.Redis.from_url(stack.endpoints["redis_url"])
    originals = {pid: store.hget(payment_key(pid), "doc") for pid in ids}
    try:
        for pid, raw in originals.items():
            assert raw is not None
            planted = {**json.loads(raw), "status": "unknown", "captured_amount": 0}
            store.hset(payment_key(pid), "doc", json.dumps(planted))
        code, findings = _audit(stack, *ids, against="gateways")
    finally:
        for pid, raw in originals.items():
            store.hset(payment_key(pid), "doc", raw)
    assert code == 1
    assert {(f["kind"], f["payment_id"]) for f in findings} >= {
        ("charged_not_succeeded", pid) for pid in ids
    }
