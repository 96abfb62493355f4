"""`payments chaos`: steady load through the whole pipeline while faults are injected, then
the pipeline's invariants checked.

A load generator posts payments over HTTP at a steady rate (each with its own
`Idempotency-Key`, across the gateways, with sandbox tokens that charge), re-posts some of
them, and refunds some of those that succeeded. A client that gets a 503, a connection error
or no answer retries with the same key, as a real client would; a 202 is *accepted* and must
never be lost. Meanwhile faults are injected one after the other, each for a bounded window
(`SCENARIOS`):

- `worker_kill`: a worker SIGKILLed every few seconds, and started again;
- `ingress_restart`: the ingress killed (SIGKILL or SIGTERM) and started again;
- `redis_restart`: Redis shut down for the window, then started again (with its data, as a
  Redis with persistence would be; `redis_keep_data=False` loses it, as one without would);
- `gateway_errors`: bursts of 5xx answers and lost answers (timeouts after the work) from one
  gateway at a time;
- `gateway_outage`: one gateway answering 503 to everything;
- `webhook_chaos`: webhooks delayed, duplicated and reordered by the sandbox, plus forged
  ones sent to the ingress;
- `garbage`: undecodable records (random bytes, truncated Avro, unknown writer schema, empty
  and null values) produced to every input topic;
- `broker_kill`: Apache Kafka SIGKILLed mid-load and started again on the same data
  directory (skipped on Tansu, which keeps nothing across a restart). Producers, consumers,
  the ingress and the workers must reconnect by themselves.

When the load has stopped and the faults are undone, the run waits for the pipeline to
drain and checks (`Violation.kind` in brackets):

- every accepted payment reaches a final status, or `unknown` and then a resolution
  [`lost`, `not_final`, `unresolved_unknown`], and the read model shows it
  [`read_model_missing`, `read_model_stale`]; every accepted refund ends processed or failed
  [`refund_lost`, `refund_not_final`]; no worker ignored an input about one of them as being
  about an unknown payment or refund, which would mean its table had lost them
  [`state_lost`, from the workers' logs when the stack is ours]; no agent's input partition
  jumped over an offset without delivering it [`input_gap`, from the same logs];
- a retried request maps to the same payment or refund [`id_mismatch`], nothing is charged
  more than once [`double_charge`, and the audit's `double_capture`];
- `payments audit` (`payments.audit.compare`) finds nothing about the run's payments: money
  here and at the gateway agree, no refund exceeds its capture, no status goes backwards;
- the ingress answers a write with 202 or 503 and nothing else [`unexpected_status`], and
  always answers while it is up [`write_unanswered`]; it refuses forged webhooks
  [`forged_webhook_accepted`];
- nothing stays in the pipeline unprocessed [`unprocessed_records`: the worker group's
  committed offsets reach the end of every topic it reads], except what is in `dead_letter`
  with a reason: every garbage record is there, with headers naming its source topic,
  partition and offset and the error [`garbage_not_dead_lettered`,
  `dead_letter_without_reason`]; no webhook is given up [`webhook_given_up`];
- every fault was injected and undone [`fault_failed`].

`run_chaos` returns a `ChaosResult`, prints a summary and appends it as one JSON line to a
results file. For a few payments that did not end well, `ChaosResult.evidence` holds their
table rows, every record about them (and whether the worker group committed past it) and
their rows in the table's changelog.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import random
import re
import shutil
import signal
import statistics
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.structs import TopicPartition
from rich.console import Console
from rich.table import Table

from domain.errors import SerializationError
from domain.ids import payment_id_for, refund_id_for
from payments import audit, dlq
from payments.bench import OK_TOKENS
from payments.procs import Child, code_commit, free_port, http_ok
from schemas import codec, decode
from schemas.codec import SCHEMA_DIR
from streams import names, tansu_compat
from streams.readmodel import refund_key
from streams.scan import partitions_of, read_topic

log = logging.getLogger(__name__)
console = Console(stderr=True)

SCENARIOS = (
    "worker_kill",
    "ingress_restart",
    "redis_restart",
    "gateway_errors",
    "gateway_outage",
    "webhook_chaos",
    "garbage",
    "broker_kill",
)
# These need the processes of a stack this run can restart (not a --target one).
PROCESS_SCENARIOS = frozenset({"worker_kill", "ingress_restart", "redis_restart", "broker_kill"})

# The environment a chaos stack runs with: a janitor that resolves `unknown` payments within
# seconds, not hours, and circuits that probe again soon after an outage. Stale pending
# payments are left alone for two minutes: a worker that was killed leaves a backlog of them,
# and checking each at the gateway (Square: a scan of ListPayments) starves the worker.
CHAOS_ENV = {
    "PAYMENTS_JANITOR_SCHEDULE_S": "1,2,4,8",
    "PAYMENTS_JANITOR_STALE_AFTER_S": "120",
    "PAYMENTS_JANITOR_NOT_CHARGED_AFTER_S": "5",
    "PAYMENTS_BREAKER_RESET_S": "3",
}

# Automatic capture: `authorized` is a step on the way, not an answer.
FINAL = frozenset({"succeeded", "failed", "canceled", "partially_refunded", "refunded", "disputed"})
REFUND_FINAL = frozenset({"processed", "failed"})
GATEWAYS = tuple(OK_TOKENS)

# Each input topic and the schema its records must have.
INPUT_SCHEMAS = {
    names.PAYMENT_INITIATION: "payment_requested",
    names.PAYMENT_ACTIONS: "payment_action",
    names.REFUND_REQUEST: "refund_request",
    names.GATEWAY_EVENTS: "gateway_event",
    names.GATEWAY_RESULTS: "gateway_result",
    names.GATEWAY_COMMANDS: "gateway_command",
}
# The janitor's answers from the gateways, once there is a janitor.
if hasattr(names, "PAYMENT_CHECKS") and (SCHEMA_DIR / "payment_check.avsc").exists():
    INPUT_SCHEMAS[names.PAYMENT_CHECKS] = "payment_check"
# The topics the worker's consumer group reads; all must be consumed to their end.
CONSUMED_TOPICS = (*INPUT_SCHEMAS, names.PAYMENT_STATUS, names.REFUND_STATUS)


# --- options, results --------------------------------------------------------
@dataclass(frozen=True)
class ChaosOptions:
    duration_s: float = 60.0  # load at least this long; each scenario gets one window at least
    scenarios: tuple[str, ...] = SCENARIOS
    rate: float = 5.0  # payments offered per second
    refund_share: float = 0.25  # of accepted payments, refunded once they succeed
    repost_share: float = 0.15  # of accepted payments, posted again with the same key
    fault_s: float = 10.0  # each fault's window
    calm_s: float = 4.0  # between windows, and before the first
    kill_every_s: float = 3.0  # worker_kill / ingress_restart: between kills in a window
    redis_keep_data: bool = True  # redis_restart: SHUTDOWN SAVE and reload, or lose it all
    garbage_per_kind: int = 1  # records of each garbage kind, per input topic, per window
    workers: int = 1  # run this many workers (one group); worker_kill picks one at random
    request_timeout_s: float = 15.0  # a write with no answer after this is `write_unanswered`
    retry_grace_s: float = 45.0  # after the load: how long clients keep retrying
    drain_s: float = 120.0  # at most this long for everything to settle
    quiet_s: float = 30.0  # ... or until nothing has moved for this long
    app_id: str = "payments"  # the worker's consumer group
    seed: int | None = None

    def __post_init__(self) -> None:
        unknown = set(self.scenarios) - set(SCENARIOS)
        if unknown:
            raise ValueError(f"unknown scenario(s) {sorted(unknown)}; known: {list(SCENARIOS)}")
        if self.rate <= 0 or self.fault_s <= 0 or self.duration_s < 0:
            raise ValueError("rate and fault_s must be > 0, duration_s >= 0")


@dataclass(frozen=True)
class Violation:
    kind: str
    subject: str  # a payment, refund, topic partition, scenario ...
    detail: str


@dataclass(frozen=True)
class Endpoints:
    ingress_url: str
    kafka_bootstrap: str
    redis_url: str
    sandbox_url: str
    worker_url: str
    admin_api_key: str = ""  # the ingress API key the load uses (payments dev makes one)

    @classmethod
    def from_json(cls, data: Mapping[str, str]) -> Endpoints:
        fields = dataclasses.fields(cls)
        return cls(**{f.name: data[f.name] for f in fields if f.name in data})

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.admin_api_key}"} if self.admin_api_key else {}


@dataclass
class ChaosResult:
    run_id: str
    seed: int
    scenarios: list[str]
    started_at: float  # epoch seconds
    broker: str = ""  # kafka, tansu, or external (a --target stack's)
    commit: str = ""  # the code under test (git HEAD, `+dirty` with local changes)
    workers: int = 1
    load_s: float = 0.0
    drain_s: float = 0.0
    total_s: float = 0.0
    offered: int = 0  # payments the load generator tried
    accepted: int = 0  # answered 202
    abandoned: int = 0  # never answered 202 before the clients gave up
    reposts: int = 0  # accepted payments posted again with the same key
    refunds_accepted: int = 0
    http: dict[str, int] = field(default_factory=dict)  # write outcomes: 202, 503, timeout ...
    http_by_phase: dict[str, dict[str, int]] = field(default_factory=dict)  # ... per window
    http_samples: dict[str, list[str]] = field(default_factory=dict)  # a few non-202 answers
    final_statuses: dict[str, int] = field(default_factory=dict)
    refund_statuses: dict[str, int] = field(default_factory=dict)
    resolved_unknowns: int = 0  # went through `unknown` and then got an answer
    latency_ms: dict[str, float] = field(default_factory=dict)  # accepted -> final
    faults: dict[str, int] = field(default_factory=dict)  # injections per kind
    fault_log: list[dict[str, Any]] = field(default_factory=list)
    garbage_produced: int = 0
    garbage_dead_lettered: int = 0
    unexpected_dead_letters: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    violations: list[Violation] = field(default_factory=list)
    # For a few payments that did not end well: their table rows and every record about them.
    evidence: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.violations

    def violation_counts(self) -> dict[str, int]:
        return dict(Counter(v.kind for v in self.violations))

    def to_json(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["ok"] = self.ok
        out["violation_counts"] = self.violation_counts()
        return out


# --- what the load generator did ---------------------------------------------
@dataclass
class Accepted:
    key: str
    payment_id: str
    gateway: str
    amount: int
    accepted_at: float  # monotonic


@dataclass
class RefundAccepted:
    key: str
    refund_id: str
    payment_id: str
    amount: int | None


@dataclass
class Record:
    """Everything the clients and the fault injector saw; checked at the end."""

    attempted: dict[str, str] = field(default_factory=dict)  # payment id -> key
    accepted: dict[str, Accepted] = field(default_factory=dict)
    refunds: dict[str, RefundAccepted] = field(default_factory=dict)
    http: Counter[str] = field(default_factory=Counter)
    phase: str = "calm"  # the fault window now open, or "calm"
    http_by_phase: dict[str, Counter[str]] = field(default_factory=dict)
    samples: dict[str, list[str]] = field(default_factory=dict)  # a few non-202 answers
    reposts: int = 0
    abandoned: int = 0
    faults: Counter[str] = field(default_factory=Counter)
    fault_log: list[dict[str, Any]] = field(default_factory=list)
    garbage: list[Garbage] = field(default_factory=list)
    forged: int = 0
    notes: list[str] = field(default_factory=list)
    violations: list[Violation] = field(default_factory=list)

    def answered(self, outcome: str, path: str = "", body: str = "") -> None:
        self.http[outcome] += 1
        self.http_by_phase.setdefault(self.phase, Counter())[outcome] += 1
        if outcome != "202":
            kept = self.samples.setdefault(f"{self.phase} {outcome}", [])
            if len(kept) < 3:
                kept.append(f"{path} {body[:200]}".strip())

    def violate(self, kind: str, subject: str, detail: str) -> None:
        self.violations.append(Violation(kind, subject, detail))
        log.warning("violation %s %s: %s", kind, subject, detail)


@dataclass(frozen=True)
class Garbage:
    topic: str
    partition: int
    offset: int
    key: bytes
    kind: str


# --- watching payment_status and refund_status --------------------------------
class StatusWatcher:
    """Every `payment_status` and `refund_status` record from the run's start, as it comes."""

    def __init__(self, bootstrap: str) -> None:
        self._bootstrap = bootstrap
        self.payments: dict[str, list[tuple[int, str]]] = {}  # payment id -> (seq, status)
        self.final_at: dict[str, float] = {}  # monotonic, first final status seen
        self.refunds: dict[str, tuple[int, str]] = {}  # refund id -> latest (seq, status)
        self.records = 0
        self._consumer: AIOKafkaConsumer | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self._bootstrap,
            group_id=None,
            enable_auto_commit=False,
            client_id=f"payments-chaos-{uuid.uuid4().hex[:6]}",
        )
        await consumer.start()
        tps = await partitions_of(consumer, names.PAYMENT_STATUS, names.REFUND_STATUS)
        consumer.assign(tps)
        # From the end as it is now: the run's records all come later.
        for tp, end in (await consumer.end_offsets(tps)).items():
            consumer.seek(tp, end)
        self._consumer = consumer
        self._task = asyncio.ensure_future(self._watch())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._consumer is not None:
            await self._consumer.stop()

    async def _watch(self) -> None:
        assert self._consumer is not None
        while True:
            try:
                batch = await self._consumer.getmany(timeout_ms=200, max_records=5000)
            except Exception as exc:  # keep watching: the broker is never a fault target
                log.warning("status watcher: %s", exc)
                await asyncio.sleep(1)
                continue
            now = time.monotonic()
            for tp, part in batch.items():
                for r in part:
                    self.records += 1
                    try:
                        if tp.topic == names.PAYMENT_STATUS:
                            rec = decode("payment_status", r.value, dict(r.headers))
                            pid = rec["payment_id"]
                            self.payments.setdefault(pid, []).append((rec["seq"], rec["status"]))
                            if rec["status"] in FINAL:
                                self.final_at.setdefault(pid, now)
                        else:
                            rec = decode("refund_status", r.value, dict(r.headers))
                            before = self.refunds.get(rec["refund_id"])
                            if before is None or rec["seq"] > before[0]:
                                self.refunds[rec["refund_id"]] = (rec["seq"], rec["status"])
                    except SerializationError as exc:
                        log.warning("status watcher: undecodable record: %s", exc)

    def latest(self, payment_id: str) -> str | None:
        seen = self.payments.get(payment_id)
        return max(seen)[1] if seen else None


