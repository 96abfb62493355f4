"""Child processes for the dev stack: start, probe for readiness, stop with no orphans."""

from __future__ import annotations

import contextlib
import ctypes
import functools
import os
import secrets
import signal
import socket
import subprocess
import time
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """Linux: the child gets SIGTERM if the supervisor dies, even by SIGKILL.

    The signal follows the *thread* that started the child: start children from the main
    thread, or they die when a helper thread that started them ends.
    """
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def port_free(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
        return True


# Listening ports are drawn below the kernel's ephemeral range: a port taken from inside it
# (bind to 0) can be handed to some process's outgoing connection in the seconds between the
# pick and the child's bind, and the child then fails to start (CI: "ingress exited with
# code 3", uvicorn's bind failure).
_LISTEN_PORTS = (20000, 32768)


@functools.cache
def _ephemeral_low() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return _LISTEN_PORTS[1]


def free_port(host: str = "127.0.0.1") -> int:
    """A free port outside the ephemeral range when one is found, else one the kernel picks."""
    low, high = _LISTEN_PORTS[0], min(_LISTEN_PORTS[1], _ephemeral_low())
    if high - low >= 1000:
        for _ in range(200):
            port = secrets.randbelow(high - low) + low
            if port_free(port, host):
                return port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def tcp_open(port: int, host: str = "127.0.0.1") -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as r:  # noqa: S310 - loopback URL we built
            return bool(200 <= r.status < 300)
    except OSError:
        return False


def code_commit() -> str:
    """The commit of the code under test, `+dirty` when the tree has local changes; for the
    figures bench and chaos record, so each can be traced to what it measured."""
    here = str(Path(__file__).resolve().parent)

    def git(*args: str) -> str:
        done = subprocess.run(
            ["git", "-C", here, *args], capture_output=True, text=True, timeout=10, check=True
        )
        return done.stdout.strip()

    try:
        head = git("rev-parse", "--short", "HEAD")
        dirty = git("status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return head + ("+dirty" if dirty else "")


class StartupError(RuntimeError):
    pass


@dataclass
class Child:
    name: str
    argv: Sequence[str]
    log_path: Path
    env: dict[str, str] = field(default_factory=dict)
    probe: Callable[[], bool] | None = None  # readiness check
    ready_timeout_s: float = 60.0
    proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            list(self.argv),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, **self.env},
            preexec_fn=_die_with_parent,
            start_new_session=True,  # Ctrl-C reaches the supervisor only; it stops us in order
        )
        log.close()

    def wait_ready(self) -> float:
        """Poll the probe until it passes; returns seconds taken. Fails fast if the child died."""
        started = time.monotonic()
        while time.monotonic() - started < self.ready_timeout_s:
            if self.proc is not None and self.proc.poll() is not None:
                raise StartupError(
                    f"{self.name} exited with code {self.proc.returncode}; see {self.log_path}"
                    f"{self.log_tail()}"
                )
            if self.probe is None or self.probe():
                return time.monotonic() - started
            time.sleep(0.1)
        raise StartupError(
            f"{self.name} not ready after {self.ready_timeout_s:.0f}s; see {self.log_path}"
            f"{self.log_tail()}"
        )

    def log_tail(self, lines: int = 15) -> str:
        """The last lines of the child's log, for an error that would otherwise only name it
        (CI keeps no files)."""
        try:
            tail = self.log_path.read_text(errors="replace").splitlines()[-lines:]
        except OSError:
            return ""
        return "".join(f"\n  | {line}" for line in tail)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout_s: float = 15.0, sig: int = signal.SIGTERM) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, sig)
        try:
            self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(5)
