"""`payments bench`: drive payments through the whole pipeline and print what happened.

Each payment is timed from *accepted* (the ingress answered 202, or the broker acknowledged
the `payment_initiation` record) to the first `payment_status` record with a settled status,
read from Kafka by a consumer of the bench's own. Nothing is sampled: every payment driven is
counted, and one that was accepted but never settled is `lost`. Double charges are read from
the sandbox ledger. The raw aiokafka rate (produce N records, then consume them) is measured
on the same broker in the same run, so `ratio` says how much of the broker's speed the
pipeline keeps.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import shutil
import statistics
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from domain.ids import payment_id_for
from domain.status import SETTLED
from schemas import codec, decode
from streams import names, tansu_compat
from streams.admin import ensure_topics
from streams.scan import partitions_of

console = Console(stderr=True)

# A token each gateway's sandbox charges at once.
OK_TOKENS = {"stripe": "pm_card_visa", "square": "cnon:card-nonce-ok", "paypal": "paypal_vault_ok"}
# Bench payments capture automatically: `authorized` is a step on the way (Square announces
# APPROVED before COMPLETED), not an answer.
FINAL = frozenset(s.value for s in SETTLED) - {"authorized"}
RAW_TOPIC = "bench_raw"
_REQUESTED = codec("payment_requested")


@dataclass(frozen=True)
class BenchOptions:
    via: str = "kafka"  # "kafka" or "http"
    count: int | None = None
    duration_s: float | None = None
    rate: float | None = None  # payments/s offered (open loop); None: closed loop
    concurrency: int = 256  # closed loop: payments outstanding at once
    latency_ms: int = 0  # sandbox latency of every gateway API call
    mix: dict[str, float] = field(default_factory=lambda: {"stripe": 1.0})
    drain_s: float = 30.0  # how long to wait for stragglers once nothing moves
    raw_count: int = 20_000
    partitions: int = 8


@dataclass(frozen=True)
class Endpoints:
    ingress_url: str
    kafka_bootstrap: str
    sandbox_url: str
    worker_url: str
    kafka_broker: str = "auto"
    admin_api_key: str = ""  # the ingress API key (payments dev makes one)

    @classmethod
    def from_json(cls, data: dict[str, str], kafka_broker: str = "auto") -> Endpoints:
        return cls(
            ingress_url=data["ingress_url"],
            kafka_bootstrap=data["kafka_bootstrap"],
            sandbox_url=data["sandbox_url"],
            worker_url=data["worker_url"],
            kafka_broker=kafka_broker,
            admin_api_key=data.get("admin_api_key", ""),
        )


@dataclass
class Run:
    """What the driver and the watcher share."""

    accepted_at: dict[str, float] = field(default_factory=dict)
    settled_at: dict[str, float] = field(default_factory=dict)
    waiting: dict[str, asyncio.Event] = field(default_factory=dict)
    refused: int = 0
    statuses: dict[str, int] = field(default_factory=dict)

    def accept(self, payment_id: str, at: float) -> None:
        self.accepted_at.setdefault(payment_id, at)

    def settle(self, payment_id: str, status: str, at: float) -> None:
        if payment_id in self.settled_at or payment_id not in self.accepted_at:
            return
        self.settled_at[payment_id] = at
        self.statuses[status] = self.statuses.get(status, 0) + 1
        event = self.waiting.pop(payment_id, None)
        if event is not None:
            event.set()


def percentile(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * len(ordered) + 0.5) - 1))
    return ordered[index]


def gateway_plan(mix: dict[str, float]) -> Callable[[int], str]:
    """Payment i's gateway: the mix spread evenly, deterministically."""
    total = sum(mix.values())
    if total <= 0 or any(g not in OK_TOKENS for g in mix):
        raise ValueError(f"a mix of {sorted(OK_TOKENS)} with positive weights, got {mix}")
    slots: list[str] = []
    for gateway, weight in mix.items():
        slots += [gateway] * max(1, round(100 * weight / total))
    return lambda i: slots[(i * 37) % len(slots)]