# --- processes ----------------------------------------------------------------
class Processes:
    """Kill and restart the stack's children. Started from the main thread (see procs.py:
    a child gets SIGTERM when the thread that started it ends)."""

    def __init__(self, stack: Any | None, record: Record, keep_redis_data: bool) -> None:
        self.stack = stack
        self.record = record
        self.keep_redis_data = keep_redis_data
        self.ingress_epoch = 0  # bumped whenever the ingress is taken down
        self.twins: list[Child] = []
        self.twin_urls: list[str] = []

    def workers(self) -> list[Child]:
        assert self.stack is not None
        return [self.stack.child("worker"), *self.twins]

    async def ready(self, child: Child) -> None:
        deadline = time.monotonic() + child.ready_timeout_s
        while True:
            if not child.alive():
                code = child.proc.returncode if child.proc is not None else None
                raise RuntimeError(f"{child.name} exited with code {code}; see {child.log_path}")
            if child.probe is None or await asyncio.to_thread(child.probe):
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"{child.name} not ready after {child.ready_timeout_s:.0f}s")
            await asyncio.sleep(0.2)

    async def restart(self, child: Child, sig: int, down_s: float = 0.0) -> None:
        await asyncio.to_thread(child.stop, 15.0, sig)
        if down_s:
            await asyncio.sleep(down_s)
        child.start()
        await self.ready(child)

    async def add_workers(self, n: int) -> None:
        """Start `n` more workers in the same group, each with its own state directory."""
        stack = self.stack
        if stack is None or n <= 0:
            return
        first = stack.child("worker")
        for i in range(n):
            port = free_port()
            url = f"http://127.0.0.1:{port}/readyz/"
            data_dir = Path(stack.data_dir).with_name(f"data-worker-{i + 2}")
            shutil.rmtree(data_dir, ignore_errors=True)  # stale against a fresh broker
            twin = dataclasses.replace(
                first,
                name=f"worker-{i + 2}",
                log_path=first.log_path.with_name(f"worker-{i + 2}.log"),
                env={
                    **first.env,
                    "PAYMENTS_WORKER_WEB_PORT": str(port),
                    "PAYMENTS_DATA_DIR": str(data_dir),
                },
                probe=lambda url=url: http_ok(url),
                ready_timeout_s=180,
                proc=None,
            )
            self.twins.append(twin)
            self.twin_urls.append(f"http://127.0.0.1:{port}")
            twin.start()
        for twin in self.twins:
            await self.ready(twin)

    async def stop_twins(self) -> None:
        for twin in self.twins:
            await asyncio.to_thread(twin.stop)

    async def redis_down(self) -> Callable[[], Awaitable[None]]:
        """Shut Redis down; returns the coroutine function that starts it again.

        The dev stack runs Redis without persistence. To keep its data, as a Redis with
        persistence would, it is pointed at a directory of the run's, saved on shutdown and
        started again from there (the child's argv gains `--dir`)."""
        import redis.asyncio as aioredis
        from redis.exceptions import ResponseError

        assert self.stack is not None
        child = self.stack.child("redis")
        client = aioredis.from_url(self.stack.endpoints["redis_url"])
        try:
            save = self.keep_redis_data
            if save:
                where = (Path(self.stack.opts.state_dir) / "redis").resolve()
                where.mkdir(parents=True, exist_ok=True)
                try:
                    await client.config_set("dir", str(where))
                except ResponseError as exc:  # Redis 7 protects `dir` by default
                    save = False
                    note = f"redis_restart loses Redis's data: CONFIG SET dir refused ({exc})"
                    if note not in self.record.notes:
                        self.record.notes.append(note)
                if save and "--dir" not in child.argv:
                    child.argv = [*child.argv, "--dir", str(where)]
            await _redis_shutdown(client, save=save)
        finally:
            with contextlib.suppress(Exception):
                await client.aclose()
        await asyncio.to_thread(_wait_exit, child, 10.0)
        if not self.keep_redis_data:
            # A stack on Apache Kafka runs Redis with an append-only file: losing the data
            # means losing that file too.
            shutil.rmtree(self.stack.redis_dir, ignore_errors=True)

        async def up() -> None:
            child.start()
            await self.ready(child)

        return up


