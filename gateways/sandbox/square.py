"""Emulated Square API (placeholder until the emulator lands)."""

from __future__ import annotations

from starlette.routing import BaseRoute

from gateways.sandbox.config import SandboxConfig
from gateways.sandbox.faults import Faults
from gateways.sandbox.ledger import IdempotencyStore, Ledger
from gateways.sandbox.webhooks import WebhookSender

GATEWAY = "square"


class SquareSandbox:
    def __init__(
        self,
        *,
        ledger: Ledger,
        idempotency: IdempotencyStore,
        faults: Faults,
        webhooks: WebhookSender,
        config: SandboxConfig,
    ) -> None:
        self._ledger = ledger
        self._idempotency = idempotency
        self._faults = faults
        self._webhooks = webhooks
        self._config = config

    def routes(self) -> list[BaseRoute]:
        return []

    def control_routes(self) -> list[BaseRoute]:
        return []

    def reset(self) -> None:
        pass