def payment_body(run_id: str, i: int, gateway: str) -> dict[str, Any]:
    return {
        "order_id": f"bench-{run_id}-{i}",
        "user_id": f"bench-user-{i % 1000}",
        "amount": 1000 + i % 500,
        "currency": "USD",
        "gateway": gateway,
        "payment_method": {"type": "card", "token": OK_TOKENS[gateway]},
    }


def requested_record(key: str, body: dict[str, Any]) -> dict[str, Any]:
    """What the ingress would produce for `body` under idempotency key `key`."""
    return {
        "payment_id": payment_id_for(key),
        "idempotency_key": key,
        "fingerprint": f"bench:{key}",
        "order_id": body["order_id"],
        "user_id": body["user_id"],
        "amount": body["amount"],
        "currency": body["currency"],
        "gateway": body["gateway"],
        "payment_method": body["payment_method"],
        "capture": "automatic",
        "metadata": {},
        "requested_at": int(time.time() * 1000),
    }


# --- the pieces -------------------------------------------------------------
async def raw_kafka_rate(bootstrap: str, count: int, partitions: int) -> float:
    """Messages/s for producing `count` ~300-byte records and consuming them all back."""
    await ensure_topics(bootstrap, partitions=partitions, replication=1, topics=(RAW_TOPIC,))
    marker = uuid.uuid4().hex.encode()
    payload = marker + b"x" * 268
    consumer = AIOKafkaConsumer(
        RAW_TOPIC,
        bootstrap_servers=bootstrap,
        group_id=f"bench-raw-{uuid.uuid4().hex}",
        auto_offset_reset="latest",
        max_partition_fetch_bytes=4 * 1024 * 1024,
    )
    await consumer.start()
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
    await producer.start()
    try:
        await _until_assigned(consumer)
        started = time.perf_counter()
        futures = [
            await producer.send(RAW_TOPIC, payload, key=str(i).encode()) for i in range(count)
        ]
        await asyncio.gather(*futures)
        seen = 0
        deadline = time.monotonic() + 120
        while seen < count and time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=200, max_records=10_000)
            seen += sum(1 for part in batch.values() for r in part if r.value.startswith(marker))
        elapsed = time.perf_counter() - started
    finally:
        await producer.stop()
        await consumer.stop()
    return seen / elapsed


async def _until_assigned(consumer: AIOKafkaConsumer) -> None:
    """Wait until the consumer has partitions and a position on each (latest at join)."""
    deadline = time.monotonic() + 60
    while not consumer.assignment():
        if time.monotonic() > deadline:
            raise RuntimeError("the bench consumer was never assigned partitions")
        await consumer.getmany(timeout_ms=100)
    for tp in consumer.assignment():
        await consumer.position(tp)


async def watch_statuses(consumer: AIOKafkaConsumer, run: Run, stop: asyncio.Event) -> None:
    while not stop.is_set():
        batch = await consumer.getmany(timeout_ms=100, max_records=5_000)
        now = time.perf_counter()
        for part in batch.values():
            for record in part:
                rec = decode("payment_status", record.value, dict(record.headers))
                if rec["status"] in FINAL:
                    run.settle(rec["payment_id"], rec["status"], now)