async def _redis_shutdown(client: Any, *, save: bool) -> None:
    from redis.exceptions import ConnectionError as RedisConnectionError

    with contextlib.suppress(RedisConnectionError):  # the server closes the connection
        await client.shutdown(save=save, nosave=not save)


def _wait_exit(child: Child, timeout_s: float) -> None:
    if child.proc is None:
        return
    try:
        child.proc.wait(timeout_s)
    except Exception:
        child.stop(sig=signal.SIGKILL)


# --- garbage ------------------------------------------------------------------
def example_record(name: str) -> dict[str, Any]:
    """A valid record of schema `name`, built from its `.avsc` (every field filled in)."""
    raw = json.loads((SCHEMA_DIR / f"{name}.avsc").read_text())
    named: dict[str, Any] = {}

    def value(schema: Any) -> Any:
        if isinstance(schema, list):  # a union: the first non-null branch
            branches = [b for b in schema if b != "null"]
            return value(branches[0]) if branches else None
        if isinstance(schema, str):
            primitives: dict[str, Any] = {
                "null": None,
                "boolean": True,
                "int": 1,
                "long": 1,
                "float": 1.0,
                "double": 1.0,
                "bytes": b"chaos",
                "string": "chaos",
            }
            if schema in primitives:
                return primitives[schema]
            return value(named[schema.split(".")[-1]])
        kind = schema["type"]
        if kind in ("record", "enum", "fixed"):
            named[schema["name"]] = schema
        if kind == "record":
            return {f["name"]: value(f["type"]) for f in schema["fields"]}
        if kind == "enum":
            return schema["symbols"][0]
        if kind == "fixed":
            return b"\0" * int(schema["size"])
        if kind == "array":
            return [value(schema["items"])]
        if kind == "map":
            return {"k": value(schema["values"])}
        return value(kind)

    record = value(raw)
    assert isinstance(record, dict)
    return record


def _undecodable(schema: str, data: bytes | None, headers: dict[str, bytes]) -> bool:
    try:
        decode(schema, data, headers)
    except SerializationError:
        return True
    return False


def garbage_values(
    schema: str, rng: random.Random
) -> list[tuple[str, bytes | None, list[tuple[str, bytes]]]]:
    """(kind, value, headers) records that the pipeline cannot decode as `schema`."""
    c = codec(schema)
    valid = c.encode(example_record(schema))
    out: list[tuple[str, bytes | None, list[tuple[str, bytes]]]] = []
    for _ in range(100):  # random bytes that happen to decode are not garbage: draw again
        noise = bytes(rng.randrange(256) for _ in range(rng.randint(1, 64)))
        if _undecodable(schema, noise, dict(c.headers)):
            out.append(("random_bytes", noise, c.headers))
            break
    cut = len(valid) // 2
    while cut > 1 and not _undecodable(schema, valid[:cut], dict(c.headers)):
        cut //= 2
    out.append(("truncated_avro", valid[:cut], c.headers))
    out.append(("unknown_schema", valid, [("avro-schema", b"payments.v1.NoSuchRecord.v9")]))
    out.append(("empty_value", b"", c.headers))
    out.append(("null_value", None, c.headers))
    return out


async def produce_garbage(
    bootstrap: str, run_id: str, rng: random.Random, per_kind: int, record: Record
) -> int:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    sent = 0
    try:
        for topic, schema in INPUT_SCHEMAS.items():
            for i in range(per_kind):
                for kind, value, headers in garbage_values(schema, rng):
                    key = f"chaos-garbage-{run_id}-{topic}-{kind}-{len(record.garbage)}-{i}"
                    meta = await producer.send_and_wait(
                        topic, value, key=key.encode(), headers=headers
                    )
                    record.garbage.append(
                        Garbage(topic, meta.partition, meta.offset, key.encode(), kind)
                    )
                    sent += 1
    finally:
        await producer.stop()
    return sent


