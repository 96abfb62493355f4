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
from collections.abc import Awaitable, Callable, Hashable

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
