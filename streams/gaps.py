"""A watch on each input partition for offsets a stream jumped over without delivering them.

Our input topics are written without transactions and never compacted, so within one
assignment the records of a partition reach an agent at consecutive offsets (a seek back
after a rebalance may repeat some, which is fine). A jump forward means records were fetched
and never handed to the agent; if the group then commits past them they are lost. faust
bugs of that kind were found and worked around (`streams.faust_compat`); this watch counts
and logs any that remain, so a chaos run or a production dashboard sees one at once.
"""

from __future__ import annotations

import logging
from collections.abc import Hashable

import faust
from prometheus_client import Counter

log = logging.getLogger(__name__)

INPUT_GAPS = Counter(
    "payments_input_gaps_total",
    "Offsets an agent's input partition jumped over within one assignment: records fetched "
    "and never delivered. Should stay 0; see RELIABILITY.md.",
    ["topic"],
)


class GapWatch:
    """The last offset delivered per partition since the last rebalance."""

    def __init__(self) -> None:
        self._last: dict[Hashable, int] = {}

    def observe(self, topic: str, partition: int, offset: int) -> int:
        """Note a delivered record; return how many offsets before it were jumped over."""
        tp = (topic, partition)
        last = self._last.get(tp)
        self._last[tp] = offset
        if last is None or offset <= last + 1:
            return 0
        missed = offset - last - 1
        INPUT_GAPS.labels(topic).inc(missed)
        log.warning(
            "%s[%s]: offsets %s..%s were never delivered to the agent (next delivered: %s)",
            topic, partition, last + 1, offset - 1, offset,
        )  # fmt: skip
        return missed

    def reset(self) -> None:
        """Forget every partition: after a rebalance a partition restarts from its commit."""
        self._last.clear()


def watch_inputs(app: faust.App) -> GapWatch:
    """A `GapWatch` forgotten at every revocation of `app`'s partitions."""
    gaps = GapWatch()

    async def forget(sender: object, revoked: object, **_: object) -> None:
        gaps.reset()

    app.on_partitions_revoked.connect(forget)  # type: ignore[arg-type]
    return gaps
