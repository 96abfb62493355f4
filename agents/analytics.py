"""The metrics agents: `payment_analytics` folded into tumbling windows, emitted as Avro
`payment_metrics` (totals per window, gateway, payment method and currency).

- `metrics-rekey` re-keys each attempt by its dimensions into `payment_analytics_by_dims`,
  with the partition and offset it was read from in headers, so that every attempt of one
  `gateway|method|currency` is counted by one worker in one table partition.
- `metrics-aggregate` folds each attempt into its window of every configured size, in the
  `metrics` table (changelog-backed). A window's totals remember the highest source offset
  folded in per source partition, in the same table value: a redelivered attempt (a crash
  between re-keying and committing) is recognised and not counted twice, so the totals are
  the same across a worker restart. Each new window gets an entry in a per-partition index
  by end time, which the emitter reads and the sweep trims.
- The emitter (a timer) sends every window that changed since it last looked, and each
  window once more when it closes (`final`, `PAYMENTS_METRICS_GRACE_S` after its end). A
  record is an upsert keyed by the window: the latest one per key is the answer. After a
  takeover or restart the new owner sends all the windows of its partitions once again.
- An attempt whose window ended more than `PAYMENTS_METRICS_RETENTION_S` ago is counted in
  `payments_metrics_late_total` and not applied: its window is gone.

Windows follow the attempt's own time (`occurred_at`), so a backlog replayed after an
outage fills the windows it belongs to.
"""

from __future__ import annotations

import logging
import time
from itertools import islice, takewhile
from typing import Any

import faust
from prometheus_client import Counter

from agents.dead_letter import send_to_dead_letter
from agents.pages import active_partitions, worker_ready
from domain.errors import SerializationError
from domain.metrics import add_once, parse_key, to_record, windows_for
from schemas import codec, decode
from schemas.records import attempt_from_record
from streams import names
from streams.app import Topics
from streams.gaps import watch_inputs
from tables.dedup import faust_scan, read_time_index, time_index_key

log = logging.getLogger(__name__)

_METRICS = codec("payment_metrics")
_INDEX = "e"  # e:<partition>:<window end ms>:<window key> -> window key
_SWEEP_EVERY_MS = 30_000
_SWEEP_LIMIT = 2000  # windows dropped per sweep of a partition; the next sweep goes on

LATE = Counter(
    "payments_metrics_late_total",
    "Attempts that arrived after their metrics window's retention and were not counted.",
    ["window_size_s"],
)
EMITTED = Counter(
    "payments_metrics_emitted_total", "payment_metrics records sent, by final or not.", ["final"]
)


def _header(headers: dict[str, Any], name: str) -> int:
    raw = headers.get(name)
    if raw is None:
        raise SerializationError(f"missing header {name!r}")
    try:
        return int(raw.decode() if isinstance(raw, bytes) else raw)
    except ValueError:
        raise SerializationError(f"header {name!r} is not an integer: {raw!r}") from None


