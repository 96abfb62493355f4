"""The bench's sustained-throughput figures: payments/s per whole minute, and flatness."""

from __future__ import annotations

from payments.bench import flatness, per_minute


def test_per_minute_counts_whole_minutes_only() -> None:
    settled = [100.0 + i * 0.5 for i in range(300)]  # 2/s for 150 s from t=100
    assert per_minute(settled, started=100.0, seconds=150.0) == [2.0, 2.0]


def test_a_last_minute_below_80_percent_of_the_first_is_not_flat() -> None:
    assert flatness([100.0, 90.0, 80.0]) == "flat"
    assert flatness([100.0, 90.0, 79.9]) == "not flat"
    assert flatness([100.0]) is None  # one minute says nothing about decay
