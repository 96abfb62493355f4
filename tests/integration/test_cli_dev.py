"""`payments dev`, the README's run command, as a user runs it: a real subprocess."""

from __future__ import annotations

import contextlib
import json
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil
import pytest

from payments.procs import free_port
from tests.conftest import BROKER
from tests.integration.helpers import payment_body

pytestmark = pytest.mark.stack


def dev_command(state: Path, ingress_port: int, *extra: str) -> list[str]:
    return [
        sys.executable, "-m", "payments.cli", "dev", "--state-dir", str(state),
        "--kafka-port", str(free_port()), "--redis-port", str(free_port()),
        "--sandbox-port", str(free_port()), "--worker-web-port", str(free_port()),
        "--ingress-port", str(ingress_port), "--broker", BROKER.value, *extra,
    ]  # fmt: skip


@contextlib.contextmanager
def taken_port() -> Iterator[int]:
    """A loopback port some other program is listening on."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        yield taken.getsockname()[1]


def test_dev_serves_picks_a_free_port_and_stops_with_no_orphans(tmp_path: Path) -> None:
    with taken_port() as busy:
        proc = subprocess.Popen(
            dev_command(tmp_path, busy), stdout=subprocess.PIPE, stderr=subprocess.STDOUT
        )
        try:
            endpoints_file = tmp_path / "endpoints.json"
            deadline = time.monotonic() + 90
            while not endpoints_file.exists():
                assert proc.poll() is None, proc.stdout.read().decode() if proc.stdout else ""
                assert time.monotonic() < deadline, "payments dev not serving after 90 s"
                time.sleep(0.2)
            endpoints = json.loads(endpoints_file.read_text())
            assert set(endpoints) >= {"ingress_url", "kafka_bootstrap", "redis_url", "sandbox_url"}
            assert not endpoints["ingress_url"].endswith(f":{busy}")
            ingress = endpoints["ingress_url"]
            assert httpx.get(f"{ingress}/readyz").status_code == 200
            assert endpoints_file.stat().st_mode & 0o777 == 0o600  # it holds the API keys
            merchant = {"Authorization": f"Bearer {endpoints['merchant_api_key']}"}
            admin = {"Authorization": f"Bearer {endpoints['admin_api_key']}"}
            body = payment_body("pm_card_visa")
            refused = httpx.post(f"{ingress}/v1/payments", json=body)
            assert refused.status_code == 401 and refused.headers["www-authenticate"] == "Bearer"
            created = httpx.post(
                f"{ingress}/v1/payments", json=body, headers={**merchant, "Idempotency-Key": "k1"}
            )
            assert created.status_code == 202, created.text
            pid = created.json()["payment_id"]
            for who in (merchant, admin):
                assert httpx.get(f"{ingress}/v1/payments/{pid}", headers=who).status_code == 200
            assert httpx.get(f"{ingress}/v1/payments", headers=merchant).status_code == 403
            assert httpx.get(f"{ingress}/v1/payments", headers=admin).status_code == 200
            children = psutil.Process(proc.pid).children(recursive=True)
            names = " ".join(" ".join(c.cmdline()) for c in children)
            broker = {"kafka": "kafka.Kafka", "tansu": "tansu"}.get(BROKER.value, "")
            for part in (broker, "redis-server", "sandbox", "worker", "ingress"):
                assert part in names
        finally:
            proc.send_signal(signal.SIGTERM)
            out, _ = proc.communicate(timeout=60)
    text = out.decode()
    assert proc.returncode == 0, text
    assert f"ingress port {busy} is taken; using" in text
    assert text.count(endpoints["admin_api_key"]) == 1  # printed once
    assert text.count(endpoints["merchant_api_key"]) == 1
    _, alive = psutil.wait_procs(children, timeout=10)
    assert not alive, f"orphans left: {alive}"


def test_dev_strict_ports_fails_clearly_and_starts_nothing(tmp_path: Path) -> None:
    with taken_port() as busy:
        result = subprocess.run(
            dev_command(tmp_path, busy, "--strict-ports"),
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert result.returncode == 1
    assert f"ingress port {busy} is taken" in result.stderr
    assert not (tmp_path / "endpoints.json").exists()
