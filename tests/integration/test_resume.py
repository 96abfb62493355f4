"""On Apache Kafka the stack keeps its data: stopped and started again on the same state
directory, it serves the payments made before and its tables come back from their
changelogs (what `make run` twice in a row does). Tansu keeps nothing, so not there."""

from __future__ import annotations

from pathlib import Path

import pytest

from payments.devstack import Broker, DevOptions, DevStack
from payments.settings import load_settings
from tests.conftest import BROKER, running_stack
from tests.integration.helpers import (
    api_client,
    payment_body,
    post_payment,
    wait_refund,
    wait_settled,
)

REFUND_FINAL = {"processed", "failed"}

pytestmark = [
    pytest.mark.stack,
    pytest.mark.skipif(BROKER is not Broker.KAFKA, reason="only Apache Kafka keeps its data"),
]


@pytest.fixture
def state(tmp_path: Path, external_services: tuple[str | None, str | None]) -> Path:
    """The state directory a stack is stopped and started again on (ours, not external)."""
    if external_services[0] is not None:
        pytest.skip("an external broker")
    return tmp_path / "stack"


def test_a_restarted_stack_resumes_where_it_stopped(
    state: Path, external_services: tuple[str | None, str | None]
) -> None:
    key = "resume-order-1"
    body = payment_body("pm_card_visa", amount=5000)
    with running_stack(state, external_services) as first:
        client = api_client(first)
        pid = post_payment(client, body, key).json()["payment_id"]
        assert wait_settled(client, pid)["status"] == "succeeded"
        refund = client.post(
            f"/v1/payments/{pid}/refunds", json={"amount": 2000}, headers={"Idempotency-Key": "r1"}
        )
        assert refund.status_code == 202, refund.text
        # Processed before the stop: the sandbox (the gateway) is in memory and forgets.
        assert (
            wait_refund(client, refund.json()["refund_id"], REFUND_FINAL)["status"] == "processed"
        )

    with running_stack(state, external_services) as second:  # same data, new processes
        assert (state / "kafka" / "data" / "meta.properties").exists()
        client = api_client(second)
        doc = client.get(f"/v1/payments/{pid}")
        assert doc.status_code == 200, doc.text  # the read model kept it
        assert doc.json()["captured_amount"] == 5000
        # The same request again maps to the same payment, decided by the recovered tables.
        again = post_payment(client, body, key)
        assert again.status_code == 202 and again.json()["payment_id"] == pid, again.text
        # The refundable amount comes from the recovered `payments` table: 5000 captured,
        # 2000 refunded or reserved before the restart, so 3001 more is refused by the
        # payment agent itself, before any gateway call.
        over = client.post(
            f"/v1/payments/{pid}/refunds", json={"amount": 3001}, headers={"Idempotency-Key": "r2"}
        )
        assert over.status_code == 202, over.text
        got = wait_refund(client, over.json()["refund_id"], REFUND_FINAL)
        assert got["status"] == "failed" and got["error_code"] == "amount_exceeds_refundable", got


def test_fresh_starts_empty(state: Path, external_services: tuple[str | None, str | None]) -> None:
    with running_stack(state, external_services) as first:
        client = api_client(first)
        pid = post_payment(client, payment_body("pm_card_visa")).json()["payment_id"]
        assert wait_settled(client, pid)["status"] == "succeeded"

    fresh = DevStack(load_settings(), DevOptions.on_free_ports(state, broker=BROKER, fresh=True))
    try:
        fresh.start()  # `payments dev --fresh`: the broker's data, tables and read model go
        assert api_client(fresh).get(f"/v1/payments/{pid}").status_code == 404
    finally:
        fresh.stop()
