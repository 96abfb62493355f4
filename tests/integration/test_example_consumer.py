"""The example downstream consumer (examples/payment_status_consumer.py) against the real stack."""

from __future__ import annotations

import json
import queue
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import IO, Any

import pytest

from payments.devstack import DevStack
from tests.integration.helpers import api_client, payment_body, post_payment, wait_settled

pytestmark = pytest.mark.stack

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "examples" / "payment_status_consumer.py"


def _pump(stream: IO[str], lines: queue.Queue[str | None]) -> None:
    for line in stream:
        lines.put(line)
    lines.put(None)


def _drain(lines: queue.Queue[str | None]) -> list[str]:
    """What is left in `lines` once its pump has finished (up to the end marker)."""
    out: list[str] = []
    while not lines.empty() and (line := lines.get_nowait()) is not None:
        out.append(line)
    return out


def test_example_consumer_prints_each_transition_once_in_seq_order(stack: DevStack) -> None:
    with api_client(stack, timeout=15) as client:
        ids = []
        for _ in range(2):
            r = post_payment(client, payment_body("pm_card_visa"))
            assert r.status_code == 202, r.text
            ids.append(r.json()["payment_id"])
        for pid in ids:
            assert wait_settled(client, pid)["status"] == "succeeded"

    proc = subprocess.Popen(
        [
            sys.executable,
            str(SCRIPT),
            "--bootstrap",
            stack.endpoints["kafka_bootstrap"],
            "--from-beginning",
            "--timeout-s",
            "20",
            "--group",
            f"example-test-{uuid.uuid4().hex}",
        ],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None and proc.stderr is not None
    lines: queue.Queue[str | None] = queue.Queue()
    errors: queue.Queue[str | None] = queue.Queue()
    pumps = [
        threading.Thread(target=_pump, args=(proc.stdout, lines), daemon=True),
        threading.Thread(target=_pump, args=(proc.stderr, errors), daemon=True),
    ]
    for t in pumps:
        t.start()

    # Read its output as it comes; once both payments are fully seen, stop it the way an
    # operator would (SIGTERM) instead of waiting out the whole --timeout-s.
    seen: list[dict[str, Any]] = []
    deadline = time.monotonic() + 25
    try:
        while time.monotonic() < deadline:
            try:
                line = lines.get(timeout=0.2)
            except queue.Empty:
                continue
            if line is None:  # the script ended by itself
                break
            seen.append(json.loads(line))
            if all(any(r["payment_id"] == p and r["seq"] == 2 for r in seen) for p in ids):
                proc.send_signal(signal.SIGTERM)
                break
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    for t in pumps:
        t.join(timeout=5)
    # Whatever it printed after the signal counts too (for the no-duplicates check).
    seen += [json.loads(line) for line in _drain(lines)]
    stderr = "".join(_drain(errors))
    assert proc.returncode == 0, stderr

    # Every line is one applied record with the documented fields.
    fields = {"payment_id", "seq", "status", "previous_status", "amount", "currency", "order_id"}
    assert all(set(r) == fields for r in seen), seen
    # Duplicates (seq not newer than the last applied one) are never printed.
    pairs = [(r["payment_id"], r["seq"]) for r in seen]
    assert len(pairs) == len(set(pairs)), pairs

    for pid in ids:
        mine = [
            (r["seq"], r["status"], r["previous_status"]) for r in seen if r["payment_id"] == pid
        ]
        assert mine[:2] == [(1, "pending", None), (2, "succeeded", "pending")], (pid, stderr)
        row = next(r for r in seen if r["payment_id"] == pid)
        assert (row["amount"], row["currency"]) == (1000, "USD")
        assert row["order_id"].startswith("o-")
