"""A workaround for a faust-streaming 0.15.3 bug that loses records at a takeover (any broker).

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
event still queued from an older generation is skipped, un-acked, by the stream's generation
check and fetched again from the committed offset. So resume only resumes.
"""

from __future__ import annotations

from typing import Any


def keep_queues_on_resume(app: Any) -> None:
    """Make `app.flow_control.resume()` resume the flow without discarding queued events."""
    flow = app.flow_control

    def resume() -> None:
        flow._suspend.clear()
        flow._resume.set()

    flow.resume = resume
