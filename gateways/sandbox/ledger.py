"""What the sandbox's gateways did with money, and the idempotency keys they have seen.

Both live in memory and are only touched from the server's one event loop. Mutations never
await halfway, so no lock is needed for consistency; the per-key locks exist only so that two
requests carrying the same idempotency key cannot both execute.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass
from enum import StrEnum
from typing import Any

__all__ = ["IdempotencyStore", "Ledger", "LedgerEntry", "LedgerKind", "StoredResponse"]

IDEMPOTENCY_TTL_S = 24 * 60 * 60  # Stripe keeps keys for 24 hours


class LedgerKind(StrEnum):
    AUTHORIZATION = "authorization"
    CAPTURE = "capture"  # also a one-step charge (automatic capture)
    REFUND = "refund"
    VOID = "void"  # an authorization released without being captured


@dataclass(frozen=True, slots=True)
class LedgerEntry:
    gateway: str
    kind: LedgerKind
    object_id: str
    payment_intent: str
    amount: int  # minor units: money is never a float here
    currency: str
    payment_id: str | None
    created: int

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "kind": self.kind.value}


class Ledger:
    def __init__(self) -> None:
        self._entries: list[LedgerEntry] = []

    def record(
        self,
        *,
        gateway: str,
        kind: LedgerKind,
        object_id: str,
        payment_intent: str,
        amount: int,
        currency: str,
        payment_id: str | None,
    ) -> LedgerEntry:
        if isinstance(amount, bool) or not isinstance(amount, int) or amount < 0:
            raise ValueError(f"ledger amounts are non-negative integers, got {amount!r}")
        entry = LedgerEntry(
            gateway=gateway,
            kind=kind,
            object_id=object_id,
            payment_intent=payment_intent,
            amount=amount,
            currency=currency,
            payment_id=payment_id,
            created=int(time.time()),
        )
        self._entries.append(entry)
        return entry

    def entries(
        self, *, payment_id: str | None = None, gateway: str | None = None
    ) -> list[LedgerEntry]:
        return [
            e
            for e in self._entries
            if (payment_id is None or e.payment_id == payment_id)
            and (gateway is None or e.gateway == gateway)
        ]

    def summary(self) -> dict[str, dict[str, int]]:
        """Money captured and refunded per payment_id: how tests prove "charged exactly once".

        Entries without a payment_id cannot be attributed to a payment, so they are left out.
        """
        out: dict[str, dict[str, int]] = {}
        for e in self._entries:
            if e.payment_id is None:
                continue
            row = out.setdefault(
                e.payment_id, {"captured": 0, "refunded": 0, "captures": 0, "refunds": 0}
            )
            if e.kind is LedgerKind.CAPTURE:
                row["captured"] += e.amount
                row["captures"] += 1
            elif e.kind is LedgerKind.REFUND:
                row["refunded"] += e.amount
                row["refunds"] += 1
        return out

    def clear(self) -> None:
        self._entries.clear()


@dataclass(frozen=True, slots=True)
class StoredResponse:
    fingerprint: str  # what the request was: a reused key must come with the same one
    status: int
    body: bytes
    stored_at: float


class IdempotencyStore:
    """Responses by idempotency key, kept for `ttl_s` seconds.

    Keys are opaque strings; callers scope them (gateway, account) so that gateways with
    different key rules can share one store.
    """

    def __init__(
        self, *, ttl_s: float = IDEMPOTENCY_TTL_S, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._ttl_s = ttl_s
        self._clock = clock
        self._responses: dict[str, StoredResponse] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._lock_users: dict[str, int] = {}

    @asynccontextmanager
    async def lock(self, key: str) -> AsyncIterator[None]:
        """Hold `key` exclusively: a duplicate waits, then finds the first one's response."""
        lock = self._locks.setdefault(key, asyncio.Lock())
        self._lock_users[key] = self._lock_users.get(key, 0) + 1
        try:
            async with lock:
                yield
        finally:
            # Drop the lock with its last user so the table does not grow with every key.
            self._lock_users[key] -= 1
            if self._lock_users[key] == 0:
                del self._lock_users[key]
                del self._locks[key]

    def get(self, key: str) -> StoredResponse | None:
        self._expire()
        return self._responses.get(key)

    def put(self, key: str, *, fingerprint: str, status: int, body: bytes) -> StoredResponse:
        stored = StoredResponse(
            fingerprint=fingerprint, status=status, body=body, stored_at=self._clock()
        )
        # Re-inserted at the end so the dict stays ordered by stored_at (see _expire).
        self._responses.pop(key, None)
        self._responses[key] = stored
        return stored

    def clear(self) -> None:
        # Locks stay: a request may be holding one right now.
        self._responses.clear()

    def __len__(self) -> int:
        self._expire()
        return len(self._responses)

    def _expire(self) -> None:
        # Dicts keep insertion order and stored_at only grows, so expired keys are the oldest.
        cutoff = self._clock() - self._ttl_s
        for key in list(self._responses):
            if self._responses[key].stored_at > cutoff:
                break
            del self._responses[key]
