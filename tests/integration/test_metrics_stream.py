"""The metrics stream on the real stack: `payment_metrics` windows equal the totals of the
attempts on `payment_analytics`, window by window, including across a worker SIGKILL.

Windows of 3 s and 60 s here (closed 1 s after their end) so that some close during the test.
The expected totals are computed from the `payment_analytics` topic itself with the pure
`domain.metrics` fold, so every attempt the executor recorded is counted exactly once."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from domain.metrics import add, to_record, windows_for
from payments.devstack import DevStack
from schemas import decode
from schemas.records import attempt_from_record, to_ms
from streams import names
from tests.conftest import running_stack
from tests.integration.helpers import (
    api_client,
    payment_body,
    post_payment,
    scan_topic,
    wait_settled,
)

pytestmark = pytest.mark.stack
SIZES = (3, 60)
METRICS_ENV = {
    "PAYMENTS_METRICS_WINDOWS_S": ",".join(map(str, SIZES)),
    "PAYMENTS_METRICS_GRACE_S": "1",
    "PAYMENTS_METRICS_EMIT_INTERVAL_S": "0.5",
}
TOKENS = [
    ("stripe", "pm_card_visa"),
    ("stripe", "pm_card_chargeDeclined"),
    ("square", "cnon:card-nonce-ok"),
    ("stripe", "pm_card_chargeDeclinedInsufficientFunds"),
    ("square", "cnon:card-nonce-declined"),
    ("paypal", "paypal_vault_ok"),
]
# What must match; emitted_at and final depend on when the record was sent.
COMPARED = (
    "attempts", "successes", "failures", "pending", "success_rate", "failures_by_code",
    "volume", "refunds", "refund_volume", "refund_failures", "calls", "latency_ms_p50",
    "latency_ms_p95", "latency_ms_p99", "latency_ms_max",
)  # fmt: skip


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, external_services: Any) -> Iterator[DevStack]:
    with running_stack(tmp_path_factory.mktemp("metrics"), external_services, METRICS_ENV) as s:
        yield s


@pytest.fixture
def client(stack: DevStack) -> Iterator[httpx.Client]:
    with api_client(stack, timeout=30) as c:
        yield c


def pay(client: httpx.Client, i: int, currency: str = "USD") -> str:
    gateway, token = TOKENS[i % len(TOKENS)]
    body = payment_body(token, gateway=gateway, amount=100 + i, currency=currency)
    r = post_payment(client, body)
    assert r.status_code == 202, r.text
    return str(r.json()["payment_id"])


def expected_windows(bootstrap: str) -> dict[str, dict[str, Any]]:
    totals: dict[str, dict[str, Any]] = {}
    for r in asyncio.run(scan_topic(bootstrap, names.PAYMENT_ANALYTICS)):
        attempt = attempt_from_record(decode("payment_analytics", r.value, dict(r.headers)))
        for window in windows_for(attempt.occurred_at_ms, SIZES):
            key = window.key(attempt.dims)
            totals[key] = add(totals.get(key), attempt)
    return totals


def emitted_windows(bootstrap: str) -> dict[str, dict[str, Any]]:
    """The latest `payment_metrics` record of each window (records of a key share a partition,
    so the scan returns them in the order they were sent)."""
    latest: dict[str, dict[str, Any]] = {}
    for r in asyncio.run(scan_topic(bootstrap, names.PAYMENT_METRICS, idle_s=1.0)):
        latest[r.key.decode()] = decode("payment_metrics", r.value, dict(r.headers))
    return latest


def assert_metrics_match(stack: DevStack, timeout_s: float = 45) -> dict[str, dict[str, Any]]:
    bootstrap = stack.endpoints["kafka_bootstrap"]
    deadline = time.monotonic() + timeout_s
    while True:
        expected = expected_windows(bootstrap)
        emitted = emitted_windows(bootstrap)
        mismatched = {}
        for key, totals in expected.items():
            want = {k: v for k, v in _record(key, totals).items() if k in COMPARED}
            got = {k: emitted[key][k] for k in COMPARED} if key in emitted else None
            if got != want:
                mismatched[key] = (want, got)
        if not mismatched and set(emitted) == set(expected):
            return emitted
        if time.monotonic() > deadline:
            extra = set(emitted) - set(expected)
            raise AssertionError(f"windows differ: {mismatched}; emitted, not expected: {extra}")
        time.sleep(1)


def _record(key: str, totals: dict[str, Any]) -> dict[str, Any]:
    from domain.metrics import parse_key

    window, dims = parse_key(key)
    return to_record(window, dims, totals, final=False, emitted_at_ms=0)


def test_windows_add_up_the_attempts_and_close(stack: DevStack, client: httpx.Client) -> None:
    ids = [pay(client, i) for i in range(12)] + [pay(client, 3, currency="JPY")]
    for pid in ids:
        wait_settled(client, pid)
    refund = client.post(
        f"/v1/payments/{ids[0]}/refunds",
        json={"amount": 40},
        headers={"Idempotency-Key": uuid.uuid4().hex},
    )
    assert refund.status_code == 202, refund.text
    time.sleep(SIZES[0] + 1.5)  # the 3 s windows of those attempts have closed
    emitted = assert_metrics_match(stack)
    records = list(emitted.values())
    assert {r["gateway"] for r in records} == {"stripe", "square", "paypal"}
    assert {r["currency"] for r in records} == {"USD", "JPY"}
    assert all(r["payment_method"] == "card" for r in records)
    assert any(r["refunds"] == 1 and r["refund_volume"] == 40 for r in records)
    codes = set().union(*(r["failures_by_code"] for r in records))
    assert {"generic_decline", "insufficient_funds"} <= codes, codes
    minute = [r for r in records if r["window_size_s"] == SIZES[1]]
    assert sum(r["attempts"] for r in minute) == len(ids)
    short = [r for r in records if r["window_size_s"] == SIZES[0]]
    closed_by = time.time() * 1000 - 1500  # ends + the 1 s grace, and an emit interval
    assert short and all(r["final"] for r in short if to_ms(r["window_end"]) < closed_by)


def test_windows_are_right_across_a_worker_kill(stack: DevStack, client: httpx.Client) -> None:
    with ThreadPoolExecutor(6) as pool:
        futures = [pool.submit(pay, client, i) for i in range(60)]
        for _ in range(2):
            time.sleep(0.8)
            stack.restart("worker", sig=signal.SIGKILL)
        ids = [f.result() for f in futures]
    for pid in ids:
        wait_settled(client, pid, timeout_s=60)
    assert_metrics_match(stack, timeout_s=60)


FLAGS = ("--from-beginning", "--final-only", "--timeout-s", "8")


def test_the_example_consumer_shows_the_closed_windows(stack: DevStack) -> None:
    """examples/payment_metrics_consumer.py, as a downstream team would run it."""
    emitted = assert_metrics_match(stack)
    repo = Path(__file__).resolve().parents[2]
    bootstrap = stack.endpoints["kafka_bootstrap"]
    script = repo / "examples" / "payment_metrics_consumer.py"
    run = subprocess.run(
        [sys.executable, str(script), "--bootstrap", bootstrap, *FLAGS],
        cwd=repo,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 0, run.stderr
    printed: dict[tuple[int, int, str, str], dict[str, Any]] = {}
    for line in run.stdout.splitlines():
        rec = json.loads(line)
        assert rec["final"] is True
        printed[(rec["window_size_s"], rec["window_start"], rec["gateway"], rec["currency"])] = rec
    closed = {
        (r["window_size_s"], to_ms(r["window_start"]), r["gateway"], r["currency"]): r
        for r in emitted.values()
        if r["final"]
    }
    assert closed and set(closed) <= set(printed)
    for key, rec in closed.items():
        assert {k: printed[key][k] for k in COMPARED} == {k: rec[k] for k in COMPARED}
    assert "window(s)" in run.stderr
