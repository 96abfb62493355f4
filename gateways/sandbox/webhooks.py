"""The sandbox's webhook sender: signed deliveries to the ingress, as a gateway makes them.

Each gateway emulator registers a target (URL + signer) and calls `emit(gateway, event)` after
every state change. Deliveries run in the background and are retried with backoff on any
non-2xx answer or connection error, as real gateways retry. A delivery policy can duplicate
every delivery, hold events and send them shuffled, or delay them, for tests of dedup and
ordering.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import httpx

__all__ = ["Delivery", "DeliveryPolicy", "Signer", "WebhookSender"]

log = logging.getLogger(__name__)

# body -> headers to send with it (signature, timestamps, ...). Called for every attempt.
Signer = Callable[[bytes], Mapping[str, str]]


@dataclass(frozen=True, slots=True)
class DeliveryPolicy:
    enabled: bool = True
    duplicates: int = 1  # deliver every event this many times
    reorder_window_ms: int = 0  # hold events this long, then deliver them shuffled
    delay_ms: int = 0  # wait this long before the first attempt
    max_attempts: int = 12
    retry_base_ms: int = 200  # backoff doubles from here, capped at 10 s

    def updated(self, changes: dict[str, Any]) -> DeliveryPolicy:
        known = {f.name for f in dataclasses.fields(self)}
        unknown = set(changes) - known
        if unknown:
            raise ValueError(f"unknown webhook policy settings: {sorted(unknown)}")
        new = dataclasses.replace(self, **changes)
        if new.duplicates < 1 or new.max_attempts < 1:
            raise ValueError("duplicates and max_attempts must be >= 1")
        return new

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(slots=True)
class Delivery:
    gateway: str
    event_id: str
    event_type: str
    url: str
    attempts: int = 0
    status: int | None = None  # last HTTP status; None while pending or on connection error
    delivered: bool = False
    created: float = dataclasses.field(default_factory=time.time)

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True, slots=True)
class _Target:
    url: str
    sign: Signer


class WebhookSender:
    def __init__(self, policy: DeliveryPolicy | None = None, *, seed: int | None = None) -> None:
        self.policy = policy or DeliveryPolicy()
        self._targets: dict[str, _Target] = {}
        self._held: list[tuple[str, bytes, str, str]] = []
        self._flush_task: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._client: httpx.AsyncClient | None = None
        self._random = random.Random(seed)
        self.deliveries: list[Delivery] = []

    def register(self, gateway: str, *, url: str | None, sign: Signer) -> None:
        """Where `gateway`'s webhooks go, and how they are signed; no URL disables them."""
        if url:
            self._targets[gateway] = _Target(url, sign)
        else:
            self._targets.pop(gateway, None)

    def emit(
        self, gateway: str, event: Mapping[str, Any], *, event_id: str, event_type: str
    ) -> None:
        """Schedule delivery of `event`; returns at once. Safe to call from sync handlers."""
        if not self.policy.enabled or gateway not in self._targets:
            return
        body = json.dumps(event, separators=(",", ":")).encode()
        self._held.append((gateway, body, event_id, event_type))
        window = self.policy.reorder_window_ms / 1000
        if self._flush_task is None or self._flush_task.done():
            self._flush_task = asyncio.get_running_loop().create_task(self._flush_after(window))

    async def _flush_after(self, window_s: float) -> None:
        if window_s:
            await asyncio.sleep(window_s)
        self.flush()

    def flush(self) -> None:
        """Start delivering everything held (shuffled if the policy reorders)."""
        held, self._held = self._held, []
        if self.policy.reorder_window_ms:
            self._random.shuffle(held)
        for gateway, body, event_id, event_type in held:
            target = self._targets.get(gateway)
            if target is None:
                continue
            for _ in range(self.policy.duplicates):
                delivery = Delivery(gateway, event_id, event_type, target.url)
                self.deliveries.append(delivery)
                task = asyncio.get_running_loop().create_task(self._deliver(delivery, target, body))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)

    async def _deliver(self, delivery: Delivery, target: _Target, body: bytes) -> None:
        policy = self.policy
        if policy.delay_ms:
            await asyncio.sleep(policy.delay_ms / 1000)
        client = self._http()
        while delivery.attempts < policy.max_attempts:
            delivery.attempts += 1
            headers = {"Content-Type": "application/json", **target.sign(body)}
            try:
                response = await client.post(target.url, content=body, headers=headers)
                delivery.status = response.status_code
                if 200 <= response.status_code < 300:
                    delivery.delivered = True
                    return
            except httpx.HTTPError as exc:
                delivery.status = None
                log.debug("webhook to %s failed: %s", target.url, exc)
            backoff = min(10.0, policy.retry_base_ms / 1000 * 2 ** (delivery.attempts - 1))
            await asyncio.sleep(backoff)
        log.warning(
            "webhook %s to %s given up after %d attempts",
            delivery.event_id,
            target.url,
            delivery.attempts,
        )

    def _http(self) -> httpx.AsyncClient:
        if self._client is None:
            self._client = httpx.AsyncClient(timeout=10)
        return self._client

    async def idle(self, timeout_s: float = 10) -> bool:
        """Wait until nothing is held or in flight; for tests and graceful shutdown."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if not self._held and not self._tasks:
                return True
            await asyncio.sleep(0.02)
        return False

    def reset(self) -> None:
        self._held.clear()
        self.deliveries.clear()

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._client is not None:
            await self._client.aclose()
            self._client = None
