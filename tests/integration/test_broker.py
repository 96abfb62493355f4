"""Which broker the stack runs, and that the Tansu workarounds follow it: on Apache Kafka
none is applied (in the worker or here), on Tansu all three are."""

from __future__ import annotations

import asyncio

import pytest
from aiokafka import AIOKafkaConsumer

from payments.devstack import Broker, DevStack
from streams import tansu_compat
from tests.conftest import BROKER

pytestmark = [pytest.mark.stack, pytest.mark.tansu]


def test_the_stack_runs_the_broker_asked_for(stack: DevStack) -> None:
    bootstrap = stack.endpoints["kafka_bootstrap"]
    if stack.opts.external_kafka:
        pytest.skip("an external broker")
    assert stack.broker is BROKER
    assert asyncio.run(tansu_compat.is_tansu(bootstrap)) is (BROKER is Broker.TANSU)


def test_tansu_workarounds_follow_the_broker(stack: DevStack) -> None:
    log = stack.child("worker").log_path.read_text()
    on_tansu = asyncio.run(tansu_compat.is_tansu(stack.endpoints["kafka_bootstrap"]))
    if on_tansu:
        assert "broker compatibility: tansu" in log
        assert "tansu compatibility applied" in log
        return
    assert "broker compatibility: apache kafka" in log
    assert "tansu compatibility applied" not in log
    # Detection in this process, as bench and chaos use it: nothing patched on Kafka.
    assert asyncio.run(tansu_compat.prepare(stack.endpoints["kafka_bootstrap"], "auto")) is False
    assert not tansu_compat.is_applied()

    async def fetch_wait() -> int:
        consumer = AIOKafkaConsumer(bootstrap_servers=stack.endpoints["kafka_bootstrap"])
        return int(consumer._fetch_max_wait_ms)

    assert asyncio.run(fetch_wait()) == 500  # aiokafka's own default, unclamped
