"""The sandbox ASGI app: emulated gateway APIs plus the `/_sandbox` control routes.

Run it with `uvicorn --factory gateways.sandbox.app:create_app`, then point a Stripe client's
`api` base address at `http://host:port/stripe`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Mount, Route

from gateways.sandbox.ledger import IdempotencyStore, Ledger
from gateways.sandbox.stripe import StripeSandbox

__all__ = ["Sandbox", "SandboxConfig", "create_app"]


@dataclass(frozen=True, slots=True)
class SandboxConfig:
    """How the sandbox behaves; the defaults are a fast gateway that never misbehaves."""

    latency_ms: int = 0  # added to every emulated gateway API request

    def __post_init__(self) -> None:
        if self.latency_ms < 0:
            raise ValueError(f"latency_ms must be >= 0, got {self.latency_ms}")


@dataclass(slots=True)
class Sandbox:
    """Everything one app instance holds, shared by all gateways (on `app.state.sandbox`)."""

    config: SandboxConfig
    ledger: Ledger = field(default_factory=Ledger)
    idempotency: IdempotencyStore = field(default_factory=IdempotencyStore)
    stripe: StripeSandbox = field(init=False)

    def __post_init__(self) -> None:
        self.stripe = StripeSandbox(
            ledger=self.ledger, idempotency=self.idempotency, latency_ms=self.config.latency_ms
        )

    def reset(self) -> None:
        self.ledger.clear()
        self.idempotency.clear()
        self.stripe.reset()


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

    control = [
        Route("/healthz", healthz, methods=["GET"]),
        Route("/ledger", ledger, methods=["GET"]),
        Route("/ledger/summary", ledger_summary, methods=["GET"]),
        Route("/reset", reset, methods=["POST"]),
        Mount("/stripe", routes=sandbox.stripe.control_routes()),
    ]
    app = Starlette(
        routes=[
            Mount("/stripe", routes=sandbox.stripe.routes()),
            Mount("/_sandbox", routes=control),
        ]
    )
    app.state.sandbox = sandbox
    return app
