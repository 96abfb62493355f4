"""`POST /v1/webhooks/{gateway}`: verify on the raw body, then produce, then 200.

A bad, missing or expired signature is a 400 and nothing reaches Kafka. A good event is
produced to `gateway_events` keyed by our payment id; the 200 goes out only after the broker
acknowledged, so the gateway retries otherwise. Duplicates are expected (gateways retry) and
are dropped downstream by event id; a one-time transmission id seen twice is a replay.
"""

from __future__ import annotations

import logging
import time

from redis.exceptions import RedisError
from starlette.requests import Request
from starlette.responses import JSONResponse

from ingress.body import read_body
from ingress.errors import ApiError
from ingress.metrics import DEAD_LETTERS, WEBHOOK_VERIFICATIONS, WEBHOOKS
from ingress.webhooks.base import VerifiedEvent, WebhookRejected
from schemas import codec
from streams import names
from streams.dead_letter import dead_letter_headers
from streams.indexes import gateway_payment_key

log = logging.getLogger(__name__)

_EVENT = codec("gateway_event")
REPLAY_KEY = "payments:webhook-replay:{}:{}"


async def receive_webhook(request: Request) -> JSONResponse:
    state = request.app.state
    gateway = request.path_params["gateway"]
    verifier = state.verifiers.get(gateway)
    if verifier is None:
        raise ApiError(404, "unknown_gateway", f"no webhook endpoint for {gateway!r}")
    body = await read_body(request, state.settings.max_body_bytes)
    headers = {k.lower(): v for k, v in request.headers.items()}
    try:
        event = await verifier.verify(headers, body)
    except WebhookRejected as exc:
        WEBHOOK_VERIFICATIONS.labels(gateway, "failed", exc.code).inc()
        WEBHOOKS.labels(gateway, exc.code).inc()
        log.warning("webhook from %s rejected: %s", gateway, exc.code)
        raise ApiError(400, exc.code, exc.message) from None
    WEBHOOK_VERIFICATIONS.labels(gateway, "ok", "").inc()
    if event.replay_key is not None:
        await _refuse_replay(request, event)
    payment_id = event.payment_id or await _ours(request, event)
    if not payment_id:
        # Not one we can place: kept in dead_letter with the reason, acknowledged so the
        # gateway stops retrying. Never dropped.
        WEBHOOKS.labels(gateway, "unroutable").inc()
        DEAD_LETTERS.labels(names.GATEWAY_EVENTS).inc()
        log.warning("webhook %s %s names no payment of ours", gateway, event.event_type)
        await state.producer.send(
            names.DEAD_LETTER,
            key=event.gateway_payment or event.object_id,
            value=_EVENT.encode(_record(event, "")),
            headers=[
                *_EVENT.headers,
                *dead_letter_headers(
                    topic=names.GATEWAY_EVENTS, partition=-1, offset=-1, error=Unroutable(event)
                ),
            ],
        )
        return JSONResponse({"received": True, "routed": False})
    await state.producer.send(
        names.GATEWAY_EVENTS,
        key=payment_id,
        value=_EVENT.encode(_record(event, payment_id)),
        headers=_EVENT.headers,
    )
    WEBHOOKS.labels(gateway, "accepted").inc()
    return JSONResponse({"received": True, "routed": True})


class Unroutable(Exception):
    """A verified webhook that names no payment of ours, directly or by the gateway's id."""

    def __init__(self, event: VerifiedEvent) -> None:
        super().__init__(
            f"{event.gateway} {event.event_type} {event.object_id}: no payment of ours"
            f" for gateway payment {event.gateway_payment or '(none)'}"
        )


async def _ours(request: Request, event: VerifiedEvent) -> str | None:
    """Our payment id from the gateway's, through the read model's reference index."""
    if not event.gateway_payment:
        return None
    try:
        found = await request.app.state.redis.get(
            gateway_payment_key(event.gateway, event.gateway_payment)
        )
    except RedisError:
        # The gateway retries; better late than parked.
        raise ApiError(503, "lookup_unavailable", "cannot route this event now; retry") from None
    return found.decode() if isinstance(found, bytes) else found


async def _refuse_replay(request: Request, event: VerifiedEvent) -> None:
    state = request.app.state
    key = REPLAY_KEY.format(event.gateway, event.replay_key)
    ttl = 2 * state.settings.paypal_webhook_tolerance_s
    try:
        fresh = await state.redis.set(key, "1", nx=True, ex=ttl)
    except RedisError:
        # Fail closed: the gateway retries later, with a new transmission.
        raise ApiError(503, "replay_check_unavailable", "cannot check for replays; retry") from None
    if not fresh:
        WEBHOOKS.labels(event.gateway, "webhook_replayed").inc()
        raise ApiError(400, "webhook_replayed", "this transmission was already received")


def _record(event: VerifiedEvent, payment_id: str) -> dict[str, object]:
    return {
        "event_id": event.event_id,
        "gateway": event.gateway,
        "event_type": event.event_type,
        "object_id": event.object_id,
        "payment_id": payment_id,
        "amount": event.amount,
        "currency": event.currency,
        "occurred_at": event.occurred_at_ms,
        "received_at": int(time.time() * 1000),
        "payload": event.payload,
    }