# --- the load -------------------------------------------------------------------
class Load:
    """Open-loop payments over HTTP; retries like a real client; some reposts and refunds."""

    def __init__(
        self,
        opts: ChaosOptions,
        endpoints: Endpoints,
        record: Record,
        watcher: StatusWatcher,
        processes: Processes,
        run_id: str,
        rng: random.Random,
    ) -> None:
        self.opts = opts
        self.endpoints = endpoints
        self.record = record
        self.watcher = watcher
        self.processes = processes
        self.run_id = run_id
        self.rng = rng
        self.give_up_at = float("inf")
        self._http: aiohttp.ClientSession | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self.offered = 0

    async def __aenter__(self) -> Load:
        self._http = aiohttp.ClientSession(
            base_url=self.endpoints.ingress_url,
            connector=aiohttp.TCPConnector(limit=256),
            headers=self.endpoints.auth,
        )
        return self

    async def __aexit__(self, *exc: object) -> None:
        for task in list(self._tasks):
            task.cancel()
        if self._http is not None:
            await self._http.close()

    def _spawn(self, coro: Awaitable[None]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            exc = task.exception()
            self.record.violate("harness_error", "load", f"{type(exc).__name__}: {exc}")

    async def run(self, keep_going: Callable[[], bool]) -> None:
        """Offer `rate` payments a second while `keep_going()`."""
        interval = 1.0 / self.opts.rate
        started = time.monotonic()
        i = 0
        while keep_going():
            due = started + i * interval
            delay = due - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            self._spawn(self.payment(i))
            i += 1
        self.offered = i

    async def settle(self, grace_s: float) -> None:
        """Let every client finish (retrying at most `grace_s` more)."""
        self.give_up_at = time.monotonic() + grace_s
        while self._tasks:
            await asyncio.wait(set(self._tasks), timeout=1)

    async def write(
        self, path: str, body: dict[str, Any], key: str, retry_on: frozenset[int] = frozenset()
    ) -> dict[str, Any] | None:
        """POST until 202 (returns its body); None if it was refused for good or given up.

        503, a connection error and no answer are retried with the same key, and so are the
        statuses in `retry_on`; any other answer is a violation."""
        assert self._http is not None
        delay = 0.2
        while True:
            epoch = self.processes.ingress_epoch
            try:
                async with self._http.post(
                    path,
                    json=body,
                    headers={"Idempotency-Key": key},
                    timeout=aiohttp.ClientTimeout(total=self.opts.request_timeout_s),
                ) as r:
                    text = await r.text()
                    status = r.status
            except TimeoutError:
                self.record.answered("timeout")
                if epoch == self.processes.ingress_epoch:
                    self.record.violate(
                        "write_unanswered",
                        key,
                        f"POST {path}: no answer in {self.opts.request_timeout_s:g}s while the "
                        "ingress was up",
                    )
            except aiohttp.ClientError as exc:
                self.record.answered(f"connection_error:{type(exc).__name__}")
            else:
                self.record.answered(str(status), path, text)
                if status == 202:
                    answer: dict[str, Any] = json.loads(text)
                    return answer
                if status != 503 and status not in retry_on:
                    self.record.violate(
                        "unexpected_status", key, f"POST {path}: {status} {text[:300]}"
                    )
                    if status < 500:
                        return None  # the request itself is wrong: retrying cannot help
            if time.monotonic() > self.give_up_at:
                return None
            await asyncio.sleep(delay * (0.5 + self.rng.random()))
            delay = min(delay * 2, 2.0)

    async def payment(self, i: int) -> None:
        gateway = GATEWAYS[i % len(GATEWAYS)]
        key = f"chaos-{self.run_id}-{i}"
        payment_id = payment_id_for(key)
        amount = self.rng.randint(500, 5000)
        body: dict[str, Any] = {
            "order_id": f"chaos-{self.run_id}-{i}",
            "user_id": f"chaos-user-{i % 50}",
            "amount": amount,
            "currency": "USD",
            "gateway": gateway,
            "payment_method": {"type": "card", "token": OK_TOKENS[gateway]},
            "metadata": {"chaos_run": self.run_id},
        }
        self.record.attempted[payment_id] = key
        answer = await self.write("/v1/payments", body, key)
        if answer is None:
            self.record.abandoned += 1
            return
        if answer.get("payment_id") != payment_id:
            self.record.violate(
                "id_mismatch", payment_id, f"202 named {answer.get('payment_id')} for {key}"
            )
            return
        self.record.accepted[payment_id] = Accepted(
            key, payment_id, gateway, amount, time.monotonic()
        )
        if self.rng.random() < self.opts.repost_share:
            await self.repost(payment_id, body, key)
        if self.rng.random() < self.opts.refund_share:
            await self.refunds(payment_id, key, amount)

    async def repost(self, payment_id: str, body: dict[str, Any], key: str) -> None:
        """A client that lost the first answer posts again: same key, same payment."""
        await asyncio.sleep(self.rng.uniform(0, 1.5))
        self.record.reposts += 1
        again = await self.write("/v1/payments", body, key)
        if again is not None and again.get("payment_id") != payment_id:
            self.record.violate(
                "id_mismatch", payment_id, f"repost of {key} answered {again.get('payment_id')}"
            )

    async def refunds(self, payment_id: str, key: str, amount: int) -> None:
        """Once it succeeded: a full refund, a partial one, or two partials that together
        exceed the capture (the second must fail), sometimes posted twice."""
        deadline = time.monotonic() + 60
        while self.watcher.latest(payment_id) != "succeeded":
            status = self.watcher.latest(payment_id)
            late = time.monotonic() > min(deadline, self.give_up_at)
            if late or (status in FINAL and status != "succeeded"):
                return
            await asyncio.sleep(0.3)
        plan = self.rng.choice(["full", "partial", "two_partials"])
        plans: dict[str, list[dict[str, Any]]] = {
            "full": [{}],
            "partial": [{"amount": max(1, amount // 3), "reason": "requested_by_customer"}],
            "two_partials": [{"amount": max(1, amount * 3 // 5)}] * 2,
        }
        bodies = plans[plan]
        await asyncio.gather(
            *(self.refund(payment_id, f"{key}-refund-{j}", b) for j, b in enumerate(bodies))
        )

    async def refund(self, payment_id: str, key: str, body: dict[str, Any]) -> None:
        path = f"/v1/payments/{payment_id}/refunds"
        posts = 2 if self.rng.random() < self.opts.repost_share else 1
        # 404: the read model may not show the payment yet if Redis was down when it was
        # accepted (the projection writes it when Redis is back).
        answers = await asyncio.gather(
            *(self.write(path, body, key, frozenset({404})) for _ in range(posts))
        )
        expected = refund_id_for(payment_id, key)
        for answer in answers:
            if answer is None:
                continue
            if answer.get("refund_id") != expected:
                self.record.violate(
                    "id_mismatch", payment_id, f"refund {key} answered {answer.get('refund_id')}"
                )
            self.record.refunds[expected] = RefundAccepted(
                key, expected, payment_id, body.get("amount")
            )


# --- faults -----------------------------------------------------------------------
class Injector:
    """Runs the scenarios one window after the other and undoes each."""

    def __init__(
        self,
        opts: ChaosOptions,
        endpoints: Endpoints,
        record: Record,
        processes: Processes,
        run_id: str,
        rng: random.Random,
    ) -> None:
        self.opts = opts
        self.endpoints = endpoints
        self.record = record
        self.processes = processes
        self.run_id = run_id
        self.rng = rng
        self.t0 = time.monotonic()
        self._http: aiohttp.ClientSession | None = None
        self._faults_before: dict[str, Any] = {}
        self._policy_before: dict[str, Any] = {}
        self._round = 0

    async def run(self, until: float) -> None:
        """Every scenario at least once; more rounds while there is time before `until`."""
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=15)) as http:
            self._http = http
            self._faults_before = await self._get("/_sandbox/faults")
            self._policy_before = await self._get("/_sandbox/webhooks/policy")
            scenarios = list(self.opts.scenarios)
            await asyncio.sleep(self.opts.calm_s)
            done = 0
            while scenarios and (done < len(scenarios) or time.monotonic() < until):
                name = scenarios[done % len(scenarios)]
                self._round = done // len(scenarios)
                await self._window(name)
                done += 1
                await asyncio.sleep(self.opts.calm_s)

    async def _window(self, name: str) -> None:
        started = time.monotonic()
        end = started + self.opts.fault_s
        entry: dict[str, Any] = {"scenario": name, "at_s": round(started - self.t0, 1)}
        console.print(f"[bold magenta]chaos[/]: {name} for {self.opts.fault_s:.0f}s")
        self.record.phase = name
        try:
            detail = await getattr(self, f"_{name}")(end)
            entry.update(detail)
        except Exception as exc:
            entry["error"] = f"{type(exc).__name__}: {exc}"
            self.record.violate("fault_failed", name, entry["error"])
        finally:
            self.record.phase = "calm"
        entry["took_s"] = round(time.monotonic() - started, 1)
        self.record.fault_log.append(entry)

    async def _get(self, path: str) -> Any:
        assert self._http is not None
        async with self._http.get(self.endpoints.sandbox_url + path) as r:
            r.raise_for_status()
            return await r.json()

    async def _post(self, path: str, body: Mapping[str, Any]) -> Any:
        assert self._http is not None
        async with self._http.post(self.endpoints.sandbox_url + path, json=dict(body)) as r:
            r.raise_for_status()
            return await r.json()

    async def _restore_gateway(self, gateway: str) -> None:
        await self._post(f"/_sandbox/faults/{gateway}", self._faults_before[gateway])

    def _skip(self, name: str, why: str) -> dict[str, Any]:
        note = f"{name} skipped: {why}"
        if note not in self.record.notes:
            self.record.notes.append(note)
        return {"skipped": why}

    # the scenarios: each returns what it did, for the log
    async def _worker_kill(self, end: float) -> dict[str, Any]:
        """SIGKILL a worker every few seconds, ready or not (a kill may land in its start-up
        or its table recovery), start it again at once; at the end wait until all are ready."""
        if self.processes.stack is None:
            return self._skip("worker_kill", "no stack of ours to restart")
        kills: list[str] = []
        while time.monotonic() < end:
            victim = self.rng.choice(self.processes.workers())
            await asyncio.to_thread(victim.stop, 15.0, signal.SIGKILL)
            victim.start()
            kills.append(victim.name)
            self.record.faults["worker_kill"] += 1
            await asyncio.sleep(self.opts.kill_every_s)
        ready_in = time.monotonic()
        for worker in self.processes.workers():
            await self.processes.ready(worker)
        return {"killed": kills, "ready_after_s": round(time.monotonic() - ready_in, 1)}

    async def _ingress_restart(self, end: float) -> dict[str, Any]:
        if self.processes.stack is None:
            return self._skip("ingress_restart", "no stack of ours to restart")
        child = self.processes.stack.child("ingress")
        signals: list[str] = []
        while time.monotonic() < end:
            sig = signal.SIGKILL if len(signals) % 2 == 0 else signal.SIGTERM
            self.processes.ingress_epoch += 1
            await self.processes.restart(child, sig, down_s=1.0)
            self.processes.ingress_epoch += 1
            signals.append(sig.name)
            self.record.faults["ingress_restart"] += 1
            await asyncio.sleep(self.opts.kill_every_s)
        return {"signals": signals}

    async def _redis_restart(self, end: float) -> dict[str, Any]:
        stack = self.processes.stack
        if stack is None or stack.opts.external_redis:
            return self._skip("redis_restart", "Redis is not a child of this run's stack")
        up = await self.processes.redis_down()
        self.record.faults["redis_restart"] += 1
        try:
            await asyncio.sleep(max(0.0, end - time.monotonic()))
        finally:
            await up()
        return {"kept_data": self.processes.keep_redis_data}

    async def _broker_kill(self, end: float) -> dict[str, Any]:
        """SIGKILL Apache Kafka (no clean shutdown, no flush), keep it down for a while, start
        it again on the same data directory; nothing else is touched, so every client must
        find its way back by itself."""
        stack = self.processes.stack
        if stack is None or stack.opts.external_kafka:
            return self._skip("broker_kill", "the broker is not a child of this run's stack")
        if getattr(stack, "broker", None) != "kafka":
            return self._skip("broker_kill", "Tansu keeps nothing across a restart")
        child = stack.child("kafka")
        await asyncio.to_thread(child.stop, 15.0, signal.SIGKILL)
        self.record.faults["broker_kill"] += 1
        down_s = max(1.0, min(5.0, end - time.monotonic()))
        await asyncio.sleep(down_s)
        restarted = time.monotonic()
        child.start()
        await self.processes.ready(child)
        ready_s = time.monotonic() - restarted
        await asyncio.sleep(max(0.0, end - time.monotonic()))
        return {"down_s": round(down_s, 1), "ready_after_s": round(ready_s, 1)}

    async def _gateway_errors(self, end: float) -> dict[str, Any]:
        bursts: list[str] = []
        try:
            while time.monotonic() < end:
                gateway = self.rng.choice(GATEWAYS)
                await self._post(
                    f"/_sandbox/faults/{gateway}",
                    {
                        "error_rate": 0.5,
                        "timeout_rate": 0.1,
                        "timeout_s": 3.0,
                        "timeout_mode": "after",
                    },
                )
                bursts.append(gateway)
                self.record.faults["gateway_errors"] += 1
                await asyncio.sleep(min(2.0, max(0.0, end - time.monotonic())))
                await self._restore_gateway(gateway)
                await asyncio.sleep(min(1.0, max(0.0, end - time.monotonic())))
        finally:
            for gateway in GATEWAYS:
                await self._restore_gateway(gateway)
        return {"bursts": bursts}

    async def _gateway_outage(self, end: float) -> dict[str, Any]:
        gateway = GATEWAYS[self._round % len(GATEWAYS)]
        await self._post(f"/_sandbox/faults/{gateway}", {"unavailable": True})
        self.record.faults["gateway_outage"] += 1
        try:
            await asyncio.sleep(max(0.0, end - time.monotonic()))
        finally:
            await self._restore_gateway(gateway)
        return {"gateway": gateway}

    async def _webhook_chaos(self, end: float) -> dict[str, Any]:
        await self._post(
            "/_sandbox/webhooks/policy",
            {"duplicates": 3, "reorder_window_ms": 400, "delay_ms": 1500},
        )
        self.record.faults["webhook_chaos"] += 1
        forged = 0
        try:
            while time.monotonic() < end:
                await self._forge_webhook()
                forged += 1
                await asyncio.sleep(1.0)
        finally:
            await self._post("/_sandbox/webhooks/policy", self._policy_before)
        return {"policy": "duplicates=3, reorder 400 ms, delay 1.5 s", "forged": forged}

    async def _forge_webhook(self) -> None:
        """A `payment_intent.succeeded` for one of our payments, signed with the wrong key."""
        assert self._http is not None
        accepted = list(self.record.accepted)
        target = self.rng.choice(accepted) if accepted else "pay_forged"
        body = json.dumps(
            {
                "id": f"evt_forged_{uuid.uuid4().hex}",
                "object": "event",
                "type": "payment_intent.succeeded",
                "created": int(time.time()),
                "data": {
                    "object": {
                        "id": f"pi_forged_{uuid.uuid4().hex[:8]}",
                        "object": "payment_intent",
                        "amount_received": 1,
                        "currency": "usd",
                        "metadata": {"payment_id": target},
                    }
                },
            }
        )
        header = f"t={int(time.time())},v1={'0' * 64}"
        self.record.forged += 1
        try:
            async with self._http.post(
                f"{self.endpoints.ingress_url}/v1/webhooks/stripe",
                data=body,
                headers={"content-type": "application/json", "stripe-signature": header},
            ) as r:
                text = await r.text()
                if 200 <= r.status < 300:
                    self.record.violate(
                        "forged_webhook_accepted", target, f"{r.status} {text[:200]}"
                    )
        except aiohttp.ClientError:
            pass  # the ingress may be restarting; nothing was accepted

    async def _garbage(self, end: float) -> dict[str, Any]:
        sent = await produce_garbage(
            self.endpoints.kafka_bootstrap,
            self.run_id,
            self.rng,
            self.opts.garbage_per_kind,
            self.record,
        )
        self.record.faults["garbage"] += sent
        await asyncio.sleep(max(0.0, end - time.monotonic()))
        return {"records": sent}


# --- the checks -------------------------------------------------------------------
async def drain(
    opts: ChaosOptions, record: Record, watcher: StatusWatcher, sandbox_url: str
) -> float:
    """Wait until every accepted payment and refund is final and no webhook is on its way,
    or `drain_s` passed, or nothing moved for `quiet_s`. Returns the seconds waited."""
    started = time.monotonic()
    last_records, quiet_since = -1, started
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=15)) as http:
        while True:
            open_payments = [p for p in record.accepted if watcher.latest(p) not in FINAL]
            open_refunds = [
                r for r in record.refunds if watcher.refunds.get(r, (0, ""))[1] not in REFUND_FINAL
            ]
            pending_webhooks = 0
            if not open_payments and not open_refunds:
                pending_webhooks = await _pending_webhooks(http, sandbox_url)
            now = time.monotonic()
            if not open_payments and not open_refunds and not pending_webhooks:
                break
            if watcher.records != last_records:
                last_records, quiet_since = watcher.records, now
            if now - started > opts.drain_s or now - quiet_since > opts.quiet_s:
                console.print(
                    f"[yellow]drain gave up after {now - started:.0f}s: {len(open_payments)} "
                    f"payment(s), {len(open_refunds)} refund(s) open, {pending_webhooks} "
                    "webhook(s) pending[/yellow]"
                )
                break
            await asyncio.sleep(1.0)
    await asyncio.sleep(2.0)  # the projection's last batch, and quiet for the audit
    return time.monotonic() - started


async def _pending_webhooks(http: aiohttp.ClientSession, sandbox_url: str) -> int:
    async with http.get(f"{sandbox_url}/_sandbox/webhooks/policy") as r:
        policy = await r.json()
    async with http.get(f"{sandbox_url}/_sandbox/webhooks/deliveries") as r:
        deliveries = (await r.json())["deliveries"]
    return sum(
        1 for d in deliveries if not d["delivered"] and d["attempts"] < policy["max_attempts"]
    )


def check_payments(
    record: Record,
    statuses: Iterable[Mapping[str, Any]],
    documents: Mapping[str, Mapping[str, Any]],
) -> tuple[Counter[str], int]:
    """Final status and read model of every accepted payment. Returns the final statuses and
    how many went through `unknown` to an answer."""
    history: dict[str, list[tuple[int, str]]] = {}
    last_error: dict[str, str] = {}
    for rec in statuses:
        if rec["payment_id"] in record.attempted:
            history.setdefault(rec["payment_id"], []).append((int(rec["seq"]), rec["status"]))
            if rec.get("error_code"):
                last_error[rec["payment_id"]] = rec["error_code"]
    finals: Counter[str] = Counter()
    resolved = 0
    for pid, acc in sorted(record.accepted.items()):
        seen = sorted(set(history.get(pid, [])))
        doc = documents.get(pid)
        if not seen:
            detail = "no payment_status record"
            if doc is not None:
                detail += f"; read model: {doc['status']} seq {doc['seq']}"
            record.violate("lost", pid, f"{acc.gateway} {acc.amount}: accepted, {detail}")
            continue
        seq, status = seen[-1]
        trail = " -> ".join(s for _, s in seen)
        if pid in last_error:
            trail += f" (error_code {last_error[pid]})"
        if status == "unknown":
            record.violate("unresolved_unknown", pid, f"{acc.gateway}: {trail}")
        elif status not in FINAL:
            record.violate("not_final", pid, f"{acc.gateway}: {trail}")
        else:
            finals[status] += 1
            if any(s == "unknown" for _, s in seen):
                resolved += 1
        if doc is None:
            record.violate("read_model_missing", pid, f"stream says {status} (seq {seq})")
        elif int(doc["seq"]) != seq or doc["status"] != status:
            record.violate(
                "read_model_stale",
                pid,
                f"read model {doc['status']} seq {doc['seq']}, stream {status} seq {seq}",
            )
    return finals, resolved


def check_refunds(
    record: Record,
    refund_records: Iterable[Mapping[str, Any]],
    refund_docs: Mapping[str, Mapping[str, Any] | None],
) -> Counter[str]:
    latest: dict[str, tuple[int, str]] = {}
    errors: dict[str, str] = {}
    for rec in refund_records:
        if rec["refund_id"] in record.refunds:
            before = latest.get(rec["refund_id"])
            if before is None or rec["seq"] > before[0]:
                latest[rec["refund_id"]] = (int(rec["seq"]), rec["status"])
                errors[rec["refund_id"]] = rec.get("error_code") or ""
    out: Counter[str] = Counter()
    for rid, acc in sorted(record.refunds.items()):
        found = latest.get(rid)
        if found is None:
            record.violate("refund_lost", rid, f"payment {acc.payment_id}: no refund_status")
            continue
        seq, status = found
        if status not in REFUND_FINAL:
            gateway = record.accepted[acc.payment_id].gateway
            error = f" (error_code {errors[rid]})" if errors.get(rid) else ""
            record.violate(
                "refund_not_final", rid, f"{gateway} payment {acc.payment_id}: {status}{error}"
            )
        else:
            out[status] += 1
        doc = refund_docs.get(rid)
        if doc is None:
            record.violate("read_model_missing", rid, f"refund {status} (seq {seq})")
        elif int(doc["seq"]) != seq or doc["status"] != status:
            record.violate(
                "read_model_stale",
                rid,
                f"refund read model {doc['status']} seq {doc['seq']}, stream {status} seq {seq}",
            )
    return out


def check_ledger(record: Record, entries: Iterable[Mapping[str, Any]]) -> None:
    """Charged once: at most one authorization and one capture per payment at the gateway."""
    counts: Counter[tuple[str, str]] = Counter()
    for e in entries:
        pid = e.get("payment_id")
        if pid in record.attempted and e["kind"] in ("authorization", "capture"):
            counts[(pid, e["kind"])] += 1
    for (pid, kind), n in sorted(counts.items()):
        if n > 1:
            record.violate("double_charge", pid, f"{n} {kind} entries at the gateway")


def check_dead_letters(
    record: Record, letters: list[dlq.DeadLetter], since_ms: int
) -> tuple[int, list[dict[str, Any]]]:
    """Each garbage record in `dead_letter` with its source and reason (a redelivery after a
    crash may park it twice: at least once); every dead letter of the run has a reason.
    Returns how many garbage records were found, and the dead letters that were not ours."""
    by_source: dict[tuple[str, str, str], list[dlq.DeadLetter]] = {}
    for d in letters:
        source = (
            d.source_topic,
            d.header(names.DLQ_SOURCE_PARTITION),
            d.header(names.DLQ_SOURCE_OFFSET),
        )
        by_source.setdefault(source, []).append(d)
    found = 0
    ours: set[str] = set()
    for g in record.garbage:
        where = f"{g.topic}[{g.partition}]@{g.offset}"
        parked = by_source.get((g.topic, str(g.partition), str(g.offset)), [])
        if not parked:
            record.violate("garbage_not_dead_lettered", where, f"{g.kind} record not there")
            continue
        ours.update(d.ref for d in parked)
        wrong = [d for d in parked if d.key != g.key]
        if wrong:
            record.violate(
                "garbage_not_dead_lettered",
                where,
                f"dead letter {wrong[0].ref} has key {wrong[0].key!r}, produced {g.key!r}",
            )
            continue
        found += 1
    others: list[dict[str, Any]] = []
    for d in letters:
        if d.timestamp_ms < since_ms:
            continue
        missing = [
            h
            for h in (
                names.DLQ_SOURCE_TOPIC,
                names.DLQ_SOURCE_PARTITION,
                names.DLQ_SOURCE_OFFSET,
                names.DLQ_ERROR_TYPE,
                names.DLQ_ERROR_MESSAGE,
            )
            if not d.header(h)
        ]
        if missing:
            record.violate("dead_letter_without_reason", d.ref, f"missing headers {missing}")
        if d.ref not in ours:
            others.append(d.summary())
    return found, others


async def check_lag(bootstrap: str, group: str, record: Record, wait_s: float = 20.0) -> None:
    """The worker group's committed offsets reach the end of every topic it reads (faust
    commits every few seconds: wait for it)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None)
    await consumer.start()
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        tps = await partitions_of(consumer, *CONSUMED_TOPICS)
        deadline = time.monotonic() + wait_s
        while True:
            ends = await consumer.end_offsets(tps)
            # Tansu answers OffsetFetch for named partitions only (not "all of the group's").
            committed = await admin.list_consumer_group_offsets(group, partitions=tps)
            behind = {
                tp: (committed[tp].offset if tp in committed else -1, end)
                for tp, end in ends.items()
                if end > max(0, committed[tp].offset if tp in committed else -1)
            }
            if not behind or time.monotonic() > deadline:
                break
            await asyncio.sleep(1.0)
        for tp, (done, end) in sorted(behind.items()):
            record.violate(
                "unprocessed_records",
                f"{tp.topic}[{tp.partition}]",
                f"group {group} committed {done}, end {end}: {end - max(done, 0)} unprocessed",
            )
    finally:
        await admin.close()
        await consumer.stop()


async def check_webhooks(sandbox_url: str, record: Record, since: float) -> None:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as http:
        async with http.get(f"{sandbox_url}/_sandbox/webhooks/policy") as r:
            policy = await r.json()
        async with http.get(f"{sandbox_url}/_sandbox/webhooks/deliveries") as r:
            deliveries = (await r.json())["deliveries"]
    for d in deliveries:
        if d["created"] >= since and not d["delivered"] and d["attempts"] >= policy["max_attempts"]:
            record.violate(
                "webhook_given_up",
                d["event_id"],
                f"{d['gateway']} {d['event_type']}: {d['attempts']} attempts, last {d['status']}",
            )


_DROPPED = re.compile(r"ignored (\w+) for (pay_\w+): (unknown_payment|unknown_refund)")
# streams.gaps.GapWatch's warning
_GAP = re.compile(r"(\w+\[\d+\]): offsets (\d+)\.\.(\d+) were never delivered to the agent")
# `streams.faust_compat.redeliver_holes`: a record that reached no agent, fetched again.
_HOLE = re.compile(r"(\S+\[\d+\]): offsets (\d+)\.\.(\d+) never reached an agent")
# `streams.faust_compat.refetch_instead_of_gaps`: offsets faust would have committed past.
_JUMP = re.compile(r"(\S+\[\d+\]): offset (\d+) came after (\d+):")
# `streams.faust_compat.watch_commit_stalls`: a commit that stayed put, and what held it.
_STALL = re.compile(r"(\S+\[\d+\]): commit stalled for \d+ s: (.*)")


def check_worker_logs(log_dir: Path, record: Record) -> None:
    """An input about a payment the run accepted, ignored as being about an unknown payment or
    refund, means the worker's state had lost it (the payment agent logs each such input).
    An input partition that jumped over offsets may have lost records (`streams.gaps`)."""
    dropped: dict[str, Counter[str]] = {}
    holes: list[str] = []
    jumps: list[str] = []
    stalls: list[str] = []
    for path in sorted(log_dir.glob("worker*.log")):
        with path.open(errors="replace") as f:
            for line in f:
                if hole := _HOLE.search(line):
                    holes.append(f"{hole.group(1)}@{hole.group(2)}..{hole.group(3)}")
                if jump := _JUMP.search(line):
                    jumps.append(f"{jump.group(1)}@{jump.group(3)}->{jump.group(2)}")
                if stall := _STALL.search(line):
                    stalls.append(f"{stall.group(1)} ({path.name}): {stall.group(2).strip()}")
                if gap := _GAP.search(line):
                    record.violate(
                        "input_gap",
                        gap.group(1),
                        f"offsets {gap.group(2)}..{gap.group(3)} jumped over ({path.name})",
                    )
                found = _DROPPED.search(line)
                if found and found.group(2) in record.accepted:
                    what = f"{found.group(1)} ({found.group(3)})"
                    dropped.setdefault(found.group(2), Counter())[what] += 1
    if holes:
        record.notes.append(
            f"{len(holes)} hole(s) of records that reached no agent, fetched again: "
            + ", ".join(holes[:20])
        )
    if jumps:
        record.notes.append(
            f"{len(jumps)} offset jump(s) faust would have committed past, read again: "
            + ", ".join(jumps[:20])
        )
    if stalls:
        record.notes.append(f"{len(stalls)} commit stall(s): " + "; ".join(stalls[:10]))
    for pid, inputs in sorted(dropped.items()):
        listed = ", ".join(f"{n} {what}" for what, n in sorted(inputs.items()))
        record.violate(
            "state_lost", pid, f"the payment agent ignored {listed}: its table had lost them"
        )


async def read_refund_docs(redis_url: str, refund_ids: Iterable[str]) -> dict[str, Any]:
    import redis.asyncio as aioredis

    ids = list(refund_ids)
    client = aioredis.from_url(redis_url)
    try:
        pipe = client.pipeline(transaction=False)
        for rid in ids:
            pipe.hget(refund_key(rid), "doc")
        raw = await pipe.execute()
    finally:
        await client.aclose()
    return {rid: json.loads(doc) if doc else None for rid, doc in zip(ids, raw, strict=True)}


async def verify(
    opts: ChaosOptions,
    endpoints: Endpoints,
    record: Record,
    since: float,
    log_dir: Path | None = None,
) -> dict[str, Any]:
    """Every end-of-run check; violations go to `record`. Returns figures for the result."""
    import redis.asyncio as aioredis

    client = aioredis.from_url(endpoints.redis_url)
    try:
        documents = await audit.read_documents(client)
    finally:
        await client.aclose()
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as http:
        async with http.get(f"{endpoints.sandbox_url}/_sandbox/ledger/summary") as r:
            summary = await r.json()
        async with http.get(f"{endpoints.sandbox_url}/_sandbox/ledger") as r:
            entries = (await r.json())["entries"]
    statuses = await audit.read_statuses(endpoints.kafka_bootstrap)
    refund_records = [
        decode("refund_status", r.value, dict(r.headers))
        for r in await read_topic(endpoints.kafka_bootstrap, names.REFUND_STATUS)
    ]
    refund_docs = await read_refund_docs(endpoints.redis_url, record.refunds)
    letters = await dlq.read_all(endpoints.kafka_bootstrap)

    ours = set(record.attempted)
    for finding in audit.compare(documents, summary, statuses, only=ours):
        record.violate(finding.kind, finding.payment_id, finding.detail)
    finals, resolved = check_payments(record, statuses, documents)
    refunds = check_refunds(record, refund_records, refund_docs)
    check_ledger(record, entries)
    found, others = check_dead_letters(record, letters, int(since * 1000))
    await check_webhooks(endpoints.sandbox_url, record, since)
    await check_lag(endpoints.kafka_bootstrap, opts.app_id, record)
    if log_dir is not None:
        check_worker_logs(log_dir, record)
    return {
        "final_statuses": dict(finals),
        "refund_statuses": dict(refunds),
        "resolved_unknowns": resolved,
        "garbage_dead_lettered": found,
        "unexpected_dead_letters": others,
    }


STUCK = frozenset(
    {
        *("lost", "not_final", "unresolved_unknown"),
        *("read_model_missing", "read_model_stale", "state_lost"),
    }
)
STUCK_REFUNDS = frozenset({"refund_lost", "refund_not_final"})
_EVIDENCE_TOPICS = {
    names.PAYMENT_INITIATION: "payment_requested",
    names.PAYMENT_ACTIONS: "payment_action",
    names.REFUND_REQUEST: "refund_request",
    names.GATEWAY_COMMANDS: "gateway_command",
    names.GATEWAY_RESULTS: "gateway_result",
    names.GATEWAY_EVENTS: "gateway_event",
    names.PAYMENT_STATUS: "payment_status",
    names.REFUND_STATUS: "refund_status",
}
_ROW_FIELDS = (
    *("status", "seq", "version", "error_code", "outstanding_command"),
    *("pending_commands", "last_change", "recent_inputs", "refunds"),
)
_RECORD_FIELDS = (
    "seq",
    "status",
    "operation",
    "command_id",
    "event_type",
    "event_id",
    "error_code",
)


async def gather_evidence(
    endpoints: Endpoints, worker_urls: list[str], group: str, payment_ids: list[str]
) -> dict[str, Any]:
    """Per payment: the workers' table rows, every record keyed by it on the pipeline's topics
    and whether the worker group's committed offset has passed each record, and its rows in
    the `payments` table's changelog (faust JSON-encodes the key)."""
    wanted = {pid.encode(): pid for pid in payment_ids}
    out: dict[str, Any] = {pid: {"rows": {}, "records": []} for pid in payment_ids}
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as http:
        for url in worker_urls:
            for pid in payment_ids:
                try:
                    async with http.get(f"{url}/tables/payments/{pid}/") as r:
                        row = await r.json(content_type=None)
                        if r.status == 200:
                            kept = {k: row.get(k) for k in _ROW_FIELDS}
                            kept["pending_commands"] = [
                                c.get("command_id") for c in kept["pending_commands"] or ()
                            ]
                            out[pid]["rows"][url] = kept
                except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
                    out[pid]["rows"][url] = f"unreachable: {type(exc).__name__}"
    partitions: set[TopicPartition] = set()
    for topic, schema in _EVIDENCE_TOPICS.items():
        for r in await read_topic(endpoints.kafka_bootstrap, topic):
            if r.key not in wanted:
                continue
            pid = wanted[r.key]
            try:
                rec = decode(schema, r.value, dict(r.headers))
                fields = {k: rec[k] for k in _RECORD_FIELDS if rec.get(k) is not None}
            except SerializationError as exc:
                fields = {"undecodable": str(exc)}
            partitions.add(TopicPartition(topic, r.partition))
            out[pid]["records"].append(
                {"topic": topic, "partition": r.partition, "offset": r.offset, **fields}
            )
    changelog = f"{group}-payments-changelog"
    by_faust_key = {json.dumps(pid).encode(): pid for pid in payment_ids}
    for r in await read_topic(endpoints.kafka_bootstrap, changelog):
        if r.key not in by_faust_key:
            continue
        try:
            row = json.loads(r.value) if r.value else {}
        except ValueError:
            row = {}
        out[by_faust_key[r.key]]["records"].append(
            {
                "topic": changelog,
                "partition": r.partition,
                "offset": r.offset,
                **{k: row.get(k) for k in ("status", "seq", "version")},
            }
        )
    if partitions:
        admin = AIOKafkaAdminClient(bootstrap_servers=endpoints.kafka_bootstrap)
        await admin.start()
        try:
            committed = await admin.list_consumer_group_offsets(group, partitions=list(partitions))
        finally:
            await admin.close()
        for pid in payment_ids:
            for rec in out[pid]["records"]:
                if rec["topic"] == changelog:
                    continue
                tp = TopicPartition(rec["topic"], rec["partition"])
                done = committed[tp].offset if tp in committed else -1
                rec["group_passed"] = done > rec["offset"]
    return out


# --- the run ------------------------------------------------------------------------
def _percentiles(values: list[float]) -> dict[str, float]:
    if not values:
        return {}
    ordered = sorted(values)

    def q(p: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))], 1)

    return {"p50": q(50), "p95": q(95), "p99": q(99), "max": round(ordered[-1], 1),
            "mean": round(statistics.fmean(ordered), 1)}  # fmt: skip


