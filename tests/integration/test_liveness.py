"""Liveness under sustained load, the regression guard for issue 14: at least 2,000 payments
and refunds through worker kills, garbage records and webhook chaos, and on Apache Kafka a
broker crash. Every accepted payment and refund must be final, and `payments audit` clean,
within a bounded drain.

This is a correctness assertion (nothing accepted is left behind), not a speed target: the
figures it prints are for reading, and `payments bench` is where speed is measured. A
pipeline that slows down enough to leave work behind after the drain fails it, which is how
the 7x regression of issue 14 would have been caught (its chaos run left 254 payments open).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from payments.chaos import ChaosOptions, run_chaos
from payments.devstack import Broker, DevStack
from tests.conftest import chaos_stack

pytestmark = pytest.mark.stack

RATE = 20.0  # payments/s offered
LOAD_S = 90.0  # ~1,800 payments and, a quarter of those refunded, ~450 refunds


@pytest.fixture(scope="module")
def stack(
    tmp_path_factory: pytest.TempPathFactory, external_services: tuple[str | None, str | None]
) -> Iterator[DevStack]:
    with chaos_stack(tmp_path_factory.mktemp("liveness"), external_services) as own:
        yield own


def test_two_thousand_payments_and_refunds_all_final_through_faults(
    stack: DevStack, tmp_path: Path
) -> None:
    scenarios = ["worker_kill", "garbage", "webhook_chaos"]
    if stack.broker is Broker.KAFKA:
        scenarios.append("broker_kill")
    opts = ChaosOptions(
        scenarios=tuple(scenarios),
        duration_s=LOAD_S,
        rate=RATE,
        fault_s=8.0,
        calm_s=6.0,
        kill_every_s=3.0,
        retry_grace_s=30.0,
        drain_s=150.0,  # the bound: everything accepted is final by then
        quiet_s=40.0,
        seed=14,
    )
    result = run_chaos(opts, stack=stack, results_file=tmp_path / "liveness.jsonl")
    moved = result.accepted + result.refunds_accepted
    print(
        f"liveness: {result.accepted} payments and {result.refunds_accepted} refunds accepted, "
        f"faults {result.faults}, accepted -> final {result.latency_ms}, "
        f"drained in {result.drain_s:.0f} s"
    )
    assert moved >= 2000, result.to_json()
    assert set(result.faults) == set(scenarios), result.fault_log
    details = "\n".join(f"{v.kind} {v.subject}: {v.detail}" for v in result.violations[:40])
    assert result.violations == [], f"{result.violation_counts()}\n{details}"
