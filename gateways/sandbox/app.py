"""The sandbox ASGI app: emulated gateway APIs plus the `/_sandbox` control routes.

Gateways are mounted at `/stripe`, `/paypal` and `/square`; point each SDK's base URL there.
Control routes (`/_sandbox/...`): health, the ledger, faults, webhook policy and deliveries,
reset, and per-gateway levers such as settling a `processing` payment.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Mount, Route

from gateways.sandbox.config import SandboxConfig
from gateways.sandbox.faults import Faults
from gateways.sandbox.ledger import IdempotencyStore, Ledger
from gateways.sandbox.paypal import PayPalSandbox
from gateways.sandbox.square import SquareSandbox
from gateways.sandbox.stripe import StripeSandbox
from gateways.sandbox.webhooks import WebhookSender

__all__ = ["GATEWAYS", "Sandbox", "SandboxConfig", "create_app"]

GATEWAYS = ["stripe", "paypal", "square"]


@dataclass(slots=True)
class Sandbox:
    """Everything one app instance holds, shared by all gateways (on `app.state.sandbox`)."""

    config: SandboxConfig
    ledger: Ledger = field(default_factory=Ledger)
    idempotency: IdempotencyStore = field(default_factory=IdempotencyStore)
    faults: Faults = field(init=False)
    webhooks: WebhookSender = field(init=False)
    stripe: StripeSandbox = field(init=False)
    paypal: PayPalSandbox = field(init=False)
    square: SquareSandbox = field(init=False)

    def __post_init__(self) -> None:
        from gateways.sandbox.faults import FaultConfig

        self.faults = Faults(FaultConfig(latency_ms=self.config.latency_ms), seed=self.config.seed)
        self.webhooks = WebhookSender(seed=self.config.seed)
        shared = {
            "ledger": self.ledger,
            "idempotency": self.idempotency,
            "faults": self.faults,
            "webhooks": self.webhooks,
            "config": self.config,
        }
        self.stripe = StripeSandbox(**shared)  # type: ignore[arg-type]
        self.paypal = PayPalSandbox(**shared)  # type: ignore[arg-type]
        self.square = SquareSandbox(**shared)  # type: ignore[arg-type]

    def reset(self) -> None:
        self.ledger.clear()
        self.idempotency.clear()
        self.faults.reset()
        self.webhooks.reset()
        self.stripe.reset()
        self.paypal.reset()
        self.square.reset()


async def _json_object(request: Request) -> dict[str, object]:
    try:
        body = await request.json()
    except ValueError:
        body = None
    if not isinstance(body, dict):
        raise ValueError("body must be a JSON object")
    return body


def create_app(config: SandboxConfig | None = None) -> Starlette:
    sandbox = Sandbox(config or SandboxConfig())

    async def healthz(request: Request) -> JSONResponse:
        return JSONResponse({"ok": True})

    async def ledger(request: Request) -> JSONResponse:
        entries = sandbox.ledger.entries(
            payment_id=request.query_params.get("payment_id"),
            gateway=request.query_params.get("gateway"),
        )
        return JSONResponse({"entries": [e.to_json() for e in entries]})

    async def ledger_summary(request: Request) -> JSONResponse:
        return JSONResponse(sandbox.ledger.summary())

    async def reset(request: Request) -> JSONResponse:
        sandbox.reset()
        return JSONResponse({"ok": True})

    async def get_faults(request: Request) -> JSONResponse:
        return JSONResponse(sandbox.faults.snapshot(GATEWAYS))

    async def set_faults(request: Request) -> JSONResponse:
        gateway = request.path_params["gateway"]
        if gateway not in GATEWAYS:
            return JSONResponse({"error": f"unknown gateway {gateway!r}"}, status_code=404)
        try:
            changes = await _json_object(request)
            sandbox.faults.set(gateway, sandbox.faults.config(gateway).updated(changes))
        except (TypeError, ValueError) as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)
        return JSONResponse(sandbox.faults.config(gateway).to_json())

    async def clear_faults(request: Request) -> JSONResponse:
        sandbox.faults.reset()
        return JSONResponse(sandbox.faults.snapshot(GATEWAYS))

    async def webhook_policy(request: Request) -> JSONResponse:
        if request.method == "POST":
            try:
                sandbox.webhooks.policy = sandbox.webhooks.policy.updated(
                    await _json_object(request)
                )
            except (TypeError, ValueError) as exc:
                return JSONResponse({"error": str(exc)}, status_code=400)
        return JSONResponse(sandbox.webhooks.policy.to_json())

    async def webhook_deliveries(request: Request) -> JSONResponse:
        return JSONResponse({"deliveries": [d.to_json() for d in sandbox.webhooks.deliveries]})

    async def webhook_flush(request: Request) -> JSONResponse:
        sandbox.webhooks.flush()
        return JSONResponse({"ok": True})

    control = [
        Route("/healthz", healthz, methods=["GET"]),
        Route("/ledger", ledger, methods=["GET"]),
        Route("/ledger/summary", ledger_summary, methods=["GET"]),
        Route("/reset", reset, methods=["POST"]),
        Route("/faults", get_faults, methods=["GET"]),
        Route("/faults", clear_faults, methods=["DELETE"]),
        Route("/faults/{gateway}", set_faults, methods=["POST"]),
        Route("/webhooks/policy", webhook_policy, methods=["GET", "POST"]),
        Route("/webhooks/deliveries", webhook_deliveries, methods=["GET"]),
        Route("/webhooks/flush", webhook_flush, methods=["POST"]),
        Mount("/stripe", routes=sandbox.stripe.control_routes()),
        Mount("/paypal", routes=sandbox.paypal.control_routes()),
        Mount("/square", routes=sandbox.square.control_routes()),
    ]

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        try:
            yield
        finally:
            await sandbox.webhooks.close()

    app = Starlette(
        routes=[
            Mount("/stripe", routes=sandbox.stripe.routes()),
            Mount("/paypal", routes=sandbox.paypal.routes()),
            Mount("/square", routes=sandbox.square.routes()),
            Mount("/_sandbox", routes=control),
        ],
        lifespan=lifespan,
    )
    app.state.sandbox = sandbox
    return app
