"""Capture, cancel and refund a payment: `/v1/payments/{id}/capture|cancel|refunds`, and
`GET /v1/refunds/{id}`.

The ingress checks what it can see (the payment exists, the body is sound, the currency
matches) and produces the request to Kafka. Whether the payment may be captured or how much
is still refundable is decided by the payment agent, the single writer of the payment: two
concurrent refunds are decided one after the other, never both against the same balance.
"""

from __future__ import annotations

import contextlib
import json
import time
from typing import Any

from redis.exceptions import RedisError
from starlette.requests import Request
from starlette.responses import JSONResponse

from domain.ids import refund_id_for
from domain.keys import Role
from ingress.auth import check_owner, guard
from ingress.body import parse_json, read_body, require_json_type
from ingress.errors import ApiError
from ingress.guards import (
    M,
    check_idempotency,
    reject_card_numbers,
    require_idempotency_key,
    validate,
)
from ingress.models import ActionAccepted, CaptureBody, RefundAccepted, RefundBody, ReviewBody
from ingress.reads import read_document
from schemas import codec
from streams import names
from streams.readmodel import dumps, payment_key, refund_document, refund_key

_ACTION = codec("payment_action")
_REFUND = codec("refund_request")


async def _body(request: Request, model: type[M]) -> M:
    """An optional JSON body: empty means all defaults."""
    raw_bytes = await read_body(request, request.app.state.settings.max_body_bytes)
    raw: Any = {}
    if raw_bytes.strip():
        require_json_type(request)
        raw = parse_json(raw_bytes)
    return validate(model, reject_card_numbers(raw))


async def _payment(request: Request, payment_id: str) -> dict[str, Any]:
    found: dict[str, Any] = await read_document(
        request, payment_key(payment_id), "payment", payment_id
    )
    return found


async def review_payment(request: Request) -> JSONResponse:
    """Approve or reject a payment the fraud rules held (`in_review`): admin only."""
    await guard(request, Role.ADMIN)
    body = await _body(request, ReviewBody)
    return await _action(request, body.decision)


async def _action(request: Request, action: str) -> JSONResponse:
    payment_id = request.path_params["payment_id"]
    await check_owner(request, payment_id, await guard(request, Role.MERCHANT))
    key = require_idempotency_key(request)
    body = await _body(request, CaptureBody) if action == "capture" else None
    payment = await _payment(request, payment_id)
    if action in ("approve", "reject") and payment["status"] != "in_review":
        raise ApiError(
            409, "payment_not_in_review", f"the payment is {payment['status']}, not in_review"
        )
    amount = body.amount if body is not None else None
    fingerprint = json.dumps({"amount": amount})
    await check_idempotency(request, f"{action}:{payment_id}:{key}", payment_id, fingerprint)
    record = {
        "payment_id": payment_id,
        "action": action,
        "request_id": key,
        "amount": amount,
        "requested_at": int(time.time() * 1000),
    }
    await request.app.state.producer.send(
        names.PAYMENT_ACTIONS, key=payment_id, value=_ACTION.encode(record), headers=_ACTION.headers
    )
    accepted = ActionAccepted(payment_id=payment_id, action=action)  # type: ignore[arg-type]
    return JSONResponse(accepted.model_dump(), status_code=202)


async def capture_payment(request: Request) -> JSONResponse:
    return await _action(request, "capture")


async def cancel_payment(request: Request) -> JSONResponse:
    return await _action(request, "cancel")


async def create_refund(request: Request) -> JSONResponse:
    await guard(request, Role.ADMIN)
    payment_id = request.path_params["payment_id"]
    key = require_idempotency_key(request)
    body: RefundBody = await _body(request, RefundBody)
    payment = await _payment(request, payment_id)
    if body.currency is not None and body.currency.upper() != payment["currency"]:
        raise ApiError(
            400,
            "currency_mismatch",
            f"the payment is in {payment['currency']}, not {body.currency}",
        )
    refund_id = refund_id_for(payment_id, key)
    fingerprint = body.fingerprint()
    await check_idempotency(request, f"refund:{payment_id}:{key}", refund_id, fingerprint)
    now_ms = int(time.time() * 1000)
    record = {
        "refund_id": refund_id,
        "payment_id": payment_id,
        "amount": body.amount,
        "reason": body.reason,
        "fingerprint": fingerprint,
        "requested_at": now_ms,
    }
    state = request.app.state
    await state.producer.send(
        names.REFUND_REQUEST, key=payment_id, value=_REFUND.encode(record), headers=_REFUND.headers
    )
    seed = {
        "refund_id": refund_id,
        "payment_id": payment_id,
        "status": "initiated",
        "amount": body.amount or 0,
        "currency": payment["currency"],
        "reason": body.reason,
        "error_code": None,
        "gateway_reference": None,
        "seq": 0,
        "occurred_at": now_ms,
    }
    # seq 0 loses to every record from the agent, which fills in the amount and outcome;
    # if Redis is down, the agent's first record creates the document instead.
    with contextlib.suppress(RedisError):
        await state.set_if_newer(
            keys=[refund_key(refund_id)], args=[0, dumps(refund_document(seed, now_ms))]
        )
    accepted = RefundAccepted(refund_id=refund_id, payment_id=payment_id)
    return JSONResponse(accepted.model_dump(), status_code=202)


async def get_refund(request: Request) -> JSONResponse:
    await guard(request, Role.ADMIN)
    refund_id = request.path_params["refund_id"]
    return JSONResponse(await read_document(request, refund_key(refund_id), "refund", refund_id))
