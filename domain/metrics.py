"""Payment metrics in tumbling windows: what one window of gateway attempts adds up to.

Pure: an attempt is folded into a window's totals, and totals are read out as a record. The
metrics agents (`agents/analytics.py`) keep the totals in a changelog-backed table and emit
them; nothing here knows about Kafka or the table.

What counts (one `payment_analytics` record is one gateway call):
- `attempts`: authorize calls. `successes` (authorized or succeeded), `failures` (failed,
  by decline code, or error code when there is none) and `pending` (unknown, processing,
  pending: the janitor or a webhook settles them later) add up to `attempts`;
- `success_rate`: successes / attempts;
- `volume`: the amounts of successful authorizations, in minor units of the window's
  currency (a window never mixes currencies);
- `refunds` (processed), `refund_volume`, `refund_failures`: refund calls;
- `calls` and the latency percentiles: every gateway call (authorize, capture, cancel,
  refund), from a log-bucketed histogram. A percentile is the upper bound of its bucket,
  within `LATENCY_PRECISION` (5%) above the true value and never above the window's maximum.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

SUCCESS = frozenset({"authorized", "succeeded"})
FAILURE = frozenset({"failed"})
LATENCY_PRECISION = 0.05
_GROWTH = 1 + LATENCY_PRECISION
DEFAULT_METHOD = "card"  # attempts written before payment_analytics v2 carry no method


@dataclass(frozen=True, slots=True)
class Attempt:
    """The fields of a `payment_analytics` record the metrics read."""

    gateway: str
    payment_method: str
    currency: str
    operation: str
    outcome: str
    amount: int
    latency_ms: int
    occurred_at_ms: int
    decline_code: str | None = None
    error_code: str | None = None

    @property
    def dims(self) -> str:
        """The dimensions a window is kept per: `<gateway>|<method>|<currency>`."""
        return f"{self.gateway}|{self.payment_method}|{self.currency}"


@dataclass(frozen=True, slots=True)
class Window:
    size_s: int
    start_ms: int

    @property
    def end_ms(self) -> int:
        return self.start_ms + self.size_s * 1000

    def key(self, dims: str) -> str:
        """The window's table and record key: sorts by size, then start time."""
        return f"{self.size_s:06d}:{self.start_ms:013d}:{dims}"


def windows_for(at_ms: int, sizes_s: tuple[int, ...]) -> tuple[Window, ...]:
    """The tumbling window of each size that `at_ms` falls in."""
    return tuple(Window(size, at_ms - at_ms % (size * 1000)) for size in sizes_s)


def parse_key(key: str) -> tuple[Window, str]:
    size, start, dims = key.split(":", 2)
    return Window(int(size), int(start)), dims


def empty() -> dict[str, Any]:
    return {
        "attempts": 0,
        "successes": 0,
        "failures": 0,
        "pending": 0,
        "failures_by_code": {},
        "volume": 0,
        "refunds": 0,
        "refund_volume": 0,
        "refund_failures": 0,
        "calls": 0,
        "latency_buckets": {},  # bucket index (str, for JSON) -> calls
        "latency_max": 0,
    }


def add(totals: Mapping[str, Any] | None, attempt: Attempt) -> dict[str, Any]:
    """`totals` with `attempt` folded in (a new dict; `totals` is not changed)."""
    out = {**(totals or empty())}
    out["calls"] += 1
    buckets = dict(out["latency_buckets"])
    bucket = str(latency_bucket(attempt.latency_ms))
    buckets[bucket] = buckets.get(bucket, 0) + 1
    out["latency_buckets"] = buckets
    out["latency_max"] = max(out["latency_max"], attempt.latency_ms)
    if attempt.operation == "authorize":
        out["attempts"] += 1
        if attempt.outcome in SUCCESS:
            out["successes"] += 1
            out["volume"] += attempt.amount
        elif attempt.outcome in FAILURE:
            out["failures"] += 1
            code = attempt.decline_code or attempt.error_code or "unspecified"
            codes = dict(out["failures_by_code"])
            codes[code] = codes.get(code, 0) + 1
            out["failures_by_code"] = codes
        else:
            out["pending"] += 1
    elif attempt.operation == "refund":
        if attempt.outcome == "processed":
            out["refunds"] += 1
            out["refund_volume"] += attempt.amount
        elif attempt.outcome == "failed":
            out["refund_failures"] += 1
    return out


def latency_bucket(ms: int) -> int:
    """Bucket 0 holds 0 ms; bucket i > 0 holds (upper(i - 1), upper(i)]."""
    if ms <= 0:
        return 0
    i = max(1, math.ceil(math.log(ms) / math.log(_GROWTH)))
    while upper(i - 1) >= ms:  # float rounding at a bound
        i -= 1
    while upper(i) < ms:
        i += 1
    return i


def upper(i: int) -> int:
    """The largest latency (ms) bucket `i` holds."""
    return 0 if i <= 0 else math.ceil(_GROWTH**i)


def percentile(totals: Mapping[str, Any], q: float) -> int | None:
    """The `q` quantile (0 < q <= 1) of the window's call latencies: nearest rank, as its
    bucket's upper bound capped at the maximum seen; None for a window without calls."""
    n = totals["calls"]
    if n == 0:
        return None
    rank = max(1, math.ceil(q * n))
    seen = 0
    for i, count in sorted((int(b), c) for b, c in totals["latency_buckets"].items()):
        seen += count
        if seen >= rank:
            return min(upper(i), int(totals["latency_max"]))
    return int(totals["latency_max"])


def to_record(
    window: Window, dims: str, totals: Mapping[str, Any], *, final: bool, emitted_at_ms: int
) -> dict[str, Any]:
    """The `payment_metrics` record of one window."""
    gateway, method, currency = dims.split("|")
    attempts = totals["attempts"]
    return {
        "window_size_s": window.size_s,
        "window_start": window.start_ms,
        "window_end": window.end_ms,
        "gateway": gateway,
        "payment_method": method,
        "currency": currency,
        "attempts": attempts,
        "successes": totals["successes"],
        "failures": totals["failures"],
        "pending": totals["pending"],
        "success_rate": totals["successes"] / attempts if attempts else None,
        "failures_by_code": dict(totals["failures_by_code"]),
        "volume": totals["volume"],
        "refunds": totals["refunds"],
        "refund_volume": totals["refund_volume"],
        "refund_failures": totals["refund_failures"],
        "calls": totals["calls"],
        "latency_ms_p50": percentile(totals, 0.50),
        "latency_ms_p95": percentile(totals, 0.95),
        "latency_ms_p99": percentile(totals, 0.99),
        "latency_ms_max": totals["latency_max"] if totals["calls"] else None,
        "final": final,
        "emitted_at": emitted_at_ms,
    }


def already_added(totals: Mapping[str, Any] | None, source: tuple[int, int]) -> bool:
    """Was the `payment_analytics` record at (partition, offset) folded into `totals`?

    Records of one source partition reach a window in offset order (one writer per source
    partition at a time), so the highest offset folded in per source partition is enough to
    recognise a redelivery.
    """
    if totals is None:
        return False
    partition, offset = source
    return bool(totals.get("sources", {}).get(str(partition), -1) >= offset)


def add_once(
    totals: Mapping[str, Any] | None, attempt: Attempt, source: tuple[int, int]
) -> dict[str, Any] | None:
    """`add`, recording `source`; None when that record was added before."""
    if already_added(totals, source):
        return None
    out = add(totals, attempt)
    out["sources"] = {**(totals or {}).get("sources", {}), str(source[0]): source[1]}
    return out
