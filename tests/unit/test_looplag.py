"""The event-loop lag monitor: what it measures and when it warns."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

import pytest

from agents.looplag import LagReport, LagWarnings, overshoot, watch
from agents.metrics import EVENT_LOOP_LAG


def test_overshoot_is_how_late_a_sleep_woke_and_never_negative() -> None:
    assert overshoot(10.0, 10.4, 0.25) == pytest.approx(0.15)
    assert overshoot(10.0, 10.25, 0.25) == 0.0
    assert overshoot(10.0, 10.249, 0.25) == 0.0  # woken a little early by the clock


def test_no_warning_while_the_loop_keeps_up() -> None:
    warnings = LagWarnings(above_s=0.1, every_s=10)
    assert all(warnings.observe(0.1, t) is None for t in range(100))  # at the threshold: fine


def test_the_first_lag_above_the_threshold_is_reported_at_once() -> None:
    warnings = LagWarnings(above_s=0.1, every_s=10)
    assert warnings.observe(0.02, 0.0) is None
    assert warnings.observe(0.3, 1.0) == LagReport(worst_s=0.3, count=1)


def test_then_at_most_one_report_per_period_with_the_worst_lag_in_it() -> None:
    warnings = LagWarnings(above_s=0.1, every_s=10)
    assert warnings.observe(0.2, 0.0) == LagReport(worst_s=0.2, count=1)
    assert warnings.observe(0.9, 2.0) is None
    assert warnings.observe(0.4, 5.0) is None
    assert warnings.observe(0.0, 9.9) is None
    # The period is over: the next measurement, slow or not, reports what was held back.
    assert warnings.observe(0.01, 10.0) == LagReport(worst_s=0.9, count=2)
    assert warnings.observe(0.01, 30.0) is None  # nothing held back: nothing to say
    assert warnings.observe(0.5, 31.0) == LagReport(worst_s=0.5, count=1)


async def test_watch_sets_the_gauge_and_warns_when_the_loop_is_held(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="agents.looplag")
    # Every lag above 100 ms reported: one from a busy machine cannot hide the stall's.
    task = asyncio.create_task(watch(interval_s=0.01, warnings=LagWarnings(every_s=0)))
    try:
        await asyncio.sleep(0.05)
        time.sleep(0.2)  # hold the loop, as CPU-bound code on it would  # noqa: ASYNC251
        await asyncio.sleep(0.001)  # the monitor's sleep is long over: it measures now
        assert 0.15 <= EVENT_LOOP_LAG._value.get() < 1
        await asyncio.sleep(0.05)
        records = [r for r in caplog.records if r.name == "agents.looplag"]
        assert records and all(r.levelno == logging.WARNING for r in records)
        assert "event loop lag" in records[0].getMessage()
        worst_ms = [r.args[0] for r in records if isinstance(r.args, tuple)]
        assert any(isinstance(ms, float) and 150 <= ms < 1000 for ms in worst_ms)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def test_the_gauge_is_on_the_workers_metrics_page() -> None:
    """/metrics serves the default registry (`agents.pages`), where the gauge lives."""
    from prometheus_client import generate_latest

    assert b"\n# TYPE payments_event_loop_lag_seconds gauge\n" in generate_latest()
