"""Workarounds for faust-streaming 0.15.3 bugs that lose or strand records (any broker).

1. Resuming the flow throws fetched records away (`keep_queues_on_resume`).
2. A stream acks, and so lets faust commit, the events it skips unprocessed during a
   rebalance (`hold_skipped_offsets`).
3. faust commits past one record missing at the head of a partition's acks, and stalls for
   good behind two or more (`no_commit_past_a_hole`, `redeliver_holes`).
4. Table recovery hands `seek` an offset below -1 and crashes the worker
   (`recover_from_the_start`).
5. The fetcher drops records it fetched when the flow stops, with no seek back unless a
   rebalance follows (`refetch_dropped_records`).
6. A commit that fails loses the acks it was committing (`keep_acks_of_a_failed_commit`).
7. faust commits past offsets it skipped as if Kafka had made a gap (`refetch_instead_of_gaps`).

`FlowControlEvent.resume()` (mode) empties every stream's input queue. faust's recovery
resumes the flow, and so the fetcher, before it seeks the stream partitions to their
committed offsets (`Recovery._restart_recovery`: "Resuming flow..." when no changelog needs
replaying), then resumes once more when it is done (`Recovery.on_recovery_completed`, after
`perform_seek`). Records fetched in between wait in an agent's queue and that second resume
throws them away: never processed, never acked, while the fetch position is already past
them and nothing seeks back. The worker is ready and owns the partition, yet those records
wait for the next rebalance; with no later rebalance the payment stays `pending` for good.

Nothing needs that clearing: revocation already empties the queues
(`App._on_partitions_revoked` calls `flow_control.clear()` after suspending the flow), and an
event still queued from an older generation is skipped by the stream's generation check,
left uncommitted (bug 2) and fetched again from the committed offset. So resume only resumes.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from collections.abc import Callable, Iterable
from typing import Any

from faust.types.tuples import ack_lock
from mode.utils.futures import notify
from prometheus_client import Counter, Gauge

log = logging.getLogger(__name__)

REFETCHED = Counter(
    "payments_inputs_refetched_total",
    "Seeks back to read again records fetched from Kafka that no stream was given.",
    ["topic"],
)
GAPS_REFETCHED = Counter(
    "payments_input_gaps_refetched_total",
    "Jumps in an input partition's offsets that faust would have committed past as a gap "
    "Kafka made, read again instead.",
    ["topic"],
)
REDELIVERED = Counter(
    "payments_inputs_redelivered_total",
    "Offsets fetched again because they never reached an agent and held the commit back.",
    ["topic"],
)


def keep_queues_on_resume(app: Any) -> None:
    """Make `app.flow_control.resume()` resume the flow without discarding queued events."""
    flow = app.flow_control

    def resume() -> None:
        flow._suspend.clear()
        flow._resume.set()

    flow.resume = resume


def hold_skipped_offsets(app: Any) -> None:
    """Keep a record a stream skipped unprocessed out of the offsets faust may commit.

    2. A stream skips the events it takes from its queue while the flow is suspended (a
    rebalance is under way) or that were fetched in an older generation, and it *acks*
    them "otherwise the lag would increase" (`Stream._py_aiter`). An ack makes the offset
    committable, so the commit at the revocation (`Consumer.wait_empty`) or the next one
    passes a record that no agent ever applied, and nobody fetches it again: a refund
    request or a gateway command accepted with a 202 is silently lost. Such an event can
    reach the queue after the revocation emptied it: the fetcher's callback passed the
    flow-control gate before the suspension and was still waiting on the producer buffer
    or a full queue, then delivered.

    The stream tracks an event (`message.tracked`) only once it hands it to the agent, so
    an untracked consumer message at ack time is one that was skipped. Its ack now only
    settles faust's bookkeeping (the revocation does not wait on it); its offset stays out
    of `_acked`, the commit stops below it, and the partition's next owner, this worker or
    another, fetches it again from the committed offset after the seek every rebalance
    ends with.
    """
    consumer = app.consumer
    ack = consumer.ack
    refetch = Refetch.of(app)

    def ack_unless_skipped(message: Any) -> bool:
        if not getattr(message, "use_tracking", False) or message.tracked:
            return bool(ack(message))
        with ack_lock:
            if message.acked:
                return False
            message.acked = True
            consumer._unacked_messages.discard(message)
            notify(consumer._waiting_for_ack)
        log.info(
            "record %s[%s]@%s skipped by a stream while the flow was suspended: left "
            "uncommitted, it is fetched again",
            message.topic,
            message.partition,
            message.offset,
        )
        if getattr(message, "generation_id", None) == app.consumer_generation_id:
            refetch.request(message.tp, message.offset)  # no rebalance will seek it back
        return False

    consumer.ack = ack_unless_skipped


def keep_acks_of_a_failed_commit(app: Any) -> None:
    """A commit that failed leaves the partition's acks and committed offset as they were.

    6. `Consumer._new_offset` takes the offsets it commits out of the acked ones *before*
    the commit, and `_commit_offsets` moves the committed offset whether the broker took
    the commit or not. A commit that raised (the broker went away during its producer
    flush) or was refused lost those acks: the commit then stalled below them for good, or
    faust believed an offset committed that the group never had. The acks and the committed
    offset are now put back, and the next commit sends them again.
    """
    consumer = app.consumer
    commit_tps = consumer._commit_tps

    async def commit_tps_or_keep(tps: Any, *args: Any, **kwargs: Any) -> bool:
        tps = list(tps)
        before = {
            tp: (list(consumer._acked.get(tp, ())), consumer._committed_offset.get(tp))
            for tp in tps
        }
        done = False
        try:
            done = bool(await commit_tps(tps, *args, **kwargs))
            return done
        finally:
            if not done:
                _put_back(consumer, before)

    consumer._commit_tps = commit_tps_or_keep


def _put_back(consumer: Any, before: dict[Any, tuple[list[int], int | None]]) -> None:
    assigned = consumer.assignment()
    for tp, (acked, committed) in before.items():
        if tp not in assigned:
            continue  # revoked since: its acks are gone and its next owner reads the commit
        now = consumer._acked[tp]
        kept = sorted(set(acked) | set(now))
        if committed is not None:
            kept = [offset for offset in kept if offset >= committed]
        now[:] = kept
        consumer._acked_index[tp] = set(kept)
        consumer._committed_offset[tp] = committed


def no_commit_past_a_hole(app: Any) -> None:
    """Never commit past an offset no agent acked: the commit stops at the hole instead.

    3a. `Consumer._new_offset` keeps `_committed_offset[tp]` as Kafka does, the *next*
    offset to read (`perform_seek` stores the group's committed offsets, a commit stores
    its last offset + 1), but tests the head of the acked offsets as if it were the last one
    read: `min(acked) - committed > 1`. So acks of C+1, C+2, ... with C never acked commit
    past C, and the record at C, never applied, is never fetched again. With two or more
    missing the test holds and the commit stops for good (`redeliver_holes` heals that).
    A partition with gaps (offsets Kafka itself skipped: compaction, transaction markers)
    keeps faust's own reckoning, which folds the gaps in first; our inputs have none.
    """
    consumer = app.consumer
    original = consumer._new_offset

    def new_offset(tp: Any) -> int | None:
        committed = consumer._committed_offset[tp]
        acked = consumer._acked[tp]
        if committed is not None and acked and not consumer._gap[tp] and min(acked) > committed:
            return None
        result: int | None = original(tp)
        return result

    consumer._new_offset = new_offset


def refetch_instead_of_gaps(app: Any) -> None:
    """Read again the offsets faust takes for a gap Kafka made, instead of committing past.

    7. `Consumer._drain_messages` takes a record further on than the one after its read
    offset for offsets Kafka itself skipped (compaction, transaction markers) and records
    them as a gap, which `_new_offset` folds into the acks: the commit then passes them.
    Our inputs are never compacted nor written in transactions, so there such a jump is
    records that were fetched and never handed out (a read offset left behind by a seek or a
    takeover), and committing past them loses them. The partition is read again from the
    first missing offset instead, and the jump is logged. The same jump seen a second time in
    one generation (the offsets really are gone: retention deleted them) gets faust's own
    reckoning, so a partition can never loop. Changelogs keep faust's reckoning.

    Seen in both liveness runs (test_liveness.py) where it was logged: within one second,
    after a restarted worker took its partitions, 34 and 35 jumps of 4 to 31 offsets, on
    most input topics at once, none of them asked for again by `refetch_dropped_records`.
    faust folded them into the acks; a worker killed before the records came round again
    lost them (one CI run: a `payment_status` record never projected, the read model a
    step behind).
    """
    consumer = app.consumer
    add_gap = consumer._add_gap
    refetch = Refetch.of(app)
    asked: set[tuple[Any, int, int]] = set()

    async def refetch_the_gap(tp: Any, offset_from: int, offset_to: int) -> None:
        jump = (tp, offset_from, app.consumer_generation_id)
        if not app.topics.acks_enabled_for(tp.topic) or jump in asked:
            await add_gap(tp, offset_from, offset_to)
            return
        asked.add(jump)
        GAPS_REFETCHED.labels(tp.topic).inc()
        log.warning(
            "%s[%s]: offset %s came after %s: offsets %s..%s were never handed out; "
            "reading them again rather than committing past them",
            tp.topic, tp.partition, offset_to, offset_from - 1, offset_from, offset_to - 1,
        )  # fmt: skip
        # From the read offset itself: after a seek it is the next offset, not the last one.
        refetch.request(tp, offset_from - 1)

    consumer._add_gap = refetch_the_gap


def recover_from_the_start(app: Any) -> None:
    """Read a changelog from its start where recovery would seek below offset 0.

    4. `Recovery._seek_offsets` maps only -1 ("nothing read yet") to 0; a standby whose
    recorded offset is lower, or None (both seen on Tansu with a worker SIGKILLed over and
    over), goes to aiokafka's `seek` as it is, which raises "Offset must be a positive
    integer", and the worker exits on its next start. Reading such a changelog from its first offset
    rebuilds the same table: every changelog record is an upsert of its key.
    """
    from faust.tables.recovery import Recovery

    original = Recovery._seek_offsets
    if getattr(original, "from_the_start", False):
        return  # patched by an earlier app of this process: the class is shared

    async def seek_offsets(
        self: Recovery, consumer: Any, tps: Any, offsets: Any, title: str
    ) -> None:
        low = {tp: offsets[tp] for tp in tps if offsets[tp] is None or offsets[tp] < -1}
        if low:
            log.warning(
                "%s recovery: offsets %s unknown or below 0: read from the start", title, low
            )
            offsets = type(offsets)({**offsets, **dict.fromkeys(low, -1)})
        await original(self, consumer, tps, offsets, title)

    seek_offsets.from_the_start = True  # type: ignore[attr-defined]
    Recovery._seek_offsets = seek_offsets  # type: ignore[method-assign]


def hole_of(
    committed: int | None, acked: Iterable[int], in_flight: Iterable[int]
) -> tuple[int, int] | None:
    """The offsets [from, to) at the head of a partition that were never acked and are not
    being worked on, when later ones were acked; None when there is no such hole."""
    acked = list(acked)
    if committed is None or not acked:
        return None
    head = min(acked)
    if head <= committed or any(committed <= o < head for o in in_flight):
        return None
    return committed, head


class Refetch:
    """Seek partitions back, by the fetcher itself, before its next batch.

    `request(tp, offset)` asks for `tp` to be read again from `offset`. The seek is made
    between two batches (`getmany`), never from a timer or an agent: a seek in the middle of
    a batch let that batch's later records move faust's read offset past it (the records
    fetched again were then dropped as already read) and counted the skipped offsets as a
    gap Kafka had made, which faust commits past. A request made in an older generation is
    dropped: the rebalance in between seeked every partition to its committed offset. Only
    the agents' input topics are read again, never a table's changelog (table recovery
    positions those partitions itself).
    """

    def __init__(self, app: Any) -> None:
        self._app = app
        self._consumer = app.consumer
        # tp -> (offset, generation, committed offset the request needs, or None)
        self._wanted: dict[Any, tuple[int, int, int | None]] = {}
        getmany = self._consumer.getmany

        async def getmany_after_seeks(*args: Any, **kwargs: Any) -> Any:
            await self._seek_wanted()
            async for item in getmany(*args, **kwargs):
                yield item

        self._consumer.getmany = getmany_after_seeks

    @classmethod
    def of(cls, app: Any) -> Refetch:
        """The app's one `Refetch` (its fetcher is wrapped once)."""
        existing: Refetch | None = getattr(app.consumer, "_payments_refetch", None)
        if existing is None:
            existing = cls(app)
            app.consumer._payments_refetch = existing
        return existing

    def request(self, tp: Any, offset: int, *, if_committed_at: int | None = None) -> None:
        """Read `tp` again from `offset` (the earliest offset asked for wins); with
        `if_committed_at`, only while the partition's commit is still there."""
        if not self._app.topics.acks_enabled_for(tp.topic):
            return
        generation = self._app.consumer_generation_id
        earlier = self._wanted.get(tp)
        if earlier is not None and earlier[1] == generation and earlier[0] <= offset:
            return
        self._wanted[tp] = (offset, generation, if_committed_at)

    async def _seek_wanted(self) -> None:
        consumer = self._consumer
        for tp, (offset, generation, committed) in list(self._wanted.items()):
            del self._wanted[tp]
            if generation != self._app.consumer_generation_id or tp not in consumer.assignment():
                continue
            if committed is not None and consumer._committed_offset.get(tp) != committed:
                continue
            position = fetch_position(consumer, tp)
            if position is not None and offset >= position:
                # Not handed out yet (a seek since, to the commit, went back further): a
                # seek forward would skip the records in between.
                continue
            REFETCHED.labels(tp.topic).inc()
            log.info("%s[%s]: reading again from %s", tp.topic, tp.partition, offset)
            await consumer.seek(tp, offset)


