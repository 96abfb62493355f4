"""Key-ordered concurrency: order within a key, concurrency across keys, a hard bound."""

from __future__ import annotations

import asyncio
import random

import pytest

from agents.dispatch import KeyedDispatcher


async def test_one_key_runs_in_submission_order_even_when_later_work_is_faster() -> None:
    dispatcher = KeyedDispatcher(limit=50)
    done: list[int] = []

    def work(i: int):  # type: ignore[no-untyped-def]
        async def run() -> None:
            await asyncio.sleep(0.02 if i == 0 else 0)
            done.append(i)

        return run

    for i in range(10):
        await dispatcher.submit("pay_1", work(i))
    await dispatcher.drain()
    assert done == list(range(10))


async def test_different_keys_run_at_once_up_to_the_limit() -> None:
    dispatcher = KeyedDispatcher(limit=20)

    async def call() -> None:
        await asyncio.sleep(0.05)

    started = asyncio.get_running_loop().time()
    for i in range(100):
        await dispatcher.submit(f"pay_{i}", call)
    await dispatcher.drain()
    elapsed = asyncio.get_running_loop().time() - started
    assert dispatcher.peak == 20
    assert elapsed < 1.0  # 5 waves of 50 ms, not 100 calls one by one (5 s)


async def test_submit_waits_when_the_limit_is_reached() -> None:
    dispatcher = KeyedDispatcher(limit=3)
    gate = asyncio.Event()

    async def blocked() -> None:
        await gate.wait()

    for i in range(3):
        await dispatcher.submit(i, blocked)
    fourth = asyncio.ensure_future(dispatcher.submit(3, blocked))
    await asyncio.sleep(0.05)
    assert not fourth.done() and dispatcher.admitted == 3  # back-pressure, no queue
    gate.set()
    await fourth
    await dispatcher.drain()
    assert dispatcher.admitted == 0 and dispatcher.running == 0


async def test_a_failure_is_logged_and_the_key_goes_on() -> None:
    dispatcher = KeyedDispatcher(limit=5)
    done: list[str] = []

    async def boom() -> None:
        raise RuntimeError("gateway adapter bug")

    async def after() -> None:
        done.append("after")

    await dispatcher.submit("k", boom)
    await dispatcher.submit("k", after)
    await dispatcher.drain()
    assert done == ["after"]


async def test_random_interleavings_keep_every_key_in_order() -> None:
    rng = random.Random(7)
    dispatcher = KeyedDispatcher(limit=8)
    seen: dict[str, list[int]] = {}

    def work(key: str, i: int):  # type: ignore[no-untyped-def]
        async def run() -> None:
            await asyncio.sleep(rng.random() / 200)
            seen.setdefault(key, []).append(i)

        return run

    submitted: dict[str, int] = {}
    for _ in range(300):
        key = f"k{rng.randrange(12)}"
        submitted[key] = submitted.get(key, 0) + 1
        await dispatcher.submit(key, work(key, submitted[key]))
    await dispatcher.drain()
    assert {k: v for k, v in seen.items()} == {
        k: list(range(1, n + 1)) for k, n in submitted.items()
    }
    assert dispatcher.peak <= 8


def test_the_limit_must_be_positive() -> None:
    with pytest.raises(ValueError):
        KeyedDispatcher(limit=0)


async def test_in_order_acks_hold_a_later_ack_until_the_earlier_event_is_done() -> None:
    from types import SimpleNamespace

    from agents.dispatch import InOrderAcks

    acked: list[tuple[str, int]] = []

    async def ack(event: SimpleNamespace) -> None:
        acked.append((event.message.tp, event.message.offset))

    def event(tp: str, offset: int) -> SimpleNamespace:
        return SimpleNamespace(message=SimpleNamespace(tp=tp, offset=offset))

    acks = InOrderAcks(ack)
    t10, t11, t12 = (acks.admit(event("p0", o)) for o in (10, 11, 12))
    other = acks.admit(event("p1", 5))
    await acks.done(t11)
    await acks.done(t12)
    assert acked == []  # offset 10 is still in flight: nothing of p0 may be acked past it
    await acks.done(other)
    assert acked == [("p1", 5)]  # partitions are independent
    await acks.done(t10)
    assert acked == [("p1", 5), ("p0", 10), ("p0", 11), ("p0", 12)]
    assert acks.pending == 0