class Driver:
    """Submits payment i, via Kafka or HTTP, and records when it was accepted."""

    def __init__(self, opts: BenchOptions, endpoints: Endpoints, run: Run) -> None:
        self.opts = opts
        self.endpoints = endpoints
        self.run = run
        self.run_id = uuid.uuid4().hex[:8]
        self.gateway_of = gateway_plan(opts.mix)
        self._producer: AIOKafkaProducer | None = None
        self._http: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        if self.opts.via == "kafka":
            self._producer = AIOKafkaProducer(
                bootstrap_servers=self.endpoints.kafka_bootstrap,
                acks="all",
                enable_idempotence=True,
                linger_ms=5,
            )
            await self._producer.start()
        else:
            limit = self.opts.concurrency if self.opts.rate is None else 512
            key = self.endpoints.admin_api_key
            self._http = aiohttp.ClientSession(
                base_url=self.endpoints.ingress_url,
                connector=aiohttp.TCPConnector(limit=limit),
                timeout=aiohttp.ClientTimeout(total=30),
                headers={"Authorization": f"Bearer {key}"} if key else None,
            )

    async def stop(self) -> None:
        if self._producer is not None:
            await self._producer.stop()
        if self._http is not None:
            await self._http.close()

    async def submit(self, i: int) -> str | None:
        key = f"bench-{self.run_id}-{i}"
        body = payment_body(self.run_id, i, self.gateway_of(i))
        payment_id = payment_id_for(key)
        self.run.waiting[payment_id] = asyncio.Event()
        try:
            if self._producer is not None:
                fut = await self._producer.send(
                    names.PAYMENT_INITIATION,
                    _REQUESTED.encode(requested_record(key, body)),
                    key=payment_id.encode(),
                    headers=_REQUESTED.headers,
                )
                await fut
            else:
                assert self._http is not None
                async with self._http.post(
                    "/v1/payments", json=body, headers={"Idempotency-Key": key}
                ) as response:
                    await response.read()
                    if response.status != 202:
                        raise RuntimeError(f"HTTP {response.status}")
        except Exception as exc:  # counted, never silently dropped
            self.run.waiting.pop(payment_id, None)
            self.run.refused += 1
            if self.run.refused <= 5:
                console.print(f"[red]submit {i} refused: {exc}[/red]")
            return None
        self.run.accept(payment_id, time.perf_counter())
        return payment_id


async def drive_closed(driver: Driver, opts: BenchOptions, budget: Callable[[int], bool]) -> int:
    """`concurrency` clients, each submitting its next payment once its last one settled."""
    counter = 0

    async def client() -> None:
        nonlocal counter
        while budget(counter):
            i = counter
            counter += 1
            payment_id = await driver.submit(i)
            event = driver.run.waiting.get(payment_id) if payment_id else None
            if event is not None:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(event.wait(), opts.drain_s)

    await asyncio.gather(*(client() for _ in range(opts.concurrency)))
    return counter


async def drive_open(driver: Driver, opts: BenchOptions, budget: Callable[[int], bool]) -> int:
    """Arrivals at a fixed rate, whatever the pipeline does: latency shows queueing."""
    assert opts.rate is not None
    interval = 1.0 / opts.rate
    started = time.perf_counter()
    tasks: set[asyncio.Task[Any]] = set()
    i = 0
    while budget(i):
        due = started + i * interval
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        task = asyncio.ensure_future(driver.submit(i))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
        i += 1
    if tasks:
        await asyncio.gather(*tasks)
    return i


# --- the worker and the sandbox ---------------------------------------------
async def set_sandbox_latency(
    session: aiohttp.ClientSession, sandbox: str, opts: BenchOptions
) -> None:
    for gateway in OK_TOKENS:
        async with session.post(
            f"{sandbox}/_sandbox/faults/{gateway}", json={"latency_ms": opts.latency_ms}
        ) as r:
            r.raise_for_status()


async def worker_metrics(session: aiohttp.ClientSession, worker: str) -> dict[str, float]:
    async with session.get(f"{worker}/metrics") as r:
        text = await r.text()
    wanted = {
        "payments_gateway_calls_in_flight_peak": "peak",
        "process_resident_memory_bytes": "rss",
        "process_cpu_seconds_total": "cpu_s",
    }
    out: dict[str, float] = {}
    for line in text.splitlines():
        match = re.match(r"^(\w+) (\S+)$", line)
        if match and match.group(1) in wanted:
            out[wanted[match.group(1)]] = float(match.group(2))
    return out


async def records_by_topic(bootstrap: str) -> dict[str, int]:
    """How many records each topic holds (end offsets summed over its partitions), every
    topic of the pipeline and faust's changelogs included; Kafka's own and the bench's raw
    topic left out. Two readings around a run give the records it produced."""
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap)
    await consumer.start()
    try:
        topics = [t for t in await admin.list_topics() if not t.startswith("__") and t != RAW_TOPIC]
        tps = await partitions_of(consumer, *topics)
        ends = await consumer.end_offsets(tps) if tps else {}
    finally:
        await consumer.stop()
        await admin.close()
    counts: dict[str, int] = {}
    for tp, end in ends.items():
        counts[tp.topic] = counts.get(tp.topic, 0) + end
    return counts


