"""Checks every mutating endpoint makes before anything reaches Kafka."""

from __future__ import annotations

import json
import logging
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError
from redis.exceptions import RedisError
from starlette.requests import Request

from domain.cards import contains_pan
from ingress.errors import ApiError
from streams.readmodel import idempotency_key

log = logging.getLogger(__name__)

M = TypeVar("M", bound=BaseModel)


def require_idempotency_key(request: Request) -> str:
    key = request.headers.get("idempotency-key")
    if not key or len(key) > 255 or not key.isascii() or not key.isprintable():
        raise ApiError(
            400,
            "idempotency_key_required",
            "an Idempotency-Key header (1-255 ASCII chars) is required",
        )
    return key


def reject_card_numbers(raw: Any) -> Any:
    """A raw card number anywhere in a request is refused, and never echoed or logged."""
    if contains_pan(raw):
        raise ApiError(
            400,
            "raw_card_number_rejected",
            "card numbers must never be sent; tokenize the card and send the gateway token",
        )
    return raw


def validate(model: type[M], raw: Any) -> M:
    """The body as `model`, or a 400 `invalid_request` naming the bad fields."""
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        raise ApiError(
            400,
            "invalid_request",
            "request body failed validation",
            details=validation_details(exc),
        ) from None


def validation_details(exc: ValidationError) -> list[dict[str, Any]]:
    # Never echo input values back: they may hold secrets.
    return [
        {"field": ".".join(str(p) for p in err["loc"]), "message": err["msg"]}
        for err in exc.errors(include_input=False, include_url=False)
    ]


async def check_idempotency(request: Request, key: str, object_id: str, fingerprint: str) -> None:
    """Redis fast path for key reuse with another body; the agent's table stays the truth."""
    state = request.app.state
    entry = json.dumps({"id": object_id, "fingerprint": fingerprint})
    try:
        created = await state.redis.set(
            idempotency_key(key), entry, nx=True, ex=state.settings.idempotency_ttl_s
        )
        stored = None if created else await state.redis.get(idempotency_key(key))
    except RedisError as exc:
        log.warning("idempotency fast path unavailable: %s", type(exc).__name__)
        return
    if stored is not None and json.loads(stored).get("fingerprint") != fingerprint:
        raise ApiError(
            409,
            "idempotency_key_reused",
            "this Idempotency-Key was used with a different request body",
        )
