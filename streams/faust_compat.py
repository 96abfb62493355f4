"""Workarounds for two faust-streaming 0.15.3 bugs that lose records at a takeover (any broker).

1. Resuming the flow throws fetched records away (`keep_queues_on_resume`).
2. A stream acks, and so lets faust commit, the events it skips unprocessed during a
   rebalance (`hold_skipped_offsets`).

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
from typing import Any

from faust.types.tuples import ack_lock
from mode.utils.futures import notify

log = logging.getLogger(__name__)


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
            "record %s[%s]@%s skipped by a stream during a rebalance: left uncommitted, "
            "it is fetched again",
            message.topic,
            message.partition,
            message.offset,
        )
        return False

    consumer.ack = ack_unless_skipped
