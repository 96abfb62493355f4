"""Plot the open-loop `payments bench` runs: throughput and p99 against the offered rate.

    python bench/plot.py [bench/results.jsonl] [bench/throughput.png]

Reads the JSON lines `payments bench --json-out` appends; uses the runs with a `--rate`.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt


def main(source: Path, target: Path) -> None:
    runs = [json.loads(line) for line in source.read_text().splitlines() if line.strip()]
    open_loop = sorted(
        (r for r in runs if r.get("mode") == "open" and r.get("offered_rate")),
        key=lambda r: (r["via"], r["gateway_latency_ms"], r["offered_rate"]),
    )
    if not open_loop:
        raise SystemExit(f"no open-loop runs in {source}")
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(7, 7), sharex=True)
    series: dict[tuple[str, int], list[dict]] = {}
    for r in open_loop:
        series.setdefault((r["via"], r["gateway_latency_ms"]), []).append(r)
    for (via, latency), points in series.items():
        offered = [p["offered_rate"] for p in points]
        label = f"via {via}, gateway {latency} ms"
        top.plot(offered, [p["payments_per_s"] for p in points], "o-", label=label)
        bottom.plot(offered, [p["p99_ms"] for p in points], "o-", label=label)
    top.plot(offered, offered, ":", color="grey", label="offered")
    top.set_ylabel("settled payments/s")
    top.set_title("payments bench, open loop (2 cores: broker, Redis, sandbox, worker, client)")
    top.legend()
    bottom.set_ylabel("p99 accept-to-final (ms)")
    bottom.set_yscale("log")
    bottom.set_xlabel("offered payments/s")
    fig.tight_layout()
    fig.savefig(target, dpi=110)
    print(f"wrote {target}")


if __name__ == "__main__":
    args = sys.argv[1:]
    main(
        Path(args[0]) if args else Path("bench/results.jsonl"),
        Path(args[1]) if len(args) > 1 else Path("bench/throughput.png"),
    )
