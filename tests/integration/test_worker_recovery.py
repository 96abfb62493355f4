"""A worker restart (graceful, or SIGKILL with its RocksDB store wiped) recovers the payments
table exactly from its changelog, and nothing posted while it was down is lost."""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator

import httpx
import pytest

from payments.devstack import DevStack
from tests.conftest import running_stack
from tests.integration.helpers import api_client, payment_body, post_payment, wait_settled

pytestmark = [pytest.mark.stack, pytest.mark.tansu]


@pytest.fixture(scope="module")
def stack(tmp_path_factory, external_services) -> Iterator[DevStack]:
    """A stack of its own: other tests' late webhook retries must not land mid-comparison."""
    with running_stack(tmp_path_factory.mktemp("recovery"), external_services) as own:
        yield own


def digest(stack: DevStack) -> dict:
    return httpx.get(f"{stack.endpoints['worker_url']}/tables/payments/digest/", timeout=10).json()


def rows(stack: DevStack) -> dict:
    return httpx.get(f"{stack.endpoints['worker_url']}/tables/payments/", timeout=30).json()


def quiet_digest(stack: DevStack, quiet_s: float = 3.0, timeout_s: float = 60) -> dict:
    """The digest once the table stopped changing: other tests' late webhooks (retried with
    backoff) and their duplicates must have landed before a snapshot means anything."""
    deadline = time.monotonic() + timeout_s
    last, since = digest(stack), time.monotonic()
    while time.monotonic() - since < quiet_s:
        assert time.monotonic() < deadline, "the payments table never came to rest"
        time.sleep(0.5)
        now = digest(stack)
        if now != last:
            last, since = now, time.monotonic()
    return last


def test_worker_restart_recovers_the_payments_table_exactly(stack: DevStack) -> None:
    client = api_client(stack, timeout=15)
    tokens = ["pm_card_visa", "pm_card_chargeDeclined", "pm_card_authenticationRequired"]
    ids = [
        post_payment(client, payment_body(tokens[i % 3])).json()["payment_id"] for i in range(30)
    ]
    for pid in ids:
        wait_settled(client, pid)
    before = quiet_digest(stack)
    assert before["count"] >= 30

    stack.restart("worker")  # SIGTERM: faust commits and closes RocksDB cleanly
    assert quiet_digest(stack) == before

    # SIGKILL and an empty state directory: everything must come back from the changelog.
    rows_before = rows(stack)
    stack.restart("worker", sig=signal.SIGKILL, wipe_data=True)
    after = quiet_digest(stack)
    if after != before:
        rows_after = rows(stack)
        for key in sorted(set(rows_before) | set(rows_after)):
            a, b = rows_before.get(key), rows_after.get(key)
            if a != b:
                changed = (
                    {
                        f: (a.get(f), b.get(f))
                        for f in (a or b)
                        if (a or {}).get(f) != (b or {}).get(f)
                    }
                    if a and b
                    else (a, b)
                )
                print("DIFF", key, changed)
    assert after == before


def test_payment_posted_while_worker_is_down_is_processed_after_restart(stack: DevStack) -> None:
    client = api_client(stack, timeout=15)
    worker = stack.child("worker")
    worker.stop()
    r = post_payment(client, payment_body("pm_card_visa"))
    assert r.status_code == 202  # Kafka holds it
    pid = r.json()["payment_id"]
    assert client.get(f"/v1/payments/{pid}").json()["status"] == "pending"
    worker.start()
    worker.wait_ready()
    assert wait_settled(client, pid)["status"] == "succeeded"
