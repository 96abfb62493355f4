#!/usr/bin/env python3
"""Example analytics consumer of the `payment_metrics` topic (reporting, dashboards).

Self-contained like `payment_status_consumer.py` beside it (whose schema decoder it reuses):
only `aiokafka` and `fastavro`. It shows the consumer side of the metrics contract:

* one record per tumbling window per gateway, payment method and currency, keyed by
  `<window_size_s>:<window_start ms>:<gateway>|<method>|<currency>`;
* a window is sent while it fills and again when it closes (`final`), and again after a
  worker restart: records are upserts, the latest one per key is the answer;
* `volume` and `refund_volume` are integer minor units of the record's `currency`: never add
  them across currencies.

Each window that changed is printed as one JSON line; at the end, a summary per gateway.

    python examples/payment_metrics_consumer.py --from-beginning --timeout-s 30 --final-only
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer
from payment_status_consumer import REPO, StatusDecoder, UnknownWriterSchema, default_bootstrap

TOPIC = "payment_metrics"
DEFAULT_SCHEMA = REPO / "schemas" / "payment_metrics.avsc"


def _ms(value: Any) -> int:
    """fastavro returns timestamp-millis as an aware datetime."""
    return int(value.timestamp() * 1000) if hasattr(value, "timestamp") else int(value)


def summary(windows: dict[str, dict[str, Any]], size_s: int) -> dict[str, dict[str, Any]]:
    """Totals per gateway and currency over the windows of one size."""
    out: dict[str, dict[str, Any]] = defaultdict(lambda: defaultdict(int))
    for rec in windows.values():
        if rec["window_size_s"] != size_s:
            continue
        row = out[f"{rec['gateway']} {rec['currency']}"]
        for field in ("attempts", "successes", "failures", "volume", "refunds"):
            row[field] += rec[field]
    for row in out.values():
        row["success_rate"] = (
            round(row["successes"] / row["attempts"], 4) if row["attempts"] else None
        )
    return {k: dict(v) for k, v in out.items()}


async def run(args: argparse.Namespace) -> int:
    decoder = StatusDecoder(args.schema)
    windows: dict[str, dict[str, Any]] = {}  # the latest record per window key
    consumer = AIOKafkaConsumer(
        TOPIC,
        bootstrap_servers=args.bootstrap,
        auto_offset_reset="earliest" if args.from_beginning else "latest",
        enable_auto_commit=False,  # a view rebuilt from the topic: no group offsets needed
        fetch_max_wait_ms=10,  # Tansu, the embedded broker, always waits the full fetch wait
    )
    try:
        await asyncio.wait_for(consumer.start(), timeout=args.timeout_s)
    except Exception as exc:
        await consumer.stop()
        print(f"cannot connect to {args.bootstrap}: {exc!r}", file=sys.stderr)
        return 1
    deadline = time.monotonic() + args.timeout_s
    try:
        while time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=500)
            for records in batch.values():
                for msg in records:
                    if msg.value is None:
                        continue
                    try:
                        rec = decoder.decode(msg.value, dict(msg.headers or ()))
                    except UnknownWriterSchema as exc:
                        print(f"update schemas/: {exc}", file=sys.stderr)
                        return 2
                    key = msg.key.decode() if msg.key else ""
                    if windows.get(key) == rec or (args.final_only and not rec["final"]):
                        continue
                    windows[key] = rec
                    line = {k: v for k, v in rec.items() if k != "emitted_at"}
                    line["window_start"] = _ms(rec["window_start"])
                    line["window_end"] = _ms(rec["window_end"])
                    print(json.dumps(line), flush=True)
    finally:
        await consumer.stop()
    sizes = sorted({r["window_size_s"] for r in windows.values()})
    for size in sizes:
        print(f"{size} s windows: {json.dumps(summary(windows, size))}", file=sys.stderr)
    print(f"{len(windows)} window(s)", file=sys.stderr)
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bootstrap", default=default_bootstrap())
    parser.add_argument("--from-beginning", action="store_true")
    parser.add_argument("--final-only", action="store_true", help="only closed windows")
    parser.add_argument("--timeout-s", type=float, default=30.0)
    parser.add_argument("--schema", type=Path, default=DEFAULT_SCHEMA)
    return asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    sys.exit(main())
