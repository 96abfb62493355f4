"""Per-gateway fault injection for the sandbox: latency, 5xx errors, timeouts, outages.

Emulators call `await faults.before(gateway)` before doing any work and
`await faults.after(gateway)` after committing it, and render an `InjectedFault` in their own
gateway's error envelope. A timeout can strike before the work (nothing happened) or after it
(the work happened and the answer was lost): the second is the ambiguous case that forces a
payment into `unknown`.
"""

from __future__ import annotations

import asyncio
import dataclasses
import random
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

__all__ = ["FaultConfig", "Faults", "InjectedFault", "TimeoutMode"]


class TimeoutMode(StrEnum):
    BEFORE = "before"  # hang, then fail, without doing the work
    AFTER = "after"  # do the work, then hang and fail: the client cannot know


@dataclass(frozen=True, slots=True)
class FaultConfig:
    latency_ms: int = 0  # added to every request
    latency_jitter_ms: int = 0  # plus uniform random 0..jitter
    error_rate: float = 0.0  # share of requests answered 500 before doing any work
    timeout_rate: float = 0.0  # share of requests that hang for `timeout_s`, then 504
    timeout_s: float = 35.0  # longer than the adapters' client timeout by default
    timeout_mode: TimeoutMode = TimeoutMode.BEFORE
    unavailable: bool = False  # every request answered 503 at once

    def __post_init__(self) -> None:
        if self.latency_ms < 0 or self.latency_jitter_ms < 0 or self.timeout_s < 0:
            raise ValueError("latencies and timeouts must be >= 0")
        for name in ("error_rate", "timeout_rate"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be within 0..1, got {value}")

    def updated(self, changes: dict[str, Any]) -> FaultConfig:
        known = {f.name for f in dataclasses.fields(self)}
        unknown = set(changes) - known
        if unknown:
            raise ValueError(f"unknown fault settings: {sorted(unknown)}")
        if "timeout_mode" in changes:
            changes = changes | {"timeout_mode": TimeoutMode(changes["timeout_mode"])}
        return dataclasses.replace(self, **changes)

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


class InjectedFault(Exception):
    """Render as an HTTP error of `status` in the gateway's own error envelope."""

    def __init__(self, status: int, kind: str) -> None:
        super().__init__(f"injected {kind} ({status})")
        self.status = status
        self.kind = kind  # "error" | "unavailable" | "timeout"


class Faults:
    def __init__(self, default: FaultConfig | None = None, *, seed: int | None = None) -> None:
        self._default = default or FaultConfig()
        self._by_gateway: dict[str, FaultConfig] = {}
        self._random = random.Random(seed)

    def config(self, gateway: str) -> FaultConfig:
        return self._by_gateway.get(gateway, self._default)

    def set(self, gateway: str, config: FaultConfig) -> None:
        self._by_gateway[gateway] = config

    def reset(self) -> None:
        self._by_gateway.clear()

    def snapshot(self, gateways: list[str]) -> dict[str, dict[str, Any]]:
        return {g: self.config(g).to_json() for g in gateways}

    async def before(self, gateway: str) -> None:
        cfg = self.config(gateway)
        if cfg.unavailable:
            raise InjectedFault(503, "unavailable")
        delay = cfg.latency_ms + (
            self._random.randint(0, cfg.latency_jitter_ms) if cfg.latency_jitter_ms else 0
        )
        if delay:
            await asyncio.sleep(delay / 1000)
        if cfg.error_rate and self._random.random() < cfg.error_rate:
            raise InjectedFault(500, "error")
        if cfg.timeout_mode is TimeoutMode.BEFORE and self._strikes(cfg):
            await asyncio.sleep(cfg.timeout_s)
            raise InjectedFault(504, "timeout")

    async def after(self, gateway: str) -> None:
        cfg = self.config(gateway)
        if cfg.timeout_mode is TimeoutMode.AFTER and self._strikes(cfg):
            await asyncio.sleep(cfg.timeout_s)
            raise InjectedFault(504, "timeout")

    def _strikes(self, cfg: FaultConfig) -> bool:
        return bool(cfg.timeout_rate) and self._random.random() < cfg.timeout_rate
