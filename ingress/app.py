"""Build the Starlette ingress app from settings."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import httpx
import redis.asyncio as aioredis
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from ingress.actions import (
    cancel_payment,
    capture_payment,
    create_refund,
    get_refund,
    review_payment,
)
from ingress.dashboard import dashboard_data, dashboard_icon, dashboard_page, dashboard_script
from ingress.errors import ApiError, handle_api_error, handle_http_exception, handle_unexpected
from ingress.kafka import Producer
from ingress.listing import list_payments, list_refunds
from ingress.metrics import metrics_page
from ingress.openapi import build_openapi
from ingress.payments import create_payment, get_payment
from ingress.webhooks.registry import build_verifiers
from ingress.webhooks.route import receive_webhook
from payments.settings import Settings
from streams.readmodel import SET_IF_NEWER


async def healthz(request: Request) -> JSONResponse:
    return JSONResponse({"ok": True})


async def readyz(request: Request) -> JSONResponse:
    state = request.app.state

    async def redis_ok() -> bool:
        try:
            return bool(await asyncio.wait_for(state.redis.ping(), 2.0))
        except Exception:
            return False

    broker, redis = await asyncio.gather(state.producer.ready(), redis_ok())
    ok = broker and redis
    return JSONResponse(
        {"ready": ok, "checks": {"broker": broker, "redis": redis}}, status_code=200 if ok else 503
    )


def create_app(settings: Settings) -> Starlette:
    openapi = build_openapi()

    async def openapi_json(request: Request) -> JSONResponse:
        return JSONResponse(openapi)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        app.state.settings = settings
        app.state.redis = aioredis.from_url(
            settings.redis_url, socket_timeout=2, socket_connect_timeout=2
        )
        app.state.set_if_newer = app.state.redis.register_script(SET_IF_NEWER)
        app.state.producer = Producer(settings)
        http = httpx.AsyncClient(timeout=5)
        app.state.verifiers = build_verifiers(settings, http)
        await app.state.producer.start()
        try:
            yield
        finally:
            await app.state.producer.stop()
            await app.state.redis.aclose()
            await http.aclose()

    return Starlette(
        routes=[
            Route("/v1/payments", create_payment, methods=["POST"]),
            Route("/v1/payments", list_payments, methods=["GET"]),
            Route("/v1/payments/{payment_id}", get_payment, methods=["GET"]),
            Route("/v1/payments/{payment_id}/capture", capture_payment, methods=["POST"]),
            Route("/v1/payments/{payment_id}/cancel", cancel_payment, methods=["POST"]),
            Route("/v1/payments/{payment_id}/refunds", create_refund, methods=["POST"]),
            Route("/v1/payments/{payment_id}/review", review_payment, methods=["POST"]),
            Route("/v1/refunds", list_refunds, methods=["GET"]),
            Route("/v1/refunds/{refund_id}", get_refund, methods=["GET"]),
            Route("/healthz", healthz, methods=["GET"]),
            Route("/readyz", readyz, methods=["GET"]),
            Route("/v1/webhooks/{gateway}", receive_webhook, methods=["POST"]),
            Route("/openapi.json", openapi_json, methods=["GET"]),
            Route("/metrics", metrics_page, methods=["GET"]),
            Route("/dashboard", dashboard_page, methods=["GET"]),
            Route("/dashboard/dashboard.js", dashboard_script, methods=["GET"]),
            Route("/dashboard/data", dashboard_data, methods=["GET"]),
            Route("/dashboard/favicon.svg", dashboard_icon, methods=["GET"]),
        ],
        exception_handlers={
            ApiError: handle_api_error,
            HTTPException: handle_http_exception,
            Exception: handle_unexpected,
        },
        lifespan=lifespan,
    )


def app_from_environment() -> Starlette:
    """Entry point of each process when uvicorn runs several (`payments ingress --workers N`):
    every process builds its settings once, here, from the same environment."""
    from payments.settings import load_settings

    return create_app(load_settings())
