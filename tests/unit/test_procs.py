"""Child-process helpers: listening ports that outgoing connections cannot take, and startup
errors that carry the child's own last words."""

from __future__ import annotations

import socket
import sys
from pathlib import Path

import pytest

from payments.procs import Child, StartupError, _ephemeral_low, free_port, port_free


def test_free_ports_are_free_and_below_the_ephemeral_range() -> None:
    low = _ephemeral_low()
    ports = {free_port() for _ in range(50)}
    assert all(port < low for port in ports)
    assert all(port_free(port) for port in ports)
    assert len(ports) > 40  # drawn at random, not handed out in turn


def test_a_taken_port_is_not_free() -> None:
    with socket.socket() as held:
        held.bind(("127.0.0.1", free_port()))
        held.listen()
        assert not port_free(held.getsockname()[1])


def test_a_child_that_dies_at_startup_says_why(tmp_path: Path) -> None:
    code = "import sys; print('first'); print('bind: address already in use'); sys.exit(3)"
    child = Child("ingress", [sys.executable, "-c", code], tmp_path / "ingress.log")
    child.probe = lambda: False
    child.start()
    with pytest.raises(StartupError) as err:
        child.wait_ready()
    assert "exited with code 3" in str(err.value)
    assert "| bind: address already in use" in str(err.value)
