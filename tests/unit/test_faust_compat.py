"""The faust-streaming workarounds (`streams.faust_compat`), each against the faust code it
fixes where it can be built here, or against a stand-in of the part of the consumer it wraps."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from faust.transport.consumer import Consumer
from faust.types import TP
from intervaltree import IntervalTree
from mode.utils.queues import FlowControlEvent, FlowControlQueue

from streams import faust_compat


def _queue(flow: FlowControlEvent) -> FlowControlQueue:
    # As faust builds every channel's queue: managed by the app's flow control, cleared on resume.
    return FlowControlQueue(maxsize=10, flow_control=flow, clear_on_resume=True)


def test_resume_as_released_discards_queued_events() -> None:
    async def scenario() -> int:
        flow = FlowControlEvent(initially_suspended=False)
        queue = _queue(flow)
        queue.put_nowait("payment_initiation[7]@15")
        flow.resume()  # faust's recovery does this after the records were fetched
        return queue.qsize()

    assert asyncio.run(scenario()) == 0  # the bug the workaround exists for


def test_resume_keeps_queued_events_and_resumes_the_flow() -> None:
    async def scenario() -> tuple[int, bool]:
        flow = FlowControlEvent(initially_suspended=True)
        faust_compat.keep_queues_on_resume(SimpleNamespace(flow_control=flow))
        queue = _queue(flow)
        queue.put_nowait("payment_initiation[7]@15")
        flow.resume()
        return queue.qsize(), flow.is_active()

    assert asyncio.run(scenario()) == (1, True)


def test_revocation_still_clears_the_queues() -> None:
    async def scenario() -> int:
        flow = FlowControlEvent(initially_suspended=False)
        faust_compat.keep_queues_on_resume(SimpleNamespace(flow_control=flow))
        queue = _queue(flow)
        queue.put_nowait("payment_initiation[7]@15")
        flow.suspend()
        flow.clear()  # what App._on_partitions_revoked does
        return queue.qsize()

    assert asyncio.run(scenario()) == 0


def test_the_app_gets_the_workaround(tmp_path) -> None:
    from payments.settings import Settings
    from streams.app import create_app

    app = create_app(Settings(data_dir=tmp_path, store="memory://"))
    queue = _queue(app.flow_control)
    queue.put_nowait("event")
    app.flow_control.resume()
    assert queue.qsize() == 1


def _skipped_then_committed(consumer, *, processed: bool) -> int | None:
    """A record at the committed offset, taken by a stream and acked as faust's stream does.

    `processed=False` is the stream's skip path (flow suspended or older generation): the
    event is acked without ever being tracked, i.e. without reaching the agent.
    """
    from faust.types import TP
    from faust.types.tuples import ConsumerMessage

    tp = TP("refund_request", 0)
    consumer.app.topics.acks_enabled_for = lambda topic: True
    consumer._committed_offset[tp] = 3
    message = ConsumerMessage("refund_request", 0, 3, 0.0, 0, None, b"k", b"v", None, tp=tp)
    message.incref()
    if processed:
        message.tracked = True  # what the stream does when it hands the event to the agent
        consumer._unacked_messages.add(message)
    message.ack(consumer)
    assert message.acked and message not in consumer._unacked_messages
    return consumer._new_offset(tp)


def test_faust_commits_past_a_record_a_stream_skipped(tmp_path) -> None:
    import faust

    app = faust.App("bug", broker="kafka://127.0.0.1:1", store="memory://", datadir=tmp_path)
    # The bug the workaround exists for: the skipped refund request becomes committable.
    assert _skipped_then_committed(app.consumer, processed=False) == 4


def test_a_skipped_record_is_left_uncommitted(tmp_path) -> None:
    from payments.settings import Settings
    from streams.app import create_app

    app = create_app(Settings(data_dir=tmp_path, store="memory://"))
    assert _skipped_then_committed(app.consumer, processed=False) is None
    # fetched again after the rebalance's seek and applied this time: now it is committed
    assert _skipped_then_committed(app.consumer, processed=True) == 4


def test_a_processed_record_is_still_committed(tmp_path) -> None:
    from payments.settings import Settings
    from streams.app import create_app

    app = create_app(Settings(data_dir=tmp_path, store="memory://"))
    assert _skipped_then_committed(app.consumer, processed=True) == 4


def _acked_after_a_hole(consumer, missing: int) -> int | None:
    """Offsets 3+missing.. acked (applied) while 3.. (the committed offset on) never were."""
    from faust.types import TP

    tp = TP("gateway_commands", 0)
    consumer._committed_offset[tp] = 3
    consumer._acked[tp] = [3 + missing + i for i in range(5)]
    return consumer._new_offset(tp)


def test_faust_commits_past_one_record_never_acked(tmp_path) -> None:
    import faust

    app = faust.App("bug3", broker="kafka://127.0.0.1:1", store="memory://", datadir=tmp_path)
    # The bug: the gateway command at offset 3 reached no agent, yet the commit passes it.
    assert _acked_after_a_hole(app.consumer, missing=1) == 9
    assert _acked_after_a_hole(app.consumer, missing=2) is None  # and two strand it


def test_the_commit_stops_at_a_hole(tmp_path) -> None:
    from payments.settings import Settings
    from streams.app import create_app

    app = create_app(Settings(data_dir=tmp_path, store="memory://"))
    assert _acked_after_a_hole(app.consumer, missing=1) is None
    assert _acked_after_a_hole(app.consumer, missing=0) == 8  # no hole: commits as before


def test_a_hole_is_what_nobody_acked_or_holds() -> None:
    hole_of = faust_compat.hole_of
    assert hole_of(3, [5, 6], []) == (3, 5)  # 3 and 4 reached no agent
    assert hole_of(3, [5, 6], [3]) is None  # 3 is being worked on: not a hole (yet)
    assert hole_of(3, [3, 4], []) is None  # contiguous from the commit
    assert hole_of(None, [5], []) is None  # nothing committed yet: faust's own rules
    assert hole_of(3, [], []) is None


T0, T1 = TP("t0", 0), TP("t1", 0)


class _Fetcher:
    """faust's consumer, as far as `Refetch` and `refetch_dropped_records` use it: one batch
    of records per `getmany`, handed out while the flow is active."""

    def __init__(self, calls: list[object], batches: list[dict[TP, list[int]]]) -> None:
        self.calls = calls
        self.batches = batches
        self.flow_active = True
        self._committed_offset = {T0: 3, T1: 7}

    def assignment(self) -> set[TP]:
        return {T0, T1}

    async def seek(self, tp: TP, offset: int) -> None:
        self.calls.append(("seek", tp, offset))

    async def _wait_next_records(self, timeout: float) -> tuple[dict[TP, list[Any]], None]:
        batch = self.batches.pop(0) if self.batches else {}
        return {tp: [SimpleNamespace(offset=o) for o in offs] for tp, offs in batch.items()}, None

    async def getmany(self, timeout: float) -> AsyncIterator[tuple[TP, Any]]:
        records, _ = await self._wait_next_records(timeout)
        for tp, recs in records.items():
            for rec in recs:
                if not self.flow_active:
                    return  # faust stops handing out the batch
                self.calls.append(("record", tp, rec.offset))
                yield tp, SimpleNamespace(tp=tp, offset=rec.offset)

    async def callback(self, message: Any) -> None:
        self.calls.append(("delivered", message.tp, message.offset))


def _app(fetcher: _Fetcher) -> Any:
    acking = SimpleNamespace(acks_enabled_for=lambda topic: not topic.endswith("-changelog"))
    return SimpleNamespace(consumer=fetcher, consumer_generation_id=1, topics=acking)


def test_a_refetch_seeks_between_two_batches_never_in_one() -> None:
    """A seek in the middle of a batch let the batch's later records move faust's read
    offset past it (the records fetched again were then dropped as already read)."""
    calls: list[object] = []
    app = _app(_Fetcher(calls, [{T0: [10, 11]}, {T0: [3, 4]}]))
    refetch = faust_compat.Refetch.of(app)

    async def drain() -> None:
        batch = app.consumer.getmany(timeout=1.0)
        assert (await batch.__anext__())[1].offset == 10
        refetch.request(T0, 3, if_committed_at=3)
        refetch.request(T1, 6, if_committed_at=6)  # the commit has moved on: not sought
        assert [m.offset async for _, m in batch] == [11]  # the rest of this batch, no seek
        assert [m.offset async for _, m in app.consumer.getmany(timeout=1.0)] == [3, 4]

    asyncio.run(drain())
    assert calls == [
        ("record", T0, 10), ("record", T0, 11), ("seek", T0, 3),
        ("record", T0, 3), ("record", T0, 4),
    ]  # fmt: skip


def test_a_request_from_before_a_rebalance_is_dropped() -> None:
    calls: list[object] = []
    app = _app(_Fetcher(calls, []))
    faust_compat.Refetch.of(app).request(T0, 5)
    app.consumer_generation_id = 2  # the rebalance seeks every partition to its commit

    async def drain() -> None:
        assert [x async for x in app.consumer.getmany(timeout=1.0)] == []

    asyncio.run(drain())
    assert calls == []


def test_records_the_fetcher_did_not_hand_out_are_fetched_again() -> None:
    calls: list[object] = []
    fetcher = _Fetcher(calls, [{T0: [5, 6, 7], T1: [9]}, {}])
    app = _app(fetcher)
    faust_compat.refetch_dropped_records(app)

    async def drain() -> None:
        async for _, message in fetcher.getmany(timeout=1.0):
            fetcher.flow_active = message.offset != 6  # the flow stops after offset 6
        fetcher.flow_active = True
        assert [x async for x in fetcher.getmany(timeout=1.0)] == []

    asyncio.run(drain())
    # 7 and t1's 9 were fetched and never handed out: both are read again
    assert calls == [("record", T0, 5), ("record", T0, 6), ("seek", T0, 7), ("seek", T1, 9)]


def test_a_record_whose_delivery_was_cancelled_is_fetched_again() -> None:
    calls: list[object] = []
    fetcher = _Fetcher(calls, [{}])

    async def queue_full(message: Any) -> None:
        await asyncio.sleep(10)

    fetcher.callback = queue_full  # type: ignore[method-assign]
    faust_compat.refetch_dropped_records(_app(fetcher))

    async def drain() -> None:
        delivery = asyncio.ensure_future(fetcher.callback(SimpleNamespace(tp=T0, offset=8)))
        await asyncio.sleep(0)
        delivery.cancel()  # the flow was suspended first: faust cancels the delivery
        with pytest.raises(asyncio.CancelledError):
            await delivery
        assert [x async for x in fetcher.getmany(timeout=1.0)] == []

    asyncio.run(drain())
    assert calls == [("seek", T0, 8)]


def test_a_stall_names_what_holds_the_commit() -> None:
    stall_of = faust_compat.stall_of
    assert stall_of(5, 4, [], []) is None  # read up to the commit: nothing is waiting
    assert stall_of(5, 5, [], []) is None  # just sought to the commit: nothing read yet
    assert stall_of(None, 9, [7], []) is None
    assert stall_of(5, 20, [8, 9], [(5, 1), (6, 0)]) == (
        "committed 5, read 20; head 8, 2 acked up to 9; 2 in flight from 5, "
        "1 of them held by no stream"
    )
    assert stall_of(5, 20, [], []) == "committed 5, read 20; none acked; 0 in flight"


def test_recovery_reads_a_changelog_from_its_start_below_offset_zero(tmp_path: Path) -> None:
    """faust sent a standby offset below -1 to aiokafka's seek, which raised, and the worker
    exited on its next start (seen on Tansu)."""
    import asyncio
    from collections import Counter

    from faust.tables.recovery import Recovery
    from faust.types import TP

    from payments.settings import Settings
    from streams.app import create_app

    create_app(Settings(data_dir=tmp_path, store="memory://"))
    seeks: list[dict[TP, int]] = []

    class Consumer:
        async def seek_wait(self, offsets: dict[TP, int]) -> None:
            seeks.append(dict(offsets))

    low, none_yet, read = TP("payments-changelog", 0), TP("payments-changelog", 1), TP("x", 2)
    unknown = TP("payments-changelog", 3)
    offsets = Counter({low: -3, none_yet: -1, read: 41, unknown: None})
    asyncio.run(
        Recovery._seek_offsets(None, Consumer(), {low, none_yet, read, unknown}, offsets, "standby")  # type: ignore[arg-type]
    )
    assert seeks == [{low: 0, none_yet: 0, read: 41, unknown: 0}]


def test_a_failed_commit_keeps_its_acks_for_the_next_one(tmp_path: Path) -> None:
    """faust took the offsets out of the acked ones before committing them: a commit that
    raised (the broker went away) lost them, and the partition's commit stalled below."""
    from payments.settings import Settings
    from streams.app import create_app

    app = create_app(Settings(data_dir=tmp_path, store="memory://"))
    consumer = app.consumer
    tp = TP("gateway_commands", 1)
    consumer.assignment = lambda: {tp}  # type: ignore[method-assign]
    consumer._committed_offset[tp] = 3
    consumer._acked[tp] = [3, 4, 5]
    consumer._acked_index[tp] = {3, 4, 5}

    async def broker_gone(offsets: Any, **_: Any) -> bool:
        consumer._acked[tp].append(6)  # acked while the commit waited
        raise ConnectionError("the broker went away")

    consumer._commit_offsets = broker_gone  # type: ignore[method-assign]
    with pytest.raises(ConnectionError):
        asyncio.run(consumer._commit_tps([tp], start_new_transaction=False))
    assert consumer._acked[tp] == [3, 4, 5, 6]
    assert consumer._committed_offset[tp] == 3

    async def refused(offsets: Any, **_: Any) -> bool:
        consumer._committed_offset.update(offsets)  # as faust does, taken or not
        return False

    consumer._commit_offsets = refused  # type: ignore[method-assign]
    assert asyncio.run(consumer._commit_tps([tp], start_new_transaction=False)) is False
    assert (consumer._acked[tp], consumer._committed_offset[tp]) == ([3, 4, 5, 6], 3)

    async def taken(offsets: Any, **_: Any) -> bool:
        consumer._committed_offset.update(offsets)
        return True

    consumer._commit_offsets = taken  # type: ignore[method-assign]
    assert asyncio.run(consumer._commit_tps([tp], start_new_transaction=False)) is True
    assert (consumer._acked[tp], consumer._committed_offset[tp]) == ([], 7)


