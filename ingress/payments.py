"""`/v1/payments` endpoints."""

from __future__ import annotations

import logging
import time
from typing import Any

from redis.exceptions import RedisError
from starlette.requests import Request
from starlette.responses import JSONResponse

from domain.errors import UnknownCurrency
from domain.ids import payment_id_for
from domain.keys import Role
from domain.routing import route
from ingress.auth import check_owner, claim, guard
from ingress.body import read_json
from ingress.errors import ApiError
from ingress.guards import (
    check_idempotency,
    reject_card_numbers,
    require_idempotency_key,
    validate,
)
from ingress.models import CreatePayment, PaymentAccepted
from ingress.reads import read_document
from schemas import codec
from streams import names
from streams.readmodel import dumps, payment_key

log = logging.getLogger(__name__)

_REQUESTED = codec("payment_requested")


async def create_payment(request: Request) -> JSONResponse:
    principal = await guard(request, Role.MERCHANT)
    state = request.app.state
    settings = state.settings
    key = require_idempotency_key(request)
    raw = reject_card_numbers(await read_json(request, settings.max_body_bytes))
    try:
        body = validate(CreatePayment, raw)
    except UnknownCurrency as exc:
        raise ApiError(400, exc.code, exc.message) from None
    gateways = choose_gateways(body, settings)

    payment_id = payment_id_for(key)
    fingerprint = body.fingerprint()
    accepted = PaymentAccepted(payment_id=payment_id).model_dump()
    await claim(request, payment_id, principal)
    await check_idempotency(request, key, payment_id, fingerprint)

    now_ms = int(time.time() * 1000)
    record = {
        "payment_id": payment_id,
        "idempotency_key": key,
        "fingerprint": fingerprint,
        "order_id": body.order_id,
        "user_id": body.user_id,
        "amount": body.amount,
        "currency": body.currency,
        "gateway": gateways[0],
        "payment_method": {
            "type": body.payment_method.type,
            "token": body.payment_method.token_for(gateways[0]),
        },
        "fallback_gateways": list(gateways[1:]),
        "method_tokens": {g: body.payment_method.token_for(g) for g in gateways},
        "capture": body.capture,
        "metadata": body.metadata,
        "requested_at": now_ms,
        "card_fingerprint": body.payment_method.fingerprint,
        "billing_country": body.billing_country,
        "ip_country": body.ip_country,
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


def choose_gateways(body: CreatePayment, settings: Any) -> tuple[str, ...]:
    """The gateway the client named, alone; otherwise the routing rules' order."""
    method = body.payment_method
    if body.gateway is not None:
        if body.gateway not in settings.gateways:
            raise ApiError(
                400, "gateway_not_enabled", f"gateway {body.gateway!r} is not enabled here"
            )
        if method.token_for(body.gateway) is None:
            raise ApiError(
                400, "missing_token", f"payment_method.gateway_tokens has no {body.gateway} token"
            )
        return (body.gateway,)
    gateways = route(
        settings.routing,
        currency=body.currency,
        method=method.type,
        enabled=settings.gateways,
        tokens=None if method.gateway_tokens is None else set(method.gateway_tokens),
    )
    if not gateways:
        raise ApiError(
            422,
            "no_route",
            f"no enabled gateway takes {method.type} payments in {body.currency} "
            "with the tokens given",
        )
    return gateways


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
    await check_owner(request, payment_id, await guard(request, Role.MERCHANT))
    return JSONResponse(
        await read_document(request, payment_key(payment_id), "payment", payment_id)
    )
