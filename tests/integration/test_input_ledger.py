"""The payment agent applies records its consumer group committed past without applying them.

faust bugs of that kind lost records at takeovers (RELIABILITY.md). Here the group's offsets
are moved past accepted payment requests while the worker is down, as such a bug would; the
worker notices from its input ledger that the group committed past what it applied, reads
the records itself and applies them."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.coordinator.assignors.roundrobin import RoundRobinPartitionAssignor
from aiokafka.errors import InconsistentGroupProtocolError

from payments.devstack import DevStack
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
SETTLED = {"succeeded", "failed"}


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, external_services: Any) -> Iterator[DevStack]:
    with running_stack(tmp_path_factory.mktemp("ledger"), external_services) as s:
        yield s


class _AsFaust(RoundRobinPartitionAssignor):
    """The broker keeps the group's protocol (faust's assignor) once set; join under it."""

    name = "faust"


async def _commit_past_everything(bootstrap: str, group: str) -> dict[int, int]:
    """Commit the group's payment_initiation offsets at the end of each partition."""
    ends: dict[int, int] = {}
    for r in await scan_topic(bootstrap, names.PAYMENT_INITIATION):
        ends[r.partition] = max(ends.get(r.partition, 0), r.offset + 1)
    # As a member of the (now empty) group: the broker refuses commits from outside it.
    consumer = AIOKafkaConsumer(
        names.PAYMENT_INITIATION,
        bootstrap_servers=bootstrap,
        group_id=group,
        enable_auto_commit=False,
        session_timeout_ms=8000,
        partition_assignment_strategy=(_AsFaust,),
    )
    await consumer.start()
    try:
        deadline = time.monotonic() + 60
        while not consumer.assignment() and time.monotonic() < deadline:
            await consumer.getmany(timeout_ms=200, max_records=1)
        tps = {TopicPartition(names.PAYMENT_INITIATION, p): end for p, end in ends.items()}
        await consumer.commit(tps)
    finally:
        await consumer.stop()
    return ends


def _status(client: httpx.Client, pid: str) -> str:
    r = client.get(f"/v1/payments/{pid}")
    return str(r.json()["status"]) if r.status_code == 200 else "missing"


def test_records_committed_past_are_applied(stack: DevStack) -> None:
    client = api_client(stack, timeout=15)
    first = post_payment(client, payment_body("pm_card_visa"))
    wait_settled(client, first.json()["payment_id"])
    time.sleep(1.5)  # the input marks are written (at most every second)

    worker = stack.child("worker")
    worker.stop()
    skipped = []
    for _ in range(12):
        r = post_payment(client, payment_body("pm_card_visa"))
        assert r.status_code == 202, r.text
        skipped.append(r.json()["payment_id"])
    group = worker.env.get("PAYMENTS_APP_ID", "payments")
    deadline = time.monotonic() + 60
    while True:  # until the stopped worker's member has left the group (its session ends)
        try:
            asyncio.run(_commit_past_everything(stack.endpoints["kafka_bootstrap"], group))
            break
        except InconsistentGroupProtocolError:
            assert time.monotonic() < deadline
            time.sleep(2)
    worker.start()
    worker.wait_ready()

    # The ledger checks a partition when the next input of that partition arrives: new
    # payments land on every partition soon enough.
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        waiting = [pid for pid in skipped if _status(client, pid) not in SETTLED]
        if not waiting:
            break
        wait_settled(
            client, post_payment(client, payment_body("pm_card_visa")).json()["payment_id"]
        )
    assert not waiting, f"never applied: {waiting}"
    metrics = httpx.get(f"{stack.endpoints['worker_url']}/metrics", timeout=10).text
    lost = [
        line
        for line in metrics.splitlines()
        if line.startswith("payments_inputs_repaired_total")
        and 'topic="payment_initiation"' in line
        and 'was="lost"' in line
    ]
    assert lost and float(lost[0].split()[-1]) >= len(skipped), lost