def fetch_position(consumer: Any, tp: Any) -> int | None:
    """aiokafka's position for `tp`, the offset of the next record it hands to faust; None
    when it has none (a reset under way) or this is not faust's aiokafka consumer. Read from
    the consumer thread's state without waiting: an int attribute, safe to read here."""
    try:
        aio = consumer._thread._ensure_consumer()
        # One read of the attribute: the consumer thread may reset it at any moment, and
        # `position` asserts it is set (an AssertionError here would stop the fetcher).
        position = aio._subscription.subscription.assignment.state_value(tp)._position
    except Exception:  # no thread yet, unassigned, or a stand-in consumer
        return None
    return None if position is None else int(position)


def refetch_dropped_records(app: Any) -> None:
    """Read again every record the fetcher took from Kafka and did not hand to a stream.

    5. faust drops fetched records in three places, each time with aiokafka's position
    already past them and no seek back unless a rebalance follows:
    - `Consumer.getmany` stops handing out a batch when the flow stops or the generation
      changes, and leaves out records of partitions that are not active (paused for
      recovery);
    - `Consumer._drain_messages` waits for a record's delivery to the agents' queues *or*
      for the flow to be suspended, cancels the delivery when the flow wins, and moves its
      read offset on regardless;
    - a stream skips a record it takes while the flow is suspended (`hold_skipped_offsets`).
    Recovery suspends the flow without a rebalance, so those records were never read
    again: the commit stalled below them (or, before `no_commit_past_a_hole`, passed one)
    and the last records of a quiet partition stayed unprocessed. Each such record now asks
    `Refetch` to read its partition again from it.
    """
    consumer = app.consumer
    refetch = Refetch.of(app)
    wait_next_records = consumer._wait_next_records
    callback = consumer.callback
    batch: dict[Any, list[int]] = {}

    async def wait_next_records_kept(*args: Any, **kwargs: Any) -> Any:
        records, active = await wait_next_records(*args, **kwargs)
        batch.clear()
        for tp, recs in (records or {}).items():
            if recs:
                batch[tp] = [rec.offset for rec in recs]
        return records, active

    getmany = consumer.getmany

    async def getmany_all_or_refetch(*args: Any, **kwargs: Any) -> Any:
        handed: dict[Any, int] = {}
        try:
            async for tp, message in getmany(*args, **kwargs):
                handed[tp] = message.offset
                yield tp, message
        finally:
            for tp, offsets in batch.items():
                last = handed.get(tp)
                left = [o for o in offsets if last is None or o > last]
                if left:
                    refetch.request(tp, left[0])
            batch.clear()

    async def deliver_or_refetch(message: Any) -> Any:
        try:
            return await callback(message)
        except BaseException:
            refetch.request(message.tp, message.offset)
            raise

    consumer._wait_next_records = wait_next_records_kept
    consumer.getmany = getmany_all_or_refetch
    consumer.callback = deliver_or_refetch


