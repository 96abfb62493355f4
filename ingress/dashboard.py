"""`/dashboard`: live charts of throughput, success rate per gateway, latency and recent
failures, fed from the `payment_metrics` windows the worker projects into Redis.

The page and its script are static files (`ingress/static/`), served with a content security
policy that allows nothing from elsewhere; the script polls `/dashboard/data`.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from redis.exceptions import RedisError
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from domain.keys import Role
from ingress.auth import guard
from ingress.errors import ApiError
from streams.readmodel import metrics_index_key, metrics_window_key

_STATIC = Path(__file__).parent / "static"
_PAGE = (_STATIC / "dashboard.html").read_bytes()
_SCRIPT = (_STATIC / "dashboard.js").read_bytes()
_ICON = (_STATIC / "favicon.svg").read_bytes()
_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; style-src 'self' 'unsafe-inline'",
    "Cache-Control": "no-cache",
}
MAX_MINUTES = 48 * 60


async def dashboard_page(request: Request) -> Response:
    return Response(_PAGE, media_type="text/html; charset=utf-8", headers=_HEADERS)


async def dashboard_script(request: Request) -> Response:
    return Response(_SCRIPT, media_type="text/javascript; charset=utf-8", headers=_HEADERS)


async def dashboard_icon(request: Request) -> Response:
    return Response(_ICON, media_type="image/svg+xml", headers=_HEADERS)


def _int_param(request: Request, name: str, default: int, low: int, high: int) -> int:
    raw = request.query_params.get(name, str(default))
    if not raw.isdigit() or not low <= int(raw) <= high:
        raise ApiError(400, "invalid_request", f"{name} must be a whole number in {low}..{high}")
    return int(raw)


async def dashboard_data(request: Request) -> JSONResponse:
    """The windows of one size that started in the last `minutes`, oldest first (admin)."""
    await guard(request, Role.ADMIN)
    size_s = _int_param(request, "window", 60, 1, 86_400)
    minutes = _int_param(request, "minutes", 60, 1, MAX_MINUTES)
    now_ms = int(time.time() * 1000)
    since = now_ms - minutes * 60_000 - size_s * 1000
    redis = request.app.state.redis
    try:
        keys = await redis.zrangebyscore(metrics_index_key(size_s), since, "+inf")
        docs = await redis.mget([metrics_window_key(k.decode()) for k in keys]) if keys else []
    except RedisError:
        raise ApiError(503, "read_model_unavailable", "metrics are unavailable; retry") from None
    windows = [json.loads(doc) for doc in docs if doc is not None]
    return JSONResponse(
        {"window_s": size_s, "minutes": minutes, "now_ms": now_ms, "windows": windows},
        headers={"Cache-Control": "no-cache"},
    )
