"""`payments bench` against a running stack: a short run prints every field the contract
names, and loses and double-charges nothing."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from payments.devstack import DevStack

pytestmark = pytest.mark.stack

FIELDS = {
    "payments", "seconds", "payments_per_s", "p50_ms", "p95_ms", "p99_ms",
    "gateway_latency_ms", "max_in_flight", "worker_rss_mb", "raw_kafka_msgs_per_s", "ratio",
    "lost", "duplicate_charges",
}  # fmt: skip


def _bench(stack: DevStack, tmp_path: Path, *args: str) -> dict:
    endpoints = tmp_path / "endpoints.json"
    endpoints.write_text(json.dumps(stack.endpoints))
    done = subprocess.run(
        [sys.executable, "-m", "payments.cli", "bench", *args, "--target", str(endpoints)],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    result: dict = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def test_a_mixed_closed_loop_run_settles_everything(stack: DevStack, tmp_path: Path) -> None:
    result = _bench(
        stack, tmp_path, "--count", "30", "--raw-count", "500", "--concurrency", "10",
        "--mix", "stripe=1,square=1,paypal=1",
    )  # fmt: skip
    assert result.keys() >= FIELDS
    assert (result["payments"], result["lost"], result["duplicate_charges"]) == (30, 0, 0)
    assert result["statuses"] == {"succeeded": 30}
    assert result["raw_kafka_msgs_per_s"] > 0 and result["p99_ms"] >= result["p50_ms"] > 0


def test_an_open_loop_http_run_and_webhooks(stack: DevStack, tmp_path: Path) -> None:
    result = _bench(
        stack, tmp_path, "--via", "http", "--rate", "20", "--duration", "1", "--raw-count", "200"
    )
    assert (result["mode"], result["lost"], result["duplicate_charges"]) == ("open", 0, 0)
    assert result["settled"] == result["accepted"] >= 15
    hooks = _bench(stack, tmp_path, "webhooks", "--count", "50", "--concurrency", "5")
    assert hooks["accepted"] == 50 and hooks["status_codes"] == {"200": 50}
