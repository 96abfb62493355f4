"""Key-ordered concurrency: many keys at once, one key in order, a bound on everything admitted.

The gateway executor reads commands in partition order and hands each to `submit`. Work for
different keys runs concurrently; work for one key runs strictly after the work submitted
before it for that key. At most `limit` pieces of work are admitted at once (running, or
waiting for their key's turn): when that many are out, `submit` waits, and so does the stream
reading the partition. That wait is the back-pressure: nothing queues without bound.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Hashable
from typing import Any

log = logging.getLogger(__name__)

Work = Callable[[], Awaitable[None]]


class KeyedDispatcher:
    def __init__(self, limit: int, *, on_change: Callable[[int, int], None] | None = None) -> None:
        if limit < 1:
            raise ValueError(f"limit must be >= 1, got {limit}")
        self.limit = limit
        self._slots = asyncio.Semaphore(limit)
        self._tails: dict[Hashable, asyncio.Task[None]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._on_change = on_change
        self.running = 0  # work started and not finished: calls in flight
        self.peak = 0

    @property
    def admitted(self) -> int:
        return len(self._tasks)

    async def submit(self, key: Hashable, work: Work) -> None:
        """Admit `work` for `key` once a slot is free; it runs after `key`'s earlier work."""
        await self._slots.acquire()
        task = asyncio.ensure_future(self._run(key, self._tails.get(key), work))
        self._tails[key] = task
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def drain(self) -> None:
        """Wait for everything admitted so far."""
        while self._tasks:
            await asyncio.wait(set(self._tasks))

    async def _run(self, key: Hashable, previous: asyncio.Task[None] | None, work: Work) -> None:
        try:
            if previous is not None:
                await asyncio.wait([previous])  # its outcome is its own: only its end matters
            self._started()
            try:
                await work()
            finally:
                self._finished()
        except Exception:
            log.exception("work for %r failed", key)
        finally:
            self._slots.release()
            if self._tails.get(key) is asyncio.current_task():
                del self._tails[key]

    def _started(self) -> None:
        self.running += 1
        self.peak = max(self.peak, self.running)
        if self._on_change is not None:
            self._on_change(self.running, self.peak)

    def _finished(self) -> None:
        self.running -= 1
        if self._on_change is not None:
            self._on_change(self.running, self.peak)


class InOrderAcks:
    """Acks each partition's events in offset order, whatever order their work finishes in.

    faust-streaming 0.15.3 does not keep a commit below an un-acked offset at the head of a
    partition: `Consumer._new_offset` skips its head-gap check when nothing was committed
    yet in the current assignment (`_committed_offset` is None), and its check is off by
    one (`min(acked) - committed > 1`), so with offset C in flight and C+1 acked it commits
    C+2. Acking a later command before an earlier one therefore lets a commit pass a gateway
    call still in flight, and a SIGKILL then loses that command. Acked in offset order, the
    acked offsets are always a contiguous run from the resume offset, so no commit can pass
    unfinished work.
    """

    def __init__(self, ack: Callable[[Any], Awaitable[Any]]) -> None:
        self._ack = ack
        self._queues: dict[Hashable, deque[list[Any]]] = {}

    def admit(self, event: Any) -> list[Any]:
        """Register `event` (in the order the stream delivers it); pass the token to `done`."""
        token = [event, False]
        self._queues.setdefault(event.message.tp, deque()).append(token)
        return token

    async def done(self, token: list[Any]) -> None:
        """Mark the event finished; ack it and every finished event behind it, in order."""
        token[1] = True
        tp = token[0].message.tp
        queue = self._queues.get(tp)
        while queue and queue[0][1]:
            event = queue.popleft()[0]
            await self._ack(event)
        if queue is not None and not queue:
            del self._queues[tp]

    @property
    def pending(self) -> int:
        return sum(len(q) for q in self._queues.values())