def test_a_changelog_is_never_read_again_by_a_refetch() -> None:
    """Table recovery positions changelog partitions itself."""
    calls: list[object] = []
    fetcher = _Fetcher(calls, [{TP("payments-changelog", 0): [4, 5]}, {}])
    fetcher.flow_active = False  # nothing of the batch is handed out
    faust_compat.refetch_dropped_records(_app(fetcher))

    async def drain() -> None:
        assert [x async for x in fetcher.getmany(timeout=1.0)] == []
        assert [x async for x in fetcher.getmany(timeout=1.0)] == []

    asyncio.run(drain())
    assert calls == []


def test_a_quiet_partition_stalled_with_nothing_held_is_read_again() -> None:
    """Records read and never acked, none in an agent's hands, nothing after them: no later
    ack shows a hole, so after 30 s the partition is read again from its commit."""
    calls: list[object] = []
    fetcher = _Fetcher(calls, [{}])
    fetcher._unacked_messages = set()  # type: ignore[attr-defined]
    fetcher._acked = {}  # type: ignore[attr-defined]
    fetcher._read_offset = {T0: 4, T1: 7}  # type: ignore[attr-defined]
    fetcher._commit_fut = None  # type: ignore[attr-defined]
    timers: list[Any] = []
    app = _app(fetcher)
    app.timer = lambda every_s, name: timers.append
    clock = iter([100.0, 131.0])
    faust_compat.watch_commit_stalls(app, clock=lambda: next(clock))

    async def run() -> None:
        await timers[0]()  # T0 committed at 3, read to 4: stalled from now
        await timers[0]()  # 31 s later: read again; T1 read only up to its commit
        assert [x async for x in fetcher.getmany(timeout=1.0)] == []

    asyncio.run(run())
    assert calls == [("seek", T0, 3)]


