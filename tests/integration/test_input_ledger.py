"""The payment agent applies records its consumer group committed past without applying them.

faust bugs of that kind lost records at takeovers (RELIABILITY.md). Here the group's offsets
are moved past accepted payment requests while the worker is down, as such a bug would; the
worker notices from its input ledger that the group committed past what it applied, reads
the records itself and applies them."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.coordinator.assignors.roundrobin import RoundRobinPartitionAssignor
from aiokafka.errors import InconsistentGroupProtocolError

from payments.devstack import DevStack
from schemas import codec, decode
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


async def _ahead_of_its_request(
    bootstrap: str, template: Any, payment_id: str, refund_id: str, backlog: int
) -> None:
    """On one partition: `backlog` records no agent can decode before a payment request
    (`template`, a request the ingress wrote, made about `payment_id`), and a refund request
    for that payment alone on its own topic, so the refund reaches the agent first."""
    requested = decode("payment_requested", template.value, dict(template.headers))
    requested.update(payment_id=payment_id, idempotency_key=f"ahead-{payment_id}")
    refund = {
        "refund_id": refund_id,
        "payment_id": payment_id,
        "amount": 100,
        "reason": None,
        "fingerprint": "ahead",
        "requested_at": int(time.time() * 1000),
    }
    # Keyed by the payment, as every record about it is: all on its partition.
    key = payment_id.encode()
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, max_request_size=2_000_000)
    await producer.start()
    try:
        for _ in range(backlog):  # more than one fetch holds: the request comes later
            await producer.send(names.PAYMENT_INITIATION, b"x" * 2000, key=key)
        for topic, schema, rec in (
            (names.PAYMENT_INITIATION, "payment_requested", requested),
            (names.REFUND_REQUEST, "refund_request", refund),
        ):
            out = codec(schema)
            await producer.send(topic, out.encode(rec), key=key, headers=out.headers)
        await producer.flush()
    finally:
        await producer.stop()


def test_an_input_ahead_of_its_payment_request_waits_for_it(stack: DevStack) -> None:
    """The stream merges the input topics in no fixed order (a restart reads several of
    them again at once), so a refund or a gateway result can reach the agent before the
    request that creates its payment. Ignored as `unknown_payment`, a dispute webhook would
    be lost; the agent first applies the partition's payment requests it has not yet
    applied (seen in a chaos run as `state_lost`)."""
    client = api_client(stack, timeout=15)
    first = post_payment(client, payment_body("pm_card_visa")).json()["payment_id"]
    wait_settled(client, first)
    bootstrap = stack.endpoints["kafka_bootstrap"]
    template = next(
        r
        for r in asyncio.run(scan_topic(bootstrap, names.PAYMENT_INITIATION))
        if r.key == first.encode()
    )
    worker = stack.child("worker")
    worker.stop()
    payment_id, refund_id = f"pay_ahead{uuid.uuid4().hex[:16]}", f"re_ahead{uuid.uuid4().hex[:8]}"
    asyncio.run(_ahead_of_its_request(bootstrap, template, payment_id, refund_id, backlog=2000))
    worker.start()
    worker.wait_ready()

    deadline = time.monotonic() + 90
    answers: list[dict[str, Any]] = []
    while not answers and time.monotonic() < deadline:
        answers = [
            decode("refund_status", r.value, dict(r.headers))
            for r in asyncio.run(scan_topic(bootstrap, names.REFUND_STATUS, idle_s=0.5))
            if r.key == payment_id.encode()
        ]
    assert answers, "the refund request got no answer"
    # Its payment was known, and still pending: not refundable. Not "unknown_payment".
    assert [a["error_code"] for a in answers] == ["payment_not_refundable"], answers
    wait_settled(client, payment_id, timeout_s=60)
