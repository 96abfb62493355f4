"""The payment agent's outbox: outputs leave only after the writes that saved them, in order,
and the input is acked only after its outputs left (`agents.outbox`, `tables.writes`)."""

from __future__ import annotations

import asyncio
import base64
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import pytest

from agents import outbox as outbox_module
from agents.outbox import Outbox, Output, restored, stored
from tables.writes import ChangelogWrites


class _Table:
    """A faust table's changelog side: `send_changelog` gives a future the test settles."""

    def __init__(self) -> None:
        self.data: dict[str, Any] = {}
        self.sent: list[tuple[int | None, str, Any, dict[str, Any]]] = []
        self.futures: list[asyncio.Future[Any]] = []

    def send_changelog(self, partition: int | None, key: str, value: Any, **kw: Any) -> Any:
        self.sent.append((partition, key, value, kw))
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.futures.append(future)
        return future

    def __setitem__(self, key: str, value: Any) -> None:  # as faust's: changelog, then store
        self.send_changelog(0, key, value)
        self.data[key] = value


class _Topic:
    """A faust topic: `send` gives the future of the broker's answer, settled by the test
    (or at once with `delivered`)."""

    def __init__(self, log: list[Any], *, delivered: bool = True, name: str = "t") -> None:
        self.log = log
        self.name = name
        self.delivered = delivered
        self.futures: list[asyncio.Future[Any]] = []

    def get_topic_name(self) -> str:
        return self.name

    async def send(self, *, key: bytes, value: bytes, headers: Any) -> asyncio.Future[Any]:
        self.log.append(("sent", value))
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        if self.delivered:
            future.set_result(None)
        self.futures.append(future)
        return future


@contextlib.asynccontextmanager
async def _running(box: Outbox, log: list[Any]) -> AsyncIterator[None]:
    """The outbox running, its acks noted in `log`."""

    async def ack(event: Any) -> None:
        log.append(("ack", event))

    runner = asyncio.ensure_future(box.run(ack))
    try:
        yield
    finally:
        runner.cancel()


async def _settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_outputs_wait_for_their_writes_and_acks_follow_in_order() -> None:
    table, log = _Table(), []
    writes = ChangelogWrites(table)
    topic = _Topic(log)
    box = Outbox()

    async with _running(box, log):
        table["pay_1"] = {"seq": 2}
        await box.put(writes.take(), [Output(topic, b"pay_1", b"seq2", None)])
        await box.put([], (), "input-1")
        table["pay_2"] = {"seq": 1}
        await box.put(writes.take(), [Output(topic, b"pay_2", b"p2", None)])
        await box.put([], (), "input-2")
        await _settle()
        assert log == []  # nothing leaves before the broker has the row
        table.futures[1].set_result(None)  # the later write first: still nothing
        await _settle()
        assert log == []
        table.futures[0].set_result(None)
        await _settle()
        assert log == [("sent", b"seq2"), ("ack", "input-1"), ("sent", b"p2"), ("ack", "input-2")]
        assert len(box) == 0


async def test_a_failed_write_is_sent_again_with_the_current_value_before_the_outputs(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(outbox_module, "WRITE_RETRY_S", 0)
    table, log = _Table(), []
    writes = ChangelogWrites(table)
    box = Outbox()

    async with _running(box, log):
        table["pay_1"] = {"seq": 2}
        await box.put(writes.take(), [Output(_Topic(log), b"pay_1", b"seq2", None)], "in")
        table.data["pay_1"] = {"seq": 3}  # a later decision replaced the row meanwhile
        table.futures[0].set_exception(RuntimeError("broker went away"))
        await _settle()
        assert log == []
        assert table.sent[-1][:3] == (0, "pay_1", {"seq": 3})  # never the older value
        table.futures[-1].set_result(None)
        await _settle()
        assert log == [("sent", b"seq2"), ("ack", "in")]


async def test_a_deleted_key_is_written_again_as_a_delete(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(outbox_module, "WRITE_RETRY_S", 0)
    table = _Table()
    writes = ChangelogWrites(table)
    table.send_changelog(3, "p:pay_1", None, value_serializer="raw")
    written = writes.take()
    again = written[0].again()
    assert table.sent[-1] == (3, "p:pay_1", None, {"value_serializer": "raw"})
    assert again.partition == 3 and writes.take() == [again]


async def test_put_waits_at_the_limit_until_the_outbox_drains() -> None:
    box = Outbox(limit=2)
    acked: list[Any] = []

    async def ack(event: Any) -> None:
        acked.append(event)

    await box.put([], (), 1)
    await box.put([], (), 2)
    third = asyncio.ensure_future(box.put([], (), 3))
    await _settle()
    assert not third.done()
    runner = asyncio.ensure_future(box.run(ack))
    try:
        await asyncio.wait_for(third, 1)
        await _settle()
        assert acked == [1, 2, 3]
    finally:
        runner.cancel()


def test_stored_outputs_come_back_byte_for_byte() -> None:
    topic = _Topic([], name="payment_status")
    outs = [Output(topic, b"pay_1", bytes(range(256)), [("avro-schema", b"x.v2")])]
    again = restored(stored(outs), {"payment_status": topic})
    assert again == outs


async def test_a_row_keeps_what_the_broker_has_not_acknowledged(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(outbox_module, "WRITE_RETRY_S", 0)
    monkeypatch.setattr(outbox_module, "RESEND_CHECK_S", 0.01)
    log: list[Any] = []
    topic = _Topic(log, delivered=False)
    box = Outbox()

    async with _running(box, log):
        first = [Output(topic, b"pay_1", b"seq2", [])]
        kept = box.keep([], first)
        assert [e["n"] for e in kept] == [1] and box.unseen(kept) == []  # its own: kept only
        await box.put([], first, "in-1")
        second = [Output(topic, b"pay_1", b"seq3", [])]
        kept = box.keep(kept, second)
        await box.put([], second, "in-2")
        await _settle()
        # Both sent and their inputs acked, but no record is in the broker yet: both kept.
        assert log == [("sent", b"seq2"), ("ack", "in-1"), ("sent", b"seq3"), ("ack", "in-2")]
        assert [e["n"] for e in box.keep(kept, ())] == [1, 2]
        topic.futures[0].set_result(None)
        assert [e["n"] for e in box.keep(kept, ())] == [2]
        # The broker refuses the second: it is sent again, and kept until it is delivered.
        topic.futures[1].set_exception(RuntimeError("NotLeaderForPartition"))
        await asyncio.sleep(0.05)
        assert log[-1] == ("sent", b"seq3")
        assert [e["n"] for e in box.keep(kept, ())] == [2]
        topic.futures[2].set_result(None)
        assert box.keep(kept, ()) == []
        # Another process (a restart, the partition's next owner) sends all of it again.
        successor = Outbox()
        assert [v for _, _, v, _ in successor.unseen(kept)] == [
            base64.b64encode(b"seq2").decode(),
            base64.b64encode(b"seq3").decode(),
        ]
        assert successor.keep(kept, ()) == []