def per_minute(settled_at: Iterable[float], started: float, seconds: float) -> list[float]:
    """Payments/s settled in each whole minute of the run (a partial last minute is left out)."""
    minutes = int(seconds // 60)
    counts = [0] * minutes
    for at in settled_at:
        m = int((at - started) // 60)
        if 0 <= m < minutes:
            counts[m] += 1
    return [round(c / 60, 1) for c in counts]


def flatness(rates: list[float]) -> str | None:
    """`not flat` when the last whole minute settled less than 80% of the first."""
    if len(rates) < 2:
        return None
    return "flat" if rates[-1] >= 0.8 * rates[0] else "not flat"


async def duplicate_charges(
    session: aiohttp.ClientSession, sandbox: str, payment_ids: set[str]
) -> int:
    async with session.get(f"{sandbox}/_sandbox/ledger/summary") as r:
        summary = await r.json()
    return sum(max(0, row["captures"] - 1) for pid, row in summary.items() if pid in payment_ids)


# --- the run -----------------------------------------------------------------
async def bench(opts: BenchOptions, endpoints: Endpoints) -> dict[str, Any]:
    await tansu_compat.prepare(endpoints.kafka_bootstrap, endpoints.kafka_broker)
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as control:
        await set_sandbox_latency(control, endpoints.sandbox_url, opts)
        console.print(f"raw aiokafka produce-then-consume, {opts.raw_count:,} records ...")
        raw_rate = await raw_kafka_rate(endpoints.kafka_bootstrap, opts.raw_count, opts.partitions)

        run = Run()
        records_before = await records_by_topic(endpoints.kafka_bootstrap)
        metrics_before = await worker_metrics(control, endpoints.worker_url)
        consumer = AIOKafkaConsumer(
            names.PAYMENT_STATUS,
            bootstrap_servers=endpoints.kafka_bootstrap,
            group_id=f"bench-{uuid.uuid4().hex}",
            auto_offset_reset="latest",
            max_partition_fetch_bytes=4 * 1024 * 1024,
        )
        await consumer.start()
        driver = Driver(opts, endpoints, run)
        await driver.start()
        stop_watching = asyncio.Event()
        try:
            await _until_assigned(consumer)
            watcher = asyncio.ensure_future(watch_statuses(consumer, run, stop_watching))
            started = time.perf_counter()
            driven = await _drive_with_progress(driver, opts, run, started)
            stop_watching.set()
            await watcher
        finally:
            await driver.stop()
            await consumer.stop()
        finished = max(run.settled_at.values(), default=time.perf_counter())
        metrics = await worker_metrics(control, endpoints.worker_url)
        duplicates = await duplicate_charges(control, endpoints.sandbox_url, set(run.accepted_at))
        records_after = await records_by_topic(endpoints.kafka_bootstrap)
    produced = {
        t: n - records_before.get(t, 0)
        for t, n in sorted(records_after.items())
        if n - records_before.get(t, 0) > 0
    }
    settled = max(1, len(run.settled_at))
    cpu_ms = (metrics.get("cpu_s", 0.0) - metrics_before.get("cpu_s", 0.0)) * 1000

    latencies = [
        (run.settled_at[p] - a) * 1000 for p, a in run.accepted_at.items() if p in run.settled_at
    ]
    seconds = max(finished - started, 1e-9)
    per_s = len(run.settled_at) / seconds
    minutes = per_minute(run.settled_at.values(), started, seconds)
    return {
        "via": opts.via,
        "mode": "open" if opts.rate else "closed",
        "offered_rate": opts.rate,
        "concurrency": None if opts.rate else opts.concurrency,
        "payments": driven,
        "accepted": len(run.accepted_at),
        "refused": run.refused,
        "settled": len(run.settled_at),
        "statuses": run.statuses,
        "seconds": round(seconds, 2),
        "payments_per_s": round(per_s, 1),
        "per_minute": minutes,
        "sustained": flatness(minutes),
        "worker_cpu_ms_per_payment": round(cpu_ms / settled, 2),
        "records_per_payment": round(sum(produced.values()) / settled, 1),
        "records_per_payment_by_topic": {t: round(n / settled, 2) for t, n in produced.items()},
        "p50_ms": round(percentile(latencies, 50), 1),
        "p95_ms": round(percentile(latencies, 95), 1),
        "p99_ms": round(percentile(latencies, 99), 1),
        "mean_ms": round(statistics.fmean(latencies), 1) if latencies else 0.0,
        "gateway_latency_ms": opts.latency_ms,
        "gateway_mix": opts.mix,
        "max_in_flight": int(metrics.get("peak", 0)),
        "worker_rss_mb": round(metrics.get("rss", 0) / 2**20, 1),
        "raw_kafka_msgs_per_s": round(raw_rate, 1),
        "ratio": round(per_s / raw_rate, 3) if raw_rate else None,
        "lost": len(run.accepted_at) - len(run.settled_at),
        "duplicate_charges": duplicates,
    }


async def _drive_with_progress(driver: Driver, opts: BenchOptions, run: Run, started: float) -> int:
    def budget(i: int) -> bool:
        if opts.count is not None and i >= opts.count:
            return False
        return opts.duration_s is None or time.perf_counter() - started < opts.duration_s

    total = opts.count
    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]}"),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    ) as progress:
        task = progress.add_task("settled", total=total, rate="")

        async def tick() -> None:
            while True:
                elapsed = time.perf_counter() - started
                done = len(run.settled_at)
                progress.update(
                    task,
                    completed=done,
                    total=total or max(len(run.accepted_at), 1),
                    rate=f"{done / elapsed:,.0f}/s, {len(run.accepted_at) - done} open",
                )
                await asyncio.sleep(0.25)

        ticker = asyncio.ensure_future(tick())
        try:
            drive = drive_open if opts.rate else drive_closed
            driven = await drive(driver, opts, budget)
            await _drain(run, opts)
        finally:
            ticker.cancel()
            progress.update(task, completed=len(run.settled_at))
    return driven


