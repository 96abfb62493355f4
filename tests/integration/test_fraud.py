"""Fraud rules on the real stack: screened in the stream before any gateway call."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from payments.devstack import DevStack
from tests.conftest import running_stack
from tests.integration.helpers import (
    api_client,
    payment_body,
    post_payment,
    wait_settled,
    wait_status,
)

pytestmark = pytest.mark.stack
FIRED = ("amount", "declines", "country_mismatch", "user_velocity")
FRAUD_ENV = {
    "PAYMENTS_FRAUD_USER_VELOCITY": "3/60:review",
    "PAYMENTS_FRAUD_DECLINES": "2/60:block",
    "PAYMENTS_FRAUD_AMOUNTS": "USD:90000:block",
    "PAYMENTS_FRAUD_COUNTRY_MISMATCH": "review",
}


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, external_services: Any) -> Iterator[DevStack]:
    with running_stack(tmp_path_factory.mktemp("fraud"), external_services, FRAUD_ENV) as s:
        yield s


@pytest.fixture
def client(stack: DevStack) -> Iterator[httpx.Client]:
    with api_client(stack, timeout=15) as c:
        yield c


def pay(client: httpx.Client, token: str = "pm_card_visa", **over: Any) -> str:
    over.setdefault("user_id", f"u-{uuid.uuid4().hex[:8]}")
    r = post_payment(client, payment_body(token, **over))
    assert r.status_code == 202, r.text
    return str(r.json()["payment_id"])


def charged(stack: DevStack, pid: str) -> bool:
    ledger = httpx.get(f"{stack.endpoints['sandbox_url']}/_sandbox/ledger/summary", timeout=10)
    return pid in ledger.json()


def review(client: httpx.Client, pid: str, decision: str) -> httpx.Response:
    return client.post(
        f"/v1/payments/{pid}/review",
        json={"decision": decision},
        headers={"Idempotency-Key": uuid.uuid4().hex},
    )


def test_a_clean_payment_goes_through(stack: DevStack, client: httpx.Client) -> None:
    pid = pay(client)
    assert wait_settled(client, pid)["status"] == "succeeded"
    assert review(client, pid, "approve").status_code == 409  # nothing to review


def test_an_amount_over_the_threshold_is_blocked_before_any_call(
    stack: DevStack, client: httpx.Client
) -> None:
    pid = pay(client, amount=90_000)
    doc = wait_settled(client, pid)
    assert (doc["status"], doc["error_code"]) == ("failed", "fraud_suspected")
    assert not charged(stack, pid)


def test_a_country_mismatch_is_held_then_approved_or_rejected(
    stack: DevStack, client: httpx.Client
) -> None:
    held = [pay(client, billing_country="US", ip_country="BR") for _ in range(2)]
    for pid in held:
        assert wait_status(client, pid, {"in_review"})["status"] == "in_review"
    time.sleep(1)
    assert not any(charged(stack, pid) for pid in held)
    approved, rejected = held
    assert review(client, approved, "approve").status_code == 202
    assert wait_settled(client, approved)["status"] == "succeeded"
    assert charged(stack, approved)
    assert review(client, rejected, "reject").status_code == 202
    doc = wait_settled(client, rejected)
    assert (doc["status"], doc["error_code"]) == ("failed", "fraud_rejected")
    assert not charged(stack, rejected)


def test_velocity_per_user_holds_the_fourth_payment(stack: DevStack, client: httpx.Client) -> None:
    user = f"u-{uuid.uuid4().hex[:8]}"
    first = [pay(client, user_id=user) for _ in range(3)]
    for pid in first:
        assert wait_settled(client, pid)["status"] == "succeeded"
    fourth = pay(client, user_id=user)
    assert wait_status(client, fourth, {"in_review"})["status"] == "in_review"


def test_a_burst_of_declines_blocks_the_card(stack: DevStack, client: httpx.Client) -> None:
    card = f"fp_{uuid.uuid4().hex[:10]}"
    for _ in range(2):
        body = {"type": "card", "token": "pm_card_chargeDeclined", "fingerprint": card}
        pid = pay(client, payment_method=body)
        assert wait_settled(client, pid)["status"] == "failed"
    time.sleep(0.5)  # the declines reach the card's history
    pid = pay(client, payment_method={"type": "card", "token": "pm_card_visa", "fingerprint": card})
    doc = wait_settled(client, pid)
    assert (doc["status"], doc["error_code"]) == ("failed", "fraud_suspected")
    assert not charged(stack, pid)
    metrics = httpx.get(f"{stack.endpoints['worker_url']}/metrics", timeout=10).text
    hits = {
        line.split('rule="')[1].split('"')[0]: float(line.split()[-1])
        for line in metrics.splitlines()
        if line.startswith("payments_fraud_rule_hits_total{")
    }
    assert all(hits.get(rule, 0) >= 1 for rule in FIRED), hits