async def run_async(opts: ChaosOptions, endpoints: Endpoints, stack: Any | None) -> ChaosResult:
    seed = opts.seed if opts.seed is not None else random.randrange(2**31)
    rng = random.Random(seed)
    run_id = uuid.uuid4().hex[:8]
    broker = getattr(stack, "broker", None)
    result = ChaosResult(
        run_id=run_id,
        seed=seed,
        scenarios=list(opts.scenarios),
        started_at=time.time(),
        broker=broker.value if broker else "external",
        commit=code_commit(),
        workers=opts.workers,
    )
    started = time.monotonic()
    await tansu_compat.prepare(endpoints.kafka_bootstrap, "auto")
    record = Record()
    processes = Processes(stack, record, opts.redis_keep_data)
    watcher = StatusWatcher(endpoints.kafka_bootstrap)
    await watcher.start()
    try:
        if opts.workers > 1:
            if stack is None:
                record.notes.append("--workers needs a stack of ours; running with what is there")
            else:
                await processes.add_workers(opts.workers - 1)
        injector = Injector(opts, endpoints, record, processes, run_id, rng)
        console.print(
            f"chaos run {run_id} (seed {seed}): {opts.rate:g} payments/s, scenarios "
            f"{', '.join(opts.scenarios) or 'none'}"
        )
        async with Load(opts, endpoints, record, watcher, processes, run_id, rng) as load:
            until = started + opts.duration_s
            faults = asyncio.ensure_future(injector.run(until))
            await load.run(lambda: not faults.done() or time.monotonic() < until)
            await faults  # its own errors are violations already
            result.load_s = round(time.monotonic() - started, 1)
            console.print(f"load stopped after {result.load_s:.0f}s; letting clients finish")
            await load.settle(opts.retry_grace_s)
            result.offered = load.offered
        console.print("draining ...")
        result.drain_s = round(await drain(opts, record, watcher, endpoints.sandbox_url), 1)
        log_dir = Path(stack.opts.state_dir) / "logs" if stack is not None else None
        figures = await verify(opts, endpoints, record, result.started_at, log_dir)
        latencies = [
            (watcher.final_at[p] - a.accepted_at) * 1000
            for p, a in record.accepted.items()
            if p in watcher.final_at
        ]
        result.latency_ms = _percentiles(latencies)
        stuck = sorted({v.subject for v in record.violations if v.kind in STUCK})[:5]
        stuck += sorted(
            {
                record.refunds[v.subject].payment_id
                for v in record.violations
                if v.kind in STUCK_REFUNDS and v.subject in record.refunds
            }
        )[:5]
        if stuck:
            worker_urls = [endpoints.worker_url, *processes.twin_urls]
            try:
                result.evidence = await gather_evidence(endpoints, worker_urls, opts.app_id, stuck)
            except Exception as exc:  # evidence is a help, never the verdict
                result.evidence = {"error": f"{type(exc).__name__}: {exc}"}
    finally:
        await watcher.stop()
        await processes.stop_twins()
    result.final_statuses = figures["final_statuses"]
    result.refund_statuses = figures["refund_statuses"]
    result.resolved_unknowns = figures["resolved_unknowns"]
    result.garbage_dead_lettered = figures["garbage_dead_lettered"]
    result.unexpected_dead_letters = figures["unexpected_dead_letters"]
    result.accepted = len(record.accepted)
    result.abandoned = record.abandoned
    result.reposts = record.reposts
    result.refunds_accepted = len(record.refunds)
    result.http = dict(sorted(record.http.items()))
    result.http_by_phase = {k: dict(sorted(v.items())) for k, v in record.http_by_phase.items()}
    result.http_samples = record.samples
    result.faults = dict(record.faults)
    result.fault_log = record.fault_log
    result.garbage_produced = len(record.garbage)
    result.notes = record.notes
    result.violations = record.violations
    result.total_s = round(time.monotonic() - started, 1)
    return result