async def _drain(run: Run, opts: BenchOptions) -> None:
    """Wait for every accepted payment to settle, until nothing has moved for `drain_s`."""
    last, quiet_since = -1, time.monotonic()
    while len(run.settled_at) < len(run.accepted_at):
        if len(run.settled_at) != last:
            last, quiet_since = len(run.settled_at), time.monotonic()
        elif time.monotonic() - quiet_since > opts.drain_s:
            return
        await asyncio.sleep(0.1)


def print_summary(result: dict[str, Any]) -> None:
    table = Table(title="payments bench", show_header=True)
    table.add_column("measure")
    table.add_column("value", justify="right")
    for key, value in result.items():
        table.add_row(key, json.dumps(value) if isinstance(value, dict) else str(value))
    console.print(table)
    print(json.dumps(result, separators=(",", ":")), flush=True)


# --- webhooks ----------------------------------------------------------------
async def bench_webhooks(
    endpoints: Endpoints, *, count: int, concurrency: int, secret: str
) -> dict[str, Any]:
    """Verified Stripe webhooks per second into one ingress process (signed up front)."""
    import stripe

    run_id = uuid.uuid4().hex[:8]
    signed: list[tuple[bytes, str]] = []
    for i in range(count):
        body = json.dumps(
            {
                "id": f"evt_bench_{run_id}_{i}",
                "object": "event",
                "type": "payment_intent.succeeded",
                "created": int(time.time()),
                "data": {
                    "object": {
                        "id": f"pi_bench_{run_id}_{i}",
                        "object": "payment_intent",
                        "amount_received": 1000,
                        "currency": "usd",
                        "metadata": {"payment_id": f"pay_bench_{run_id}_{i}"},
                    }
                },
            }
        )
        header = stripe.WebhookSignature.generate_signature_header(body, secret)
        signed.append((body.encode(), header))

    codes: dict[int, int] = {}
    latencies: list[float] = []
    next_index = 0
    async with aiohttp.ClientSession(
        base_url=endpoints.ingress_url,
        connector=aiohttp.TCPConnector(limit=concurrency),
        timeout=aiohttp.ClientTimeout(total=30),
    ) as session:

        async def client() -> None:
            nonlocal next_index
            while next_index < count:
                body, header = signed[next_index]
                next_index += 1
                sent = time.perf_counter()
                async with session.post(
                    "/v1/webhooks/stripe",
                    data=body,
                    headers={"content-type": "application/json", "stripe-signature": header},
                ) as response:
                    await response.read()
                    codes[response.status] = codes.get(response.status, 0) + 1
                latencies.append((time.perf_counter() - sent) * 1000)

        started = time.perf_counter()
        await asyncio.gather(*(client() for _ in range(concurrency)))
        seconds = time.perf_counter() - started
    accepted = codes.get(200, 0)
    return {
        "webhooks": count,
        "accepted": accepted,
        "status_codes": {str(k): v for k, v in sorted(codes.items())},
        "seconds": round(seconds, 2),
        "webhooks_per_s": round(accepted / seconds, 1),
        "p50_ms": round(percentile(latencies, 50), 1),
        "p99_ms": round(percentile(latencies, 99), 1),
        "concurrency": concurrency,
    }


