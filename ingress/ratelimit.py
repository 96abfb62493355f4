"""Rate limits at the edge: a token bucket in Redis per API key and per client IP.

A bucket holds up to `burst` tokens and refills at `rate` per second; a request takes one.
An empty bucket answers `429 rate_limited` with `Retry-After` (whole seconds until a token is
back). The bucket lives in Redis (one Lua call, atomic), so every ingress process and every
uvicorn worker share it. If Redis cannot answer, the request goes through and the failure is
logged: the limits protect capacity, and refusing payments because Redis blinked would be
worse than a burst.

Per IP applies to every API route (before the key is checked, so guessing keys costs
tokens too); per key to every request with a valid key. Webhooks, health and metrics are not
limited (gateways retry on refusal, and probes must always answer).
"""

from __future__ import annotations

import logging
import math
import time

from prometheus_client import Counter
from redis.exceptions import RedisError
from starlette.requests import Request

from ingress.errors import ApiError

log = logging.getLogger(__name__)

RATE_LIMITED = Counter(
    "payments_rate_limited_total", "Requests refused with 429, by bucket (key, ip).", ["scope"]
)

# KEYS[1] bucket; ARGV: burst, rate per s, now ms. Returns {allowed (1/0), ms until a token}.
TAKE = """
local burst = tonumber(ARGV[1])
local rate = tonumber(ARGV[2])
local now = tonumber(ARGV[3])
local state = redis.call('HMGET', KEYS[1], 'tokens', 'at')
local tokens = tonumber(state[1]) or burst
local at = tonumber(state[2]) or now
tokens = math.min(burst, tokens + math.max(0, now - at) * rate / 1000)
local allowed = 0
local wait = 0
if tokens >= 1 then
  tokens = tokens - 1
  allowed = 1
else
  wait = math.ceil((1 - tokens) * 1000 / rate)
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'at', now)
redis.call('PEXPIRE', KEYS[1], math.ceil(burst * 1000 / rate) + 1000)
return {allowed, wait}
"""


async def take(request: Request, scope: str, subject: str, limit: tuple[int, float]) -> None:
    """Take a token from `scope`'s bucket for `subject`, or refuse with 429."""
    burst, rate = limit
    if burst == 0:
        return
    state = request.app.state
    try:
        allowed, wait_ms = await state.take_token(
            keys=[f"payments:ratelimit:{scope}:{subject}"],
            args=[burst, rate, int(time.time() * 1000)],
        )
    except RedisError as exc:
        log.warning("rate limit not checked (%s): let through", type(exc).__name__)
        return
    if not int(allowed):
        RATE_LIMITED.labels(scope).inc()
        retry_after = max(1, math.ceil(int(wait_ms) / 1000))
        raise ApiError(
            429,
            "rate_limited",
            f"too many requests for this {scope}; retry after {retry_after} s",
            headers={"Retry-After": str(retry_after)},
        )


def client_ip(request: Request) -> str:
    """The peer address. Behind a proxy, run uvicorn with --proxy-headers and
    --forwarded-allow-ips so that this is the client's, not the proxy's."""
    return request.client.host if request.client else "unknown"
