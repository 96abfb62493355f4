"""`/v1/payments` endpoints."""

from __future__ import annotations

import json
import logging
import time
from typing import Any

from pydantic import ValidationError
from redis.exceptions import RedisError
from starlette.requests import Request
from starlette.responses import JSONResponse

from domain.cards import contains_pan
from domain.errors import UnknownCurrency
from domain.ids import payment_id_for
from ingress.body import read_json
from ingress.errors import ApiError
from ingress.models import CreatePayment, PaymentAccepted
from schemas import codec
from streams import names
from streams.readmodel import dumps, idempotency_key, payment_key

log = logging.getLogger(__name__)

_REQUESTED = codec("payment_requested")


def validation_details(exc: ValidationError) -> list[dict[str, Any]]:
    # Never echo input values back: they may hold secrets.
    return [
        {"field": ".".join(str(p) for p in err["loc"]), "message": err["msg"]}
        for err in exc.errors(include_input=False, include_url=False)
    ]


async def create_payment(request: Request) -> JSONResponse:
    state = request.app.state
    settings = state.settings
    key = request.headers.get("idempotency-key")
    if not key or len(key) > 255 or not key.isascii() or not key.isprintable():
        raise ApiError(
            400,
            "idempotency_key_required",
            "an Idempotency-Key header (1-255 ASCII chars) is required",
        )
    raw = await read_json(request, settings.max_body_bytes)
    if contains_pan(raw):
        raise ApiError(
            400,
            "raw_card_number_rejected",
            "card numbers must never be sent; tokenize the card and send the gateway token",
        )
    try:
        body = CreatePayment.model_validate(raw)
    except UnknownCurrency as exc:
        raise ApiError(400, exc.code, exc.message) from None
    except ValidationError as exc:
        raise ApiError(
            400,
            "invalid_request",
            "request body failed validation",
            details=validation_details(exc),
        ) from None
    if body.gateway not in settings.gateways:
        raise ApiError(400, "gateway_not_enabled", f"gateway {body.gateway!r} is not enabled here")

    payment_id = payment_id_for(key)
    fingerprint = body.fingerprint()
    accepted = PaymentAccepted(payment_id=payment_id).model_dump()
    await _check_idempotency(request, key, payment_id, fingerprint)

    now_ms = int(time.time() * 1000)
    record = {
        "payment_id": payment_id,
        "idempotency_key": key,
        "fingerprint": fingerprint,
        "order_id": body.order_id,
        "user_id": body.user_id,
        "amount": body.amount,
        "currency": body.currency,
        "gateway": body.gateway,
        "payment_method": body.payment_method.model_dump(),
        "capture": body.capture,
        "metadata": body.metadata,
        "requested_at": now_ms,
    }
    # Re-produced on a repeat too: if the first attempt never reached Kafka this one does,
    # and the payment agent drops a duplicate by payment id.
    await state.producer.send(
        names.PAYMENT_INITIATION,
        key=payment_id,
        value=_REQUESTED.encode(record),
        headers=_REQUESTED.headers,
    )
    await _seed_read_model(request, record)
    return JSONResponse(accepted, status_code=202)


async def _check_idempotency(request: Request, key: str, payment_id: str, fingerprint: str) -> None:
    """Redis fast path for conflicts; the agent's table stays the source of truth."""
    state = request.app.state
    entry = json.dumps({"payment_id": payment_id, "fingerprint": fingerprint})
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


async def _seed_read_model(request: Request, rec: dict[str, Any]) -> None:
    """Make GET answer `pending` at once; seq 0 loses to every record from the agent."""
    doc = {
        "payment_id": rec["payment_id"],
        "status": "pending",
        "order_id": rec["order_id"],
        "user_id": rec["user_id"],
        "gateway": rec["gateway"],
        "amount": rec["amount"],
        "currency": rec["currency"],
        "captured_amount": 0,
        "refunded_amount": 0,
        "decline_code": None,
        "error_code": None,
        "gateway_reference": None,
        "card": None,
        "seq": 0,
        "updated_at_ms": rec["requested_at"],
    }
    try:
        await request.app.state.set_if_newer(
            keys=[payment_key(rec["payment_id"])], args=[0, dumps(doc)]
        )
    except RedisError as exc:
        log.warning("read model seed skipped: %s", type(exc).__name__)


async def get_payment(request: Request) -> JSONResponse:
    payment_id = request.path_params["payment_id"]
    try:
        doc = await request.app.state.redis.hget(payment_key(payment_id), "doc")
    except RedisError:
        raise ApiError(
            503, "read_model_unavailable", "payment status is unavailable; retry"
        ) from None
    if doc is None:
        raise ApiError(404, "payment_not_found", f"no payment {payment_id!r}")
    return JSONResponse(json.loads(doc))