def print_summary(result: ChaosResult) -> None:
    table = Table(title=f"payments chaos {result.run_id}: {'OK' if result.ok else 'VIOLATIONS'}")
    table.add_column("measure")
    table.add_column("value", overflow="fold")
    rows: list[tuple[str, Any]] = [
        ("scenarios", ", ".join(result.scenarios)),
        ("seed", result.seed),
        ("load / drain / total s", f"{result.load_s} / {result.drain_s} / {result.total_s}"),
        ("payments offered", result.offered),
        ("payments accepted (202)", result.accepted),
        ("abandoned (never 202)", result.abandoned),
        ("reposts (same key)", result.reposts),
        ("refunds accepted", result.refunds_accepted),
        ("write answers", result.http),
        *((f"  ... during {phase}", answers) for phase, answers in result.http_by_phase.items()),
        ("final statuses", result.final_statuses),
        ("refund statuses", result.refund_statuses),
        ("unknown, then resolved", result.resolved_unknowns),
        ("accepted -> final ms", result.latency_ms),
        ("faults injected", result.faults),
        ("garbage dead-lettered", f"{result.garbage_dead_lettered}/{result.garbage_produced}"),
        ("other dead letters", len(result.unexpected_dead_letters)),
        ("violations", result.violation_counts() or "none"),
    ]
    for name, value in rows:
        table.add_row(name, json.dumps(value) if isinstance(value, dict) else str(value))
    console.print(table)
    faults = Table(title="fault windows")
    for column in ("at_s", "scenario", "took_s", "what"):
        faults.add_column(column, overflow="fold")
    for entry in result.fault_log:
        what = {k: v for k, v in entry.items() if k not in ("at_s", "scenario", "took_s")}
        faults.add_row(
            str(entry["at_s"]), entry["scenario"], str(entry["took_s"]), json.dumps(what)
        )
    console.print(faults)
    for note in result.notes:
        console.print(f"[yellow]note:[/] {note}")
    if result.violations:
        shown = Table(title=f"{len(result.violations)} violation(s) (first 50)")
        for column in ("kind", "subject", "detail"):
            shown.add_column(column, overflow="fold")
        for v in result.violations[:50]:
            shown.add_row(v.kind, v.subject, v.detail)
        console.print(shown)