# --- the command -------------------------------------------------------------
def parse_mix(text: str) -> dict[str, float]:
    mix: dict[str, float] = {}
    for part in text.split(","):
        name, _, weight = part.partition("=")
        mix[name.strip()] = float(weight or 1)
    gateway_plan(mix)  # validates
    return mix


def run_from_cli(args: Any, settings: Any) -> int:
    """Start the embedded stack (or read a running one's endpoints), run, print, record."""
    from payments.devstack import Broker, DevOptions, DevStack
    from payments.procs import code_commit

    logging.getLogger("aiokafka").setLevel(logging.WARNING)  # joins and assignments: noise here
    stack = None
    if args.target:
        with open(args.target) as f:
            endpoints = Endpoints.from_json(json.load(f), settings.kafka_broker.value)
    else:
        state_dir = Path(args.state_dir)
        shutil.rmtree(state_dir, ignore_errors=True)  # a bench starts from empty tables
        stack = DevStack(
            settings,
            DevOptions.on_free_ports(state_dir, broker=Broker(args.broker or settings.dev_broker)),
        )
        try:
            stack.start()
        except BaseException:
            stack.stop()
            raise
        endpoints = Endpoints.from_json(stack.endpoints, settings.kafka_broker.value)
    try:
        if args.what == "state":
            if stack is None:
                raise SystemExit("payments bench state restarts the worker: no --target")
            result = bench_state(stack, settings, args.count or 500_000)
        elif args.what == "webhooks":
            result = asyncio.run(
                bench_webhooks(
                    endpoints,
                    count=args.count or 20_000,
                    concurrency=args.concurrency,
                    secret=settings.stripe_webhook_secret.get_secret_value(),
                )
            )
        else:
            opts = BenchOptions(
                via=args.via,
                count=args.count if args.count or args.duration else 10_000,
                duration_s=args.duration,
                rate=args.rate,
                concurrency=args.concurrency,
                latency_ms=args.latency_ms,
                mix=parse_mix(args.mix),
                drain_s=args.drain_s,
                raw_count=args.raw_count,
                partitions=settings.topic_partitions,
            )
            result = asyncio.run(bench(opts, endpoints))
    finally:
        if stack is not None:
            stack.stop()
    result["broker"] = stack.broker.value if stack and stack.broker else "external"
    result["commit"] = code_commit()
    print_summary(result)
    if args.json_out:
        with open(args.json_out, "a") as f:
            f.write(json.dumps(result) + "\n")
    ok = result.get("lost", 0) == 0 and result.get("duplicate_charges", 0) == 0
    return 0 if ok else 1


