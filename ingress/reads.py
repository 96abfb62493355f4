"""Reading documents from the Redis read model (the only thing the ingress reads)."""

from __future__ import annotations

import json
from typing import Any

from redis.exceptions import RedisError
from starlette.requests import Request

from ingress.errors import ApiError


async def read_document(request: Request, redis_key: str, kind: str, object_id: str) -> Any:
    """The JSON document at `redis_key`; 404 `{kind}_not_found`, or 503 if Redis is down."""
    try:
        doc = await request.app.state.redis.hget(redis_key, "doc")
    except RedisError:
        raise ApiError(
            503, "read_model_unavailable", f"{kind} status is unavailable; retry"
        ) from None
    if doc is None:
        raise ApiError(404, f"{kind}_not_found", f"no {kind} {object_id!r}")
    return json.loads(doc)
