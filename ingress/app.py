"""Build the Starlette ingress app from settings."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

import httpx
import redis.asyncio as aioredis
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from domain.keys import parse_keys
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
from ingress.logs import RequestIds
from ingress.metrics import metrics_page
from ingress.openapi import build_openapi
from ingress.payments import create_payment, get_payment
from ingress.ratelimit import TAKE
from ingress.webhooks.registry import build_verifiers
from ingress.webhooks.route import receive_webhook
from payments.settings import Settings, parse_rate_limit
from streams.readmodel import SET_IF_NEWER

log = logging.getLogger(__name__)


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
        app.state.api_keys = parse_keys(settings.api_keys)
        if not app.state.api_keys:
            log.warning("no API keys configured (PAYMENTS_API_KEYS): every API call gets 401")
        app.state.redis = aioredis.from_url(
            settings.redis_url, socket_timeout=2, socket_connect_timeout=2
        )
        app.state.set_if_newer = app.state.redis.register_script(SET_IF_NEWER)
        app.state.take_token = app.state.redis.register_script(TAKE)
        app.state.rate_limits = (
            parse_rate_limit(settings.rate_limit_ip, "rate_limit_ip"),
            parse_rate_limit(settings.rate_limit_key, "rate_limit_key"),
        )
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
            # One route for both methods, so that a 405 lists both in `Allow`.
            Route("/v1/payments", payments_collection, methods=["GET", "POST"]),
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
        middleware=[Middleware(RequestIds)],
        exception_handlers={
            ApiError: handle_api_error,
            HTTPException: handle_http_exception,
            Exception: handle_unexpected,
        },
        lifespan=lifespan,
    )


async def payments_collection(request: Request) -> Response:
    if request.method == "POST":
        return await create_payment(request)
    return await list_payments(request)


def app_from_environment() -> Starlette:
    """Entry point of each process when uvicorn runs several (`payments ingress --workers N`):
    every process builds its settings once, here, from the same environment."""
    from ingress.logs import configure_json_logging
    from payments.settings import load_settings

    settings = load_settings()
    configure_json_logging(settings.log_level)
    return create_app(settings)
