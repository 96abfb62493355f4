"""`payments audit`: the pipeline's view of the money against the gateway's.

It reads the read model (every payment document in Redis), the `payment_status` topic from
the beginning, and the gateways' own view of the money: the sandbox ledger (what the
emulated gateways captured and refunded), or with `--against gateways` the gateways' APIs
through their SDKs (Stripe's and Square's list APIs from `--since-hours` ago, PayPal's
payments one by one by reference; captures only: refunds are compared with the ledger).
It reports:

- `charged_not_succeeded`: the gateway captured money and the payment is not in a captured
  status here (or is unknown here);
- `succeeded_not_charged`: the payment is captured here and the gateway has no capture;
- `amount_mismatch`: captured or refunded amounts differ;
- `double_capture`: more than one capture for one payment at the gateway;
- `refund_over_capture`: more refunded than captured, here or at the gateway;
- `status_regressed`: a `payment_status` record moving a payment backwards.

Run it on a quiet pipeline: a payment still in flight shows up as a mismatch. `compare` is
pure; the rest fetches.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from domain.errors import NotSupported
from domain.status import PaymentStatus, can_move
from gateways.base import Gateway, GatewayResult
from schemas import decode
from streams import names
from streams.indexes import PAYMENTS_ALL
from streams.readmodel import payment_key
from streams.scan import read_topic

CAPTURED = frozenset({"succeeded", "partially_refunded", "refunded", "disputed"})


@dataclass(frozen=True)
class Finding:
    kind: str
    payment_id: str
    detail: str


def compare(
    documents: Mapping[str, Mapping[str, Any]],
    ledger: Mapping[str, Mapping[str, int]],
    status_records: Iterable[Mapping[str, Any]],
    *,
    only: set[str] | None = None,
) -> list[Finding]:
    """Every mismatch between the read model, the status stream and the gateway ledger."""

    def wanted(pid: str) -> bool:
        return only is None or pid in only

    findings: list[Finding] = []
    for pid in sorted(p for p in set(documents) | set(ledger) if wanted(p)):
        doc = documents.get(pid)
        gw = ledger.get(pid, {"captured": 0, "refunded": 0, "captures": 0, "refunds": 0})
        gw_refunded = gw.get("refunded")  # None: this view of the gateway has no refunds
        status = doc["status"] if doc else None
        if gw["captured"] > 0 and status not in CAPTURED:
            findings.append(
                Finding(
                    "charged_not_succeeded",
                    pid,
                    f"gateway captured {gw['captured']}, here {status}",
                )
            )
        if status in CAPTURED and gw["captured"] == 0:
            findings.append(Finding("succeeded_not_charged", pid, f"here {status}, no capture"))
        if doc is not None and gw["captured"] and doc["captured_amount"] != gw["captured"]:
            findings.append(
                Finding(
                    "amount_mismatch",
                    pid,
                    f"captured here {doc['captured_amount']}, at the gateway {gw['captured']}",
                )
            )
        if doc is not None and gw_refunded is not None and doc["refunded_amount"] != gw_refunded:
            findings.append(
                Finding(
                    "amount_mismatch",
                    pid,
                    f"refunded here {doc['refunded_amount']}, at the gateway {gw_refunded}",
                )
            )
        if gw["captures"] > 1:
            findings.append(Finding("double_capture", pid, f"{gw['captures']} captures"))
        here = (doc["refunded_amount"], doc["captured_amount"]) if doc else (0, 0)
        if (gw_refunded or 0) > gw["captured"] or here[0] > here[1]:
            findings.append(
                Finding(
                    "refund_over_capture",
                    pid,
                    f"refunded/captured at the gateway {gw_refunded}/{gw['captured']}, "
                    f"here {here[0]}/{here[1]}",
                )
            )
    findings += _regressions(status_records, wanted)
    return findings


def _regressions(records: Iterable[Mapping[str, Any]], wanted: Any) -> list[Finding]:
    """Per payment, in stream order: a newer seq never moves the status backwards."""
    last: dict[str, tuple[int, str]] = {}
    found: list[Finding] = []
    for rec in records:
        pid = rec["payment_id"]
        if not wanted(pid):
            continue
        seq, status = int(rec["seq"]), rec["status"]
        before = last.get(pid)
        if before is not None and seq > before[0]:
            prev = before[1]
            if status != prev and not can_move(PaymentStatus(prev), PaymentStatus(status)):
                found.append(Finding("status_regressed", pid, f"seq {seq}: {prev} -> {status}"))
        if before is None or seq > before[0]:
            last[pid] = (seq, status)
    return found


# --- fetching -----------------------------------------------------------------
async def read_documents(redis: Any) -> dict[str, dict[str, Any]]:
    ids = [
        i.decode() if isinstance(i, bytes) else i for i in await redis.zrange(PAYMENTS_ALL, 0, -1)
    ]
    docs: dict[str, dict[str, Any]] = {}
    for start in range(0, len(ids), 1000):
        chunk = ids[start : start + 1000]
        pipe = redis.pipeline(transaction=False)
        for pid in chunk:
            pipe.hget(payment_key(pid), "doc")
        for pid, raw in zip(chunk, await pipe.execute(), strict=True):
            if raw is not None:
                docs[pid] = json.loads(raw)
    return docs


async def read_statuses(bootstrap: str) -> list[dict[str, Any]]:
    records = await read_topic(bootstrap, names.PAYMENT_STATUS)
    return [decode("payment_status", r.value, dict(r.headers)) for r in records]


async def read_gateways(
    gateways: Mapping[str, Gateway],
    documents: Mapping[str, Mapping[str, Any]],
    *,
    since_ms: int,
) -> dict[str, dict[str, Any]]:
    """The gateways' view in the ledger's shape, from their APIs: per payment id, what was
    captured and in how many payments. `refunded` is None: not compared from here."""
    view: dict[str, dict[str, Any]] = {}

    def add(payment_id: str, result: GatewayResult) -> None:
        row = view.setdefault(
            payment_id, {"captured": 0, "refunded": None, "captures": 0, "refunds": None}
        )
        if result.captured_amount > 0:
            row["captured"] += result.captured_amount
            row["captures"] += 1

    listed: set[str] = set()
    for name, gateway in sorted(gateways.items()):
        try:
            for payment_id, result in await gateway.charges_since(since_ms):
                add(payment_id, result)
            listed.add(name)
        except NotSupported:
            pass
    # Payments a list did not cover (PayPal has none; older than the window): by reference.
    for payment_id, doc in documents.items():
        owner = gateways.get(doc.get("gateway", ""))
        covered = doc.get("gateway") in listed and payment_id in view
        if owner is None or covered or not doc.get("gateway_reference"):
            continue
        if doc.get("gateway") in listed and doc.get("status") not in CAPTURED:
            continue  # listed, absent, and not captured here either: nothing to compare
        add(payment_id, await owner.fetch(doc["gateway_reference"]))
    return view


async def audit(
    *,
    bootstrap: str,
    redis_url: str,
    ledger_url: str | None = None,
    gateways: Mapping[str, Gateway] | None = None,
    since_ms: int = 0,
    only: set[str] | None = None,
) -> list[Finding]:
    """Against the sandbox ledger at `ledger_url`, or the `gateways`' APIs."""
    import aiohttp
    import redis.asyncio as aioredis

    client = aioredis.from_url(redis_url)
    try:
        documents = await read_documents(client)
    finally:
        await client.aclose()
    if gateways is not None:
        ledger = await read_gateways(gateways, documents, since_ms=since_ms)
    else:
        assert ledger_url is not None
        async with aiohttp.ClientSession() as session, session.get(ledger_url) as r:
            r.raise_for_status()
            ledger = await r.json()
    statuses = await read_statuses(bootstrap)
    return compare(documents, ledger, statuses, only=only)