# --- state: recovery and restart with many payments ----------------------------
def synthetic_rows(n: int) -> Any:
    """`n` payments-table rows of settled payments: one real decision, copied with new ids."""
    from domain.money import Money
    from domain.payment import (
        CaptureMode,
        GatewayOutcome,
        Operation,
        PaymentRequested,
        command_id,
        decide,
    )
    from domain.status import PaymentStatus
    from tables.rows import payment_to_row

    request = PaymentRequested(
        payment_id="pay_template",
        order_id="order",
        user_id="user",
        amount=Money(1000, "USD"),
        gateway="stripe",
        method_token=OK_TOKENS["stripe"],
        capture=CaptureMode.AUTOMATIC,
        fingerprint="bench",
        requested_at_ms=int(time.time() * 1000),
    )
    pending = decide(None, request).state
    outcome = GatewayOutcome(
        payment_id="pay_template",
        command_id=command_id("pay_template", Operation.AUTHORIZE),
        operation=Operation.AUTHORIZE,
        status=PaymentStatus.SUCCEEDED,
        occurred_at_ms=request.requested_at_ms + 150,
        gateway_reference="pi_template",
        captured_amount=1000,
    )
    template = payment_to_row(decide(pending, outcome).state)  # type: ignore[arg-type]
    for i in range(n):
        payment_id = payment_id_for(f"bench-state-{i}")
        yield (
            payment_id,
            {
                **template,
                "payment_id": payment_id,
                "order_id": f"order-{i}",
                "user_id": f"user-{i % 10_000}",
                "gateway_reference": f"pi_{i}",
            },
        )


async def load_changelog(bootstrap: str, topic: str, n: int, partitions: int) -> float:
    """Write `n` rows to the payments changelog as faust would: the key JSON-encoded (faust's
    serializer for `str` keys), in the partition the pipeline gives the payment id."""
    from aiokafka.partitioner import DefaultPartitioner

    partition_of = DefaultPartitioner()
    every = list(range(partitions))
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
    await producer.start()
    started = time.perf_counter()
    try:
        pending = []
        for payment_id, row in synthetic_rows(n):
            pending.append(
                await producer.send(
                    topic,
                    json.dumps(row).encode(),
                    key=json.dumps(payment_id).encode(),
                    partition=partition_of(payment_id.encode(), every, every),
                )
            )
            if len(pending) >= 5_000:
                await asyncio.gather(*pending)
                pending.clear()
        await asyncio.gather(*pending)
    finally:
        await producer.stop()
    return time.perf_counter() - started


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def bench_state(stack: Any, settings: Any, n: int) -> dict[str, Any]:
    """Fill the payments table with `n` rows, then time a recovery from the changelog (empty
    local state) and a restart with local RocksDB state; worker RSS after each."""
    import httpx

    endpoints = stack.endpoints
    topic = f"{settings.app_id}-payments-changelog"
    console.print(f"writing {n:,} payments to {topic} ...")
    asyncio.run(tansu_compat.prepare(endpoints["kafka_bootstrap"], settings.kafka_broker.value))
    load_s = asyncio.run(
        load_changelog(endpoints["kafka_bootstrap"], topic, n, settings.topic_partitions)
    )
    worker = stack.child("worker")
    worker.ready_timeout_s = 1800
    console.print("restarting the worker with no local state (recovery from the changelog) ...")
    recover_s = stack.restart("worker", wipe_data=True)
    count = httpx.get(f"{endpoints['worker_url']}/tables/payments/digest/", timeout=600).json()
    rss_recovered = rss_mb(worker.proc.pid)
    console.print("restarting the worker with its local state ...")
    restart_s = stack.restart("worker")
    time.sleep(5)  # settle before reading memory
    return {
        "payments_in_state": count["count"],
        "changelog_write_s": round(load_s, 1),
        "recovery_from_changelog_s": round(recover_s, 1),
        "worker_rss_mb_after_recovery": round(rss_recovered, 1),
        "restart_with_local_state_s": round(restart_s, 1),
        "worker_rss_mb_after_restart": round(rss_mb(worker.proc.pid), 1),
    }