def redeliver_holes(
    app: Any, *, every_s: float = 5.0, after_s: float = 10.0, held_after_s: float = 120.0
) -> None:
    """Fetch a partition again from its committed offset when a hole at its head lasts.

    3b. A record can reach no agent at all: fetched while the flow was suspended and
    dropped (`Consumer._drain_messages` waits on the flow and moves its read offset on
    regardless), or lost between the fetcher and a queue at a takeover. Later records are
    applied and acked, the commit stops below the lost one (`no_commit_past_a_hole`) and
    nothing fetches it again until the next rebalance. Seen on Apache Kafka in the chaos
    test: `payment_status[4]` committed at 31 for two minutes while 110 later records were
    projected. A hole with no record of it in an agent's hands (faust's unacked, tracked
    messages) for `after_s` is therefore fetched again from the committed offset. Every
    input is idempotent (dedup tables, seq-guarded projections, gateway idempotency keys),
    so the records after the hole that are delivered twice change nothing.

    A record can also stay "in an agent's hands" for good: an agent that crashed, or was
    cancelled, keeps its unacked events referenced from the traceback faust stores. A hole
    whose records have been in flight for `held_after_s` (no call of ours takes that long)
    is fetched again too.

    The partition is read again through `Refetch`, by the fetcher, between two batches.
    """
    consumer = app.consumer
    seen: dict[Any, tuple[int, float]] = {}
    refetch = Refetch.of(app)

    async def heal() -> None:
        if not app.flow_control.is_active():  # a rebalance is under way: it seeks anyway
            seen.clear()
            return
        if consumer._commit_fut is not None:
            # A commit under way has taken its offsets out of the acked ones already and
            # not yet moved the committed offset: that is no hole (it outlasts `after_s`
            # while the broker is down).
            return
        now = time.monotonic()
        assigned = consumer.assignment()
        in_flight: dict[Any, list[int]] = defaultdict(list)
        for message in list(consumer._unacked_messages):
            if not message.acked:
                in_flight[message.tp].append(message.offset)
        for tp in list(consumer._acked):
            hole = hole_of(consumer._committed_offset[tp], consumer._acked[tp], ())
            if tp not in assigned or hole is None:
                seen.pop(tp, None)
                continue
            first = seen.setdefault(tp, (hole[0], now))
            if first[0] != hole[0]:
                seen[tp] = (hole[0], now)
                continue
            held = hole_of(hole[0], consumer._acked[tp], in_flight[tp]) is None
            if now - first[1] < (held_after_s if held else after_s):
                continue
            seen.pop(tp, None)
            REDELIVERED.labels(tp.topic).inc(hole[1] - hole[0])
            log.warning(
                "%s[%s]: offsets %s..%s never reached an agent and hold the commit back; "
                "fetching the partition again from %s%s",
                tp.topic, tp.partition, hole[0], hole[1] - 1, hole[0],
                f" (held unacked for {now - first[1]:.0f} s)" if held else "",
            )  # fmt: skip
            refetch.request(tp, hole[0], if_committed_at=hole[0])

    app.timer(every_s, name="redeliver-holes")(heal)


