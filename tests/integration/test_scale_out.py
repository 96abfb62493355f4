"""Two workers and two ingress processes share one consumer group and one port plan; one of
each is SIGKILLed under load and the others carry on with nothing lost or charged twice."""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Iterator
from dataclasses import replace

import httpx
import pytest

from payments.audit import audit
from payments.devstack import DevStack
from payments.procs import Child, free_port, http_ok
from tests.conftest import running_stack
from tests.integration.helpers import auth, payment_body, post_payment, wait_status

pytestmark = pytest.mark.stack


@pytest.fixture(scope="module")
def stack(tmp_path_factory, external_services) -> Iterator[DevStack]:
    with running_stack(tmp_path_factory.mktemp("scale"), external_services) as own:
        yield own


def _second(stack: DevStack, name: str, port_var: str, extra: dict[str, str]) -> tuple[Child, str]:
    first = stack.child(name)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    probe = "/readyz/" if name == "worker" else "/readyz"
    twin = replace(
        first,
        name=f"{name}-2",
        log_path=first.log_path.with_name(f"{name}-2.log"),
        env={**first.env, port_var: str(port), **extra},
        probe=lambda: http_ok(url + probe),
        ready_timeout_s=120,
        proc=None,
    )
    twin.start()
    twin.wait_ready()
    return twin, url


def _assigned(url: str) -> int:
    try:
        return int(httpx.get(f"{url}/readyz/", timeout=5).json()["assigned_partitions"])
    except (httpx.HTTPError, ValueError, KeyError):
        return 0


def _drive(ingresses: list[str], n: int, headers: dict[str, str]) -> list[str]:
    ids = []
    for i in range(n):
        url = ingresses[i % len(ingresses)]
        with httpx.Client(base_url=url, timeout=15, headers=headers) as client:
            r = post_payment(client, payment_body("pm_card_visa"))
            assert r.status_code == 202, r.text
            ids.append(r.json()["payment_id"])
    return ids


def test_a_worker_and_an_ingress_are_killed_and_nothing_is_lost(stack: DevStack, tmp_path) -> None:
    worker2, worker2_url = _second(
        stack, "worker", "PAYMENTS_WORKER_WEB_PORT", {"PAYMENTS_DATA_DIR": str(tmp_path / "w2")}
    )
    ingress2, ingress2_url = _second(stack, "ingress", "PAYMENTS_INGRESS_PORT", {})
    try:
        worker1_url, ingress1_url = stack.endpoints["worker_url"], stack.endpoints["ingress_url"]
        deadline = time.monotonic() + 90
        while not (_assigned(worker1_url) and _assigned(worker2_url)):
            assert time.monotonic() < deadline, "the two workers never shared the partitions"
            time.sleep(0.5)
        split = (_assigned(worker1_url), _assigned(worker2_url))

        # Gateway calls of 0-2 s: many are in flight when the worker dies, and they finish
        # out of order (which once let a commit pass an unfinished call), and the takeover
        # happens while records are being fetched (which once dropped fetched records).
        sandbox = stack.endpoints["sandbox_url"]
        jitter = {"latency_jitter_ms": 2000}
        httpx.post(f"{sandbox}/_sandbox/faults/stripe", json=jitter).raise_for_status()
        before = _drive([ingress1_url, ingress2_url], 30, auth(stack.endpoints))
        stack.child("worker").stop(sig=signal.SIGKILL)
        during = _drive([ingress1_url, ingress2_url], 30, auth(stack.endpoints))
        httpx.delete(f"{sandbox}/_sandbox/faults").raise_for_status()
        stack.child("ingress").stop(sig=signal.SIGKILL)
        after = _drive([ingress2_url], 20, auth(stack.endpoints))

        everything = before + during + after
        headers = auth(stack.endpoints)
        with httpx.Client(base_url=ingress2_url, timeout=15, headers=headers) as client:
            for pid in everything:
                wait_status(client, pid, {"succeeded"}, timeout_s=120)
        assert _assigned(worker2_url) > split[1]  # it took over the dead worker's partitions

        time.sleep(1.0)  # quiet, for the audit
        findings = asyncio.run(
            audit(
                bootstrap=stack.endpoints["kafka_bootstrap"],
                redis_url=stack.endpoints["redis_url"],
                ledger_url=f"{stack.endpoints['sandbox_url']}/_sandbox/ledger/summary",
                only=set(everything),
            )
        )
        assert findings == []
        ledger = httpx.get(f"{stack.endpoints['sandbox_url']}/_sandbox/ledger/summary").json()
        assert all(ledger[pid]["captures"] == 1 for pid in everything)
    finally:
        worker2.stop()
        ingress2.stop()