def register(
    app: faust.App,
    topics: Topics,
    table: Any,
    *,
    sizes_s: tuple[int, ...],
    grace_s: float,
    retention_s: float,
    emit_every_s: float,
) -> list[Any]:
    grace_ms, retention_ms = int(grace_s * 1000), int(retention_s * 1000)
    scan = faust_scan(table)
    dirty: set[str] = set()  # windows changed since the emitter last sent them
    finals: set[str] = set()  # windows sent as final (closed) since they last changed
    known: set[int] = set()  # partitions whose windows were all sent since the assignment
    last_sweep: dict[int, int] = {}
    gaps = watch_inputs(app)

    async def forget(sender: object, revoked: object, **_: object) -> None:
        known.clear()  # a partition that comes back is sent in full again

    app.on_partitions_revoked.connect(forget)  # type: ignore[arg-type]

    @app.agent(topics.payment_analytics, name="metrics-rekey")
    async def rekey(stream: Any) -> Any:
        async for event in stream.events():
            msg = event.message
            headers = dict(event.headers or {})
            try:
                attempt = attempt_from_record(decode("payment_analytics", event.value, headers))
            except SerializationError as exc:
                await send_to_dead_letter(topics.dead_letter, event, exc)
                continue
            await topics.analytics_by_dims.send(
                key=attempt.dims.encode(),
                value=event.value,
                headers=[
                    *headers.items(),
                    (names.SOURCE_PARTITION, str(msg.partition).encode()),
                    (names.SOURCE_OFFSET, str(msg.offset).encode()),
                ],
            )

    def sweep(partition: int, now_ms: int) -> None:
        """Drop this partition's windows past retention (inside one of its events, so the
        tombstones land in its changelog partition)."""
        if now_ms - last_sweep.get(partition, 0) < _SWEEP_EVERY_MS:
            return
        last_sweep[partition] = now_ms
        # Only the expired head of the index, and at most _SWEEP_LIMIT of it: a sweep never
        # reads every window the partition keeps (it runs inside an agent's event).
        entries = read_time_index(scan, _INDEX, partition)
        expired = takewhile(lambda entry: entry[0] + retention_ms <= now_ms, entries)
        for _, key, index_key in list(islice(expired, _SWEEP_LIMIT)):
            table.pop(key, None)
            table.pop(index_key, None)
            dirty.discard(key)
            finals.discard(key)

    @app.agent(topics.analytics_by_dims, name="metrics-aggregate")
    async def aggregate(stream: Any) -> Any:
        async for event in stream.events():
            msg = event.message
            gaps.observe(msg.topic, msg.partition, msg.offset)
            headers = dict(event.headers or {})
            now_ms = int(time.time() * 1000)
            sweep(msg.partition, now_ms)
            try:
                attempt = attempt_from_record(decode("payment_analytics", event.value, headers))
                source = (
                    _header(headers, names.SOURCE_PARTITION),
                    _header(headers, names.SOURCE_OFFSET),
                )
            except SerializationError as exc:
                await send_to_dead_letter(topics.dead_letter, event, exc)
                continue
            for window in windows_for(attempt.occurred_at_ms, sizes_s):
                if window.end_ms + retention_ms <= now_ms:
                    LATE.labels(str(window.size_s)).inc()
                    log.info("attempt too late for its %ss window: not counted", window.size_s)
                    continue
                key = window.key(attempt.dims)
                totals = table.get(key)
                added = add_once(totals, attempt, source)
                if added is None:
                    continue  # a redelivery: counted already
                table[key] = added
                if totals is None:
                    table[time_index_key(_INDEX, msg.partition, window.end_ms, key)] = key
                dirty.add(key)
                finals.discard(key)

    @app.timer(interval=emit_every_s, name="metrics-emitter")  # type: ignore[untyped-decorator]
    async def emit() -> None:
        if not worker_ready(app):
            return
        now_ms = int(time.time() * 1000)
        for partition in active_partitions(app, names.ANALYTICS_BY_DIMS):
            full = partition not in known
            for end_ms, key, _ in read_time_index(scan, _INDEX, partition):
                if end_ms + retention_ms <= now_ms:
                    continue  # the next sweep drops it
                closed = end_ms + grace_ms <= now_ms
                if not (full or key in dirty or (closed and key not in finals)):
                    continue
                totals = table.get(key)
                if totals is None:
                    continue
                window, dims = parse_key(key)
                record = to_record(window, dims, totals, final=closed, emitted_at_ms=now_ms)
                dirty.discard(key)
                if closed:
                    finals.add(key)
                await topics.payment_metrics.send(
                    key=key.encode(), value=_METRICS.encode(record), headers=_METRICS.headers
                )
                EMITTED.labels(str(closed).lower()).inc()
            known.add(partition)

    return [rekey, aggregate, emit]
