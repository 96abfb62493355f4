"""API keys and roles: `Authorization: Bearer <key>`.

Keys are configured as SHA-256 digests (`PAYMENTS_API_KEYS`, `<name>:<role>:<hex digest>`,
comma-separated): the ingress never holds a key itself, so neither settings, logs nor a
memory dump give one away. Keys are long random tokens (`payments dev` and `payments
api-key` make them), for which one SHA-256 is as good as a slow hash.

- `merchant`: create payments, read, capture and cancel its own (a payment belongs to the
  key that created it; another merchant's is `404`, as if it did not exist);
- `admin`: everything a merchant may, on every payment, and refunds, reviews of held
  payments, the listings, the dashboard's data.

No key, or a key that is not configured: `401 unauthorized`. The wrong role: `403
forbidden`. Webhooks need no key (their signature is the authentication), nor do the health,
metrics, OpenAPI and dashboard page routes.
"""

from __future__ import annotations

import logging

from redis.exceptions import RedisError
from starlette.requests import Request

from domain.keys import Principal, Role, digest
from ingress.errors import ApiError
from ingress.ratelimit import client_ip, take
from streams.readmodel import owner_key

log = logging.getLogger(__name__)


def authenticate(request: Request) -> Principal:
    """The caller, from `Authorization: Bearer <key>`; 401 when missing or unknown."""
    header = request.headers.get("authorization", "")
    scheme, _, key = header.partition(" ")
    if scheme.lower() != "bearer" or not key.strip():
        raise ApiError(
            401,
            "unauthorized",
            "an API key is required: Authorization: Bearer <key>",
            headers={"WWW-Authenticate": "Bearer"},
        )
    principal: Principal | None = request.app.state.api_keys.get(digest(key.strip()))
    if principal is None:
        raise ApiError(
            401, "unauthorized", "the API key is not valid", headers={"WWW-Authenticate": "Bearer"}
        )
    return principal


def require(request: Request, role: Role) -> Principal:
    """The caller, who must hold `role` (admin holds every role)."""
    principal = authenticate(request)
    if role is Role.ADMIN and not principal.is_admin:
        raise ApiError(403, "forbidden", f"this needs the {role.value} role")
    return principal


async def claim(request: Request, payment_id: str, principal: Principal) -> None:
    """Record that `principal` created the payment. A payment id another key created first
    (the same Idempotency-Key from another merchant) is refused: `409`."""
    redis = request.app.state.redis
    try:
        if await redis.set(owner_key(payment_id), principal.name, nx=True):
            return
        owner = await redis.get(owner_key(payment_id))
    except RedisError as exc:
        # Kafka stays the record: the payment is accepted; until Redis has the owner, only
        # an admin key can read it.
        log.warning("owner of %s not recorded: %s", payment_id, type(exc).__name__)
        return
    if owner is not None and owner.decode() != principal.name:
        raise ApiError(
            409, "idempotency_key_reused", "this Idempotency-Key belongs to another API key"
        )


async def check_owner(request: Request, payment_id: str, principal: Principal) -> None:
    """A merchant sees only its own payments: another's answers 404, like a missing one."""
    if principal.is_admin:
        return
    try:
        owner = await request.app.state.redis.get(owner_key(payment_id))
    except RedisError:
        raise ApiError(
            503, "read_model_unavailable", "payment status is unavailable; retry"
        ) from None
    if owner is None or owner.decode() != principal.name:
        raise ApiError(404, "payment_not_found", f"no payment {payment_id}")


async def guard(request: Request, role: Role) -> Principal:
    """The rate limits and the key check of an API route: the client's IP bucket first (so
    guessing keys costs tokens too), then the key and its role, then the key's bucket."""
    per_ip, per_key = request.app.state.rate_limits
    await take(request, "ip", client_ip(request), per_ip)
    principal = require(request, role)
    await take(request, "key", principal.name, per_key)
    return principal