STALLED = Gauge(
    "payments_commit_stalled_partitions",
    "Input partitions whose commit has not moved for a while although records past it were read.",
)


def stall_of(
    committed: int | None,
    read: int | None,
    acked: Iterable[int],
    in_flight: Iterable[tuple[int, int]],
) -> str | None:
    """What holds a partition's commit back, in words; None when nothing was read past it.
    `in_flight` is (offset, refcount) of each message an agent took and did not ack."""
    if committed is None or read is None or read <= committed:
        return None  # faust's read offset is the next one to read right after a seek
    acked = sorted(acked)
    held = sorted(o for o, _ in in_flight if o >= committed)
    unreferenced = sorted(o for o, refs in in_flight if o >= committed and refs <= 0)
    head = f"head {acked[0]}, {len(acked)} acked up to {acked[-1]}" if acked else "none acked"
    return (
        f"committed {committed}, read {read}; {head}; {len(held)} in flight"
        + (f" from {held[0]}" if held else "")
        + (f", {len(unreferenced)} of them held by no stream" if unreferenced else "")
    )


def watch_commit_stalls(
    app: Any,
    *,
    every_s: float = 10.0,
    after_s: float = 30.0,
    clock: Callable[[], float] = time.monotonic,
) -> None:
    """Say so when a partition's commit stays put for `after_s` while records past it were
    read: a WARNING naming what holds it (the acked head, the records still in flight) and
    `payments_commit_stalled_partitions`.

    A stall with nothing acked past the commit and nothing in an agent's hands is records
    that were read and reached no agent by a way none of the workarounds above saw (seen in
    a chaos run: `refund_request[5]` read to 81, committed at 80, for 30 s). `redeliver_holes`
    needs a later ack to see a hole, and a quiet partition gives none, so the partition is
    read again from its commit; the watch then starts over."""
    consumer = app.consumer
    refetch = Refetch.of(app)
    since: dict[Any, tuple[int | None, float, bool]] = {}

    async def watch() -> None:
        now = clock()
        in_flight: dict[Any, list[tuple[int, int]]] = defaultdict(list)
        for message in list(consumer._unacked_messages):
            if not message.acked:
                in_flight[message.tp].append((message.offset, getattr(message, "refcount", 1)))
        stalled = 0
        for tp in consumer.assignment():
            committed = consumer._committed_offset.get(tp)
            what = stall_of(
                committed, consumer._read_offset.get(tp), consumer._acked.get(tp, ()), in_flight[tp]
            )
            seen = since.get(tp)
            if what is None or seen is None or seen[0] != committed:
                since[tp] = (committed, now, False)
                continue
            if now - seen[1] < after_s:
                continue
            stalled += 1
            if not seen[2]:
                since[tp] = (committed, seen[1], True)
                log.warning(
                    "%s[%s]: commit stalled for %.0f s: %s",
                    tp.topic, tp.partition, now - seen[1], what,
                )  # fmt: skip
            held = consumer._acked.get(tp) or any(o >= committed for o, _ in in_flight[tp])
            if not held and committed is not None and consumer._commit_fut is None:
                refetch.request(tp, committed, if_committed_at=committed)
                since[tp] = (committed, now, False)
        STALLED.set(stalled)

    app.timer(every_s, name="watch-commit-stalls")(watch)
