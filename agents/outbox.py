"""The payment agent's outbox: a decision's outputs leave only once its state is in the log.

The payment agent saves a decision (the payment row, its refunds, its janitor entry) and
hands the outputs to the outbox with the changelog writes that saved it. The outbox sends
them, in the order they were handed over, only when the broker has acknowledged those writes,
and acks the input only after that. So:

- a `payment_status` seq number is only ever sent from a state that is in the changelog: a
  worker that takes the partition over after a crash starts from that state, and gives the
  next seq to the next change. (Sending before saving, a crash could lose the row after its
  records left; the inputs, read again and interleaved in another order across the input
  topics, then gave another record under the same seq.)
- a crash after the save and before the send loses nothing and sends nothing new: the row
  holds the encoded records it has not seen sent (`stored`, under the row's `outbox`, each
  entry stamped with the outbox that queued it and its number there). A worker that finds
  entries of another outbox (an earlier process, or the partition's previous owner) sends
  them again, byte for byte, before anything else for that payment; consumers dedupe them
  by seq, the executor by command id. Entries seen sent are dropped at the row's next write.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import uuid
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from tables.writes import Write

log = logging.getLogger(__name__)

WRITE_RETRY_S = 1.0
RESEND_CHECK_S = 1.0  # how often an idle outbox looks for records the broker refused


@dataclass(frozen=True, slots=True)
class Output:
    topic: Any  # a faust topic
    key: bytes
    value: bytes
    headers: Any


def stored(outputs: Sequence[Output]) -> list[list[Any]]:
    """Outputs as a JSON row keeps them: topic name, key, value (base64), headers."""
    return [
        [
            out.topic.get_topic_name(),
            out.key.decode("latin-1"),
            base64.b64encode(out.value).decode("ascii"),
            [[k, v.decode("latin-1")] for k, v in out.headers or ()],
        ]
        for out in outputs
    ]


def restored(rows: Sequence[Sequence[Any]], topics: dict[str, Any]) -> list[Output]:
    """`stored` read back, the same bytes, for the topics named (`topics`: name -> topic)."""
    return [
        Output(
            topics[name],
            key.encode("latin-1"),
            base64.b64decode(value),
            [(k, v.encode("latin-1")) for k, v in headers],
        )
        for name, key, value, headers in rows
    ]


@dataclass(slots=True)
class _Entry:
    writes: list[Write]
    outputs: Sequence[Output]
    event: Any | None  # the input to ack once the outputs are sent
    number: int  # 0 for an entry with nothing to send


class Outbox:
    """FIFO of (writes, outputs, input): waits for the writes, sends, acks, in order.

    `limit` bounds what waits: at the limit `put` waits too, so a broker that stops
    acknowledging slows the agent down instead of filling memory."""

    def __init__(self, *, limit: int = 2000) -> None:
        self.stamp = uuid.uuid4().hex[:16]  # this outbox, in the entries rows keep
        self._delivered = 0  # the number of the last entry the broker has (`delivered_through`)
        # entries sent, by number, with the futures of their records, until the broker has them
        self._delivering: deque[tuple[int, list[asyncio.Future[Any]], Sequence[Output]]] = deque()
        self._numbered = 0
        self._limit = limit
        self._queue: deque[_Entry] = deque()
        self._ready = asyncio.Event()
        self._room = asyncio.Event()
        self._room.set()

    def __len__(self) -> int:
        return len(self._queue)

    def delivered_through(self) -> int:
        """The number of the last entry whose records the broker has, and all before it;
        entries found delivered are dropped from `_delivering`."""
        while self._delivering:
            number, futures, _ = self._delivering[0]
            if not all(f.done() for f in futures) or any(_failed(f) for f in futures):
                break  # not yet, or to send again (`run`)
            self._delivering.popleft()
            self._delivered = number
        return self._delivered

    def unseen(self, kept: Sequence[dict[str, Any]]) -> list[list[Any]]:
        """The stored outputs of a row's entries that another outbox queued: this one cannot
        know they were sent."""
        return [out for e in kept if e["by"] != self.stamp for out in e["out"]]

    def keep(self, kept: Sequence[dict[str, Any]], sends: Sequence[Output]) -> list[Any]:
        """A row's entries once `sends` is put next: its own ones not seen sent yet, and one
        for `sends` (the rest were sent, or are in `sends` again, from `unseen`)."""
        delivered = self.delivered_through()
        pending = [e for e in kept if e["by"] == self.stamp and e["n"] > delivered]
        if sends:
            pending.append({"by": self.stamp, "n": self._numbered + 1, "out": stored(sends)})
        return pending

    async def put(
        self, writes: list[Write], outputs: Sequence[Output], event: Any | None = None
    ) -> None:
        if not writes and not outputs and event is None:
            return
        number = 0
        if outputs:
            self._numbered = number = self._numbered + 1
        while len(self._queue) >= self._limit:
            self._room.clear()
            await self._room.wait()
        self._queue.append(_Entry(writes, outputs, event, number))
        self._ready.set()

    async def run(self, ack: Callable[[Any], Awaitable[Any]]) -> None:
        """Forever: the oldest entry's writes acknowledged, its outputs sent, its input acked
        (with `ack`). A send that raises, or that the broker refuses, is made again (all of
        the entry's outputs: consumers dedupe them, by seq, by command id)."""
        while True:
            await self._send_again_what_failed()
            if not self._queue:
                self._ready.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._ready.wait(), RESEND_CHECK_S)
                continue
            entry = self._queue[0]
            await self._written(entry)
            try:
                futures = await _send(entry.outputs)
            except Exception as exc:
                log.warning("outbox send failed (%r); sending the entry again", exc)
                await asyncio.sleep(WRITE_RETRY_S)
                continue
            if entry.number:
                self._delivering.append((entry.number, futures, entry.outputs))
            if entry.event is not None:
                await ack(entry.event)
            self._queue.popleft()
            if len(self._queue) < self._limit:
                self._room.set()

    async def _send_again_what_failed(self) -> None:
        self.delivered_through()
        for i, (number, futures, outputs) in enumerate(self._delivering):
            if any(_failed(f) for f in futures):
                log.warning("outbox records of entry %d not delivered; sending them again", number)
                try:
                    self._delivering[i] = (number, await _send(outputs), outputs)
                except Exception as exc:
                    log.warning("outbox send failed (%r); trying again", exc)
                    await asyncio.sleep(WRITE_RETRY_S)
                    return

    async def _written(self, entry: _Entry) -> None:
        """Every write of the entry acknowledged; a failed one is sent again (its key's
        current value) until it is, since its outputs must not leave before it."""
        for i, write in enumerate(entry.writes):
            while True:
                try:
                    await asyncio.shield(write.future)
                    break
                except asyncio.CancelledError:
                    if not write.future.cancelled():
                        raise
                    failure: BaseException = asyncio.CancelledError()
                except Exception as exc:
                    failure = exc
                log.warning(
                    "changelog write of %r failed (%r); writing it again before its outputs",
                    write.key,
                    failure,
                )
                await asyncio.sleep(WRITE_RETRY_S)
                write = entry.writes[i] = write.again()


async def _send(outputs: Sequence[Output]) -> list[asyncio.Future[Any]]:
    """Send, in order; the futures are done when the broker has each record (or refused it)."""
    return [
        asyncio.ensure_future(
            await out.topic.send(key=out.key, value=out.value, headers=out.headers)
        )
        for out in outputs
    ]


def _failed(future: asyncio.Future[Any]) -> bool:
    return future.done() and (future.cancelled() or future.exception() is not None)
