"""Worker web pages (faust's web server): readiness, and a table digest used by tests."""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import Iterable, Mapping
from typing import Any

import faust
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from agents.breaker import CircuitBreaker
from tables.payments import Tables

SLICE = 500  # table items read between two turns of the event loop


async def local_items(table: Any, limit: int | None = None) -> list[tuple[Any, Any]]:
    """A table's local items, up to `limit`, read in slices of `SLICE`: a page never holds
    the event loop for a read that grows with the table."""
    items: list[tuple[Any, Any]] = []
    for item in table.items():
        if limit is not None and len(items) >= limit:
            break
        items.append(item)
        if len(items) % SLICE == 0:
            await asyncio.sleep(0)
    return items


def table_digest(items: Iterable[tuple[Any, Any]]) -> dict[str, Any]:
    """Count and SHA-256 of a table's items, in key order: equal digests, equal tables."""
    items = sorted((str(k), json.dumps(v, sort_keys=True)) for k, v in items)
    h = hashlib.sha256()
    for k, v in items:
        h.update(k.encode())
        h.update(b"\0")
        h.update(v.encode())
        h.update(b"\n")
    return {"count": len(items), "sha256": h.hexdigest()}


def worker_ready(app: faust.App) -> bool:
    """Partitions assigned, no rebalance under way, tables recovered."""
    assigned = app.consumer.assignment() if app.consumer else set()
    recovery = app.tables.recovery  # type: ignore[attr-defined]
    return bool(assigned) and not app.rebalancing and not recovery.active_remaining_total()


def active_partitions(app: faust.App, topic: str) -> list[int]:
    """This worker's active partitions of `topic` (a table written from it shares them)."""
    actives = app.assignor.assigned_actives()
    return sorted({tp.partition for tp in actives if tp.topic == topic})


def register(
    app: faust.App, tables: Tables, breakers: Mapping[str, CircuitBreaker] | None = None
) -> None:
    @app.page("/readyz/")
    async def readyz(web: Any, request: Any) -> Any:
        assigned = app.consumer.assignment() if app.consumer else set()
        ready = worker_ready(app)
        circuits = {name: b.state.name.lower() for name, b in (breakers or {}).items()}
        # An open circuit is the gateway's trouble, not the worker's: still ready.
        body = {"ready": ready, "assigned_partitions": len(assigned), "circuits": circuits}
        return web.json(body, status=200 if ready else 503)

    @app.page("/metrics")
    async def metrics(web: Any, request: Any) -> Any:
        return web.bytes(generate_latest(), content_type=CONTENT_TYPE_LATEST.split(";")[0])

    @app.page("/tables/payments/digest/")
    async def payments_digest(web: Any, request: Any) -> Any:
        return web.json(table_digest(await local_items(tables.payments)))

    @app.page("/tables/payments/")
    async def payment_rows(web: Any, request: Any) -> Any:
        """Every payment on this worker, for tests and operators (bounded by `limit`)."""
        limit = int(request.query.get("limit", "10000"))
        return web.json({str(k): row for k, row in await local_items(tables.payments, limit)})

    @app.page("/tables/{name}/entries/")
    async def dedup_entries(web: Any, request: Any, name: str) -> Any:
        """The `idempotency` or `seen_events` entries about one payment (a full scan: ops and
        tests only)."""
        dedup = {"idempotency": tables.idempotency, "seen_events": tables.seen_events}.get(name)
        payment_id = request.query.get("payment_id")
        if dedup is None or not payment_id:
            return web.json({"error": "unknown table or no payment_id"}, status=404)
        return web.json(dedup.entries_about(payment_id, await local_items(dedup.table)))

    @app.page("/tables/{name}/expiring/")
    async def dedup_expiring(web: Any, request: Any, name: str) -> Any:
        """The soonest-expiring keys of one partition, read the way the sweep reads them."""
        dedup = {"idempotency": tables.idempotency, "seen_events": tables.seen_events}.get(name)
        if dedup is None:
            return web.json({"error": "unknown table"}, status=404)
        partition = int(request.query.get("partition", "0"))
        limit = int(request.query.get("limit", "100"))
        return web.json([[exp, key] for exp, key in dedup.expiring(partition, limit)])

    @app.page("/tables/payments/{payment_id}/")
    async def payment_row(web: Any, request: Any, payment_id: str) -> Any:
        """One payment's full state, for operators and tests (this worker's partitions only)."""
        row = tables.payments.get(payment_id)
        if row is None:
            return web.json({"error": "not on this worker"}, status=404)
        return web.json(row)