def run(
    settings: Any,
    *,
    only: set[str] | None,
    as_json: bool,
    against: str = "sandbox",
    since_hours: float = 24.0,
) -> int:
    from rich.console import Console
    from rich.table import Table

    from streams import tansu_compat

    async def go() -> list[Finding]:
        await tansu_compat.prepare(settings.kafka_bootstrap, settings.kafka_broker.value)
        if against == "gateways":
            from payments.worker import build_gateways

            gateways = build_gateways(settings)
            try:
                return await audit(
                    bootstrap=settings.kafka_bootstrap,
                    redis_url=settings.redis_url,
                    gateways=gateways,
                    since_ms=int((time.time() - since_hours * 3600) * 1000),
                    only=only,
                )
            finally:
                for gateway in gateways.values():
                    await gateway.close()
        return await audit(
            bootstrap=settings.kafka_bootstrap,
            redis_url=settings.redis_url,
            ledger_url=f"{settings.sandbox_url.rstrip('/')}/_sandbox/ledger/summary",
            only=only,
        )

    findings = asyncio.run(go())
    if as_json:
        print(json.dumps([f.__dict__ for f in findings], indent=2))
    else:
        table = Table(title=f"payments audit: {len(findings)} mismatch(es)")
        for column in ("kind", "payment_id", "detail"):
            table.add_column(column, overflow="fold")
        for f in findings:
            table.add_row(f.kind, f.payment_id, f.detail)
        Console().print(table)
    return 1 if findings else 0
