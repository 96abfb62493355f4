"""Chaos, the short version CI runs: steady load over HTTP while workers are SIGKILLed, the
ingress and Redis restarted, garbage produced to every input topic, webhooks delayed,
duplicated and reordered, and gateways failing; then `payments audit` and the harness's own
checks (`payments/chaos.py`: every accepted payment final, charged once, refunds within
captures, no status backwards, nothing unprocessed outside `dead_letter`).

`payments chaos --minutes N` is the long version."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from payments.chaos import ChaosOptions, ChaosResult, run_chaos
from payments.devstack import DevStack
from tests.conftest import chaos_stack

pytestmark = pytest.mark.stack


@pytest.fixture(scope="module")
def stack(
    tmp_path_factory: pytest.TempPathFactory, external_services: tuple[str | None, str | None]
) -> Iterator[DevStack]:
    """A stack of this module's own, with the chaos settings."""
    with chaos_stack(tmp_path_factory.mktemp("chaos"), external_services) as own:
        yield own


def _run(stack: DevStack, results: Path, *scenarios: str) -> ChaosResult:
    # Each scenario gets one window of a few seconds; with the drain and the checks a test
    # takes about a minute on a 2-core machine.
    short = ChaosOptions(
        scenarios=scenarios,
        duration_s=0.0,
        rate=5.0,
        fault_s=6.0,
        calm_s=3.0,
        kill_every_s=2.0,
        retry_grace_s=30.0,
        drain_s=60.0,
        quiet_s=25.0,
        seed=7,
    )
    result = run_chaos(short, stack=stack, results_file=results)
    assert result.accepted > 50, result.to_json()
    skipped = {note.split(" ")[0] for note in result.notes if " skipped: " in note}
    assert set(result.faults) == set(scenarios) - skipped, result.fault_log
    details = "\n".join(f"{v.kind} {v.subject}: {v.detail}" for v in result.violations[:40])
    assert result.violations == [], f"{result.violation_counts()}\n{details}"
    return result


def test_processes_die_under_load_and_nothing_is_lost(stack: DevStack, tmp_path: Path) -> None:
    _run(stack, tmp_path / "chaos.jsonl", "worker_kill", "ingress_restart", "redis_restart")


def test_garbage_and_misbehaving_webhooks_are_contained(stack: DevStack, tmp_path: Path) -> None:
    result = _run(stack, tmp_path / "chaos.jsonl", "garbage", "webhook_chaos")
    assert result.garbage_produced >= 30
    assert result.garbage_dead_lettered == result.garbage_produced


def test_gateway_errors_and_outage_end_resolved(stack: DevStack, tmp_path: Path) -> None:
    _run(stack, tmp_path / "chaos.jsonl", "gateway_errors", "gateway_outage")