def run_chaos(
    opts: ChaosOptions,
    *,
    stack: Any | None = None,
    endpoints: Endpoints | None = None,
    results_file: Path | None = None,
    quiet: bool = False,
) -> ChaosResult:
    """Run against `stack` (a started DevStack: every scenario) or `endpoints` (a running
    stack this process does not own: no process scenarios). From the main thread."""
    if endpoints is None:
        if stack is None:
            raise ValueError("a stack or its endpoints")
        endpoints = Endpoints.from_json(stack.endpoints)
    result = asyncio.run(run_async(opts, endpoints, stack))
    if not quiet:
        print_summary(result)
    if results_file is not None:
        results_file.parent.mkdir(parents=True, exist_ok=True)
        with results_file.open("a") as f:
            f.write(json.dumps(result.to_json(), default=str) + "\n")
    return result


def run_from_cli(args: Any, settings: Any) -> int:
    """`payments chaos`: start a stack of our own (or use --target's), run, print, record."""
    import os

    from payments.devstack import Broker, DevOptions, DevStack

    logging.getLogger("aiokafka").setLevel(logging.ERROR)  # joins, dead connections: noise
    scenarios = tuple(args.scenario) if args.scenario else SCENARIOS
    unknown = sorted(set(scenarios) - set(SCENARIOS))
    if unknown:
        console.print(f"payments chaos: unknown scenario(s) {unknown}; known: {list(SCENARIOS)}")
        return 2
    opts = ChaosOptions(
        duration_s=args.minutes * 60,
        scenarios=scenarios,
        rate=args.rate,
        refund_share=args.refund_share,
        fault_s=args.fault_s,
        calm_s=args.calm_s,
        drain_s=args.drain_s,
        workers=args.workers,
        redis_keep_data=not args.redis_wipe,
        app_id=settings.app_id,
        seed=args.seed,
    )
    results = Path(args.json_out or ".payments/chaos-results.jsonl")
    if args.target:
        with open(args.target) as f:
            endpoints = Endpoints.from_json(json.load(f))
        skipped = sorted(PROCESS_SCENARIOS & set(scenarios))
        if skipped:
            console.print(f"[yellow]--target: cannot restart processes; skipping {skipped}[/]")
        console.print(
            "[yellow]--target: its own janitor schedule applies; unless it runs with "
            f"{CHAOS_ENV}, give --drain-s the time its schedule needs[/]"
        )
        result = run_chaos(opts, endpoints=endpoints, results_file=results)
        return 0 if result.ok else 1
    for key, value in CHAOS_ENV.items():  # the children inherit it
        os.environ.setdefault(key, value)
    state_dir = Path(args.state_dir)
    shutil.rmtree(state_dir, ignore_errors=True)  # the embedded broker starts empty anyway
    stack = DevStack(
        settings,
        DevOptions.on_free_ports(state_dir, broker=Broker(args.broker or settings.dev_broker)),
    )
    try:
        stack.start()
        result = run_chaos(opts, stack=stack, results_file=results)
    finally:
        stack.stop()
    console.print(f"result appended to {results}; logs in {state_dir / 'logs'}")
    return 0 if result.ok else 1
