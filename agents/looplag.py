"""Event-loop lag: how late the worker's loop wakes a task that asked to sleep.

Every agent, timer, Kafka heartbeat and web page of the worker shares one event loop, so
code that holds it without awaiting (a CPU-bound loop on it) delays all of them at once. A
task sleeps `interval_s` over and over and measures by how much each sleep overran: the
lag every other task saw meanwhile. `payments_event_loop_lag_seconds` holds the last
measurement. A lag above `warn_above_s` is logged as a WARNING, at most one line per
`warn_every_s`, naming the worst lag since the previous line: a starved loop is visible in
the log without flooding it.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any

import faust

from agents.metrics import EVENT_LOOP_LAG

log = logging.getLogger(__name__)

INTERVAL_S = 0.25
WARN_ABOVE_S = 0.1
WARN_EVERY_S = 10.0


def overshoot(started_s: float, woke_s: float, interval_s: float) -> float:
    """By how much a sleep of `interval_s` begun at `started_s` overran; never negative (a
    loop may wake a timer a little early, by its clock's resolution)."""
    return max(0.0, woke_s - started_s - interval_s)


@dataclass(frozen=True, slots=True)
class LagReport:
    worst_s: float  # the largest lag above the threshold since the previous report
    count: int  # how many measurements were above it


class LagWarnings:
    """Which lags deserve a WARNING line: the first above the threshold at once, then at
    most one per `every_s`, with the worst lag seen in between. Pure: times are given."""

    def __init__(self, *, above_s: float = WARN_ABOVE_S, every_s: float = WARN_EVERY_S) -> None:
        self.above_s = above_s
        self.every_s = every_s
        self._worst = 0.0
        self._count = 0
        self._last_report_s: float | None = None

    def observe(self, lag_s: float, now_s: float) -> LagReport | None:
        """Take one measurement; a report when a line is due now, else None."""
        if lag_s > self.above_s:
            self._worst = max(self._worst, lag_s)
            self._count += 1
        if not self._count:
            return None
        if self._last_report_s is not None and now_s - self._last_report_s < self.every_s:
            return None
        report = LagReport(worst_s=self._worst, count=self._count)
        self._worst, self._count, self._last_report_s = 0.0, 0, now_s
        return report


async def watch(
    *,
    interval_s: float = INTERVAL_S,
    warnings: LagWarnings | None = None,
) -> None:
    """Measure the loop's lag every `interval_s`, forever (until cancelled)."""
    warnings = warnings or LagWarnings()
    loop = asyncio.get_running_loop()
    while True:
        started = loop.time()
        await asyncio.sleep(interval_s)
        woke = loop.time()
        lag = overshoot(started, woke, interval_s)
        EVENT_LOOP_LAG.set(lag)
        report = warnings.observe(lag, woke)
        if report is not None:
            log.warning(
                "event loop lag %.0f ms, the worst of %d measurement(s) above %.0f ms since "
                "the last such warning: every agent, timer and heartbeat waited that long",
                report.worst_s * 1000,
                report.count,
                warnings.above_s * 1000,
            )


def register(app: faust.App, *, interval_s: float = INTERVAL_S) -> Any:
    """Run `watch` as a task of the worker, from its start until it stops."""

    @app.task(traced=False)  # type: ignore[untyped-decorator]
    async def event_loop_lag() -> None:
        await watch(interval_s=interval_s)

    return event_loop_lag