class _Positions:
    """aiokafka's assignment state as `fetch_position` reads it, behind faust's thread."""

    def __init__(self, positions: dict[TP, int | None]) -> None:
        states = {tp: SimpleNamespace(_position=p) for tp, p in positions.items()}
        assignment = SimpleNamespace(state_value=states.get)
        subscription = SimpleNamespace(subscription=SimpleNamespace(assignment=assignment))
        aio = SimpleNamespace(_subscription=subscription)
        self._ensure_consumer = lambda: aio


def test_a_refetch_never_seeks_forward_past_records_not_handed_out() -> None:
    """A request made before a seek back to the commit must not skip what lies between."""
    calls: list[object] = []
    fetcher = _Fetcher(calls, [{}])
    fetcher._thread = _Positions({T0: 3, T1: 9})  # type: ignore[attr-defined]
    refetch = faust_compat.Refetch.of(_app(fetcher))
    refetch.request(T0, 7)  # aiokafka hands out 3 next: 3..6 would be skipped
    refetch.request(T1, 8)  # 8 was handed out already: read it again

    async def drain() -> None:
        assert [x async for x in fetcher.getmany(timeout=1.0)] == []

    asyncio.run(drain())
    assert calls == [("seek", T1, 8)]


def test_a_jump_in_offsets_is_read_again_not_committed_past() -> None:
    calls: list[object] = []
    fetcher = _Fetcher(calls, [{}, {}])
    gaps: list[tuple[TP, int, int]] = []

    async def add_gap(tp: TP, offset_from: int, offset_to: int) -> None:
        gaps.append((tp, offset_from, offset_to))  # faust: these count as acked

    fetcher._add_gap = add_gap  # type: ignore[attr-defined]
    app = _app(fetcher)
    app.consumer_generation_id = 1
    faust_compat.refetch_instead_of_gaps(app)
    changelog = TP("payments-payments-changelog", 0)

    async def drain() -> None:
        await fetcher._add_gap(T0, 11, 14)  # type: ignore[attr-defined]  # read 10, then got 14
        assert [x async for x in fetcher.getmany(timeout=1.0)] == []
        await fetcher._add_gap(T0, 11, 14)  # type: ignore[attr-defined]  # the offsets are gone
        await fetcher._add_gap(changelog, 5, 9)  # type: ignore[attr-defined]

    asyncio.run(drain())
    assert calls == [("seek", T0, 10)]  # from the read offset: after a seek it is the next
    assert gaps == [(T0, 11, 14), (changelog, 5, 9)]


def test_a_real_consumer_folds_a_gap_into_its_acks() -> None:
    """What `refetch_instead_of_gaps` exists for, on faust's own bookkeeping: a gap is
    committed past."""
    consumer = SimpleNamespace(
        _acked={T0: [14]},
        _acked_index={T0: {14}},
        _committed_offset={T0: 11},
        _gap={},
    )
    consumer._gap[T0] = IntervalTree()

    async def run() -> int | None:
        await Consumer._add_gap(consumer, T0, 11, 13)  # type: ignore[arg-type]
        return Consumer._new_offset(consumer, T0)  # type: ignore[arg-type]

    assert asyncio.run(run()) == 15  # 11..13 never acked, committed past
