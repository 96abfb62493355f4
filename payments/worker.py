"""Run one faust worker: the payment agent, the gateway executor and the Redis projection."""

from __future__ import annotations

import asyncio
import gc
import logging

import redis.asyncio as aioredis
from faust.worker import Worker
from prometheus_client import REGISTRY

from agents import analytics, executor, fraud, janitor, looplag, pages, payment, projection
from agents.breaker import breakers_for
from agents.metrics import ConsumerLag
from gateways.base import Gateway
from payments.settings import Settings
from streams import names, tansu_compat
from streams.admin import ensure_topics
from streams.app import create_app, declare_topics
from tables.payments import declare_tables

log = logging.getLogger(__name__)


def build_gateways(settings: Settings) -> dict[str, Gateway]:
    """One adapter per enabled gateway, each on its official SDK (imported only if enabled)."""
    timeout = settings.gateway_timeout_s
    gateways: dict[str, Gateway] = {}
    if "stripe" in settings.gateways:
        from gateways.stripe import StripeGateway

        gateways["stripe"] = StripeGateway(
            api_key=settings.stripe_api_key.get_secret_value(),
            api_base=settings.stripe_base,
            timeout_s=timeout,
            max_connections=settings.executor_concurrency,
        )
    if "paypal" in settings.gateways:
        from gateways.paypal import PayPalGateway

        gateways["paypal"] = PayPalGateway(
            client_id=settings.paypal_client_id,
            client_secret=settings.paypal_client_secret.get_secret_value(),
            api_base=settings.paypal_base,
            timeout_s=timeout,
            max_workers=settings.paypal_max_workers,
        )
    if "square" in settings.gateways:
        from gateways.square import SquareGateway

        gateways["square"] = SquareGateway(
            access_token=settings.square_access_token.get_secret_value(),
            api_base=settings.square_base,
            timeout_s=timeout,
            location_id=settings.square_location_id,
        )
    return gateways


GC_THRESHOLDS = (50_000, 20, 20)


def run_worker(settings: Settings) -> None:
    import uvloop

    # uvloop: the worker spends much of its time in socket I/O (Kafka, Redis, gateways). The
    # policy also gives uvloop to the loop faust starts in its consumer thread (aiokafka's
    # fetches and their decoding: a quarter of the worker's CPU on a stock asyncio loop).
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    loop = uvloop.new_event_loop()
    asyncio.set_event_loop(loop)
    applied = loop.run_until_complete(
        tansu_compat.prepare(settings.kafka_bootstrap, settings.kafka_broker.value)
    )
    loop.run_until_complete(
        ensure_topics(
            settings.kafka_bootstrap,
            partitions=settings.topic_partitions,
            replication=settings.topic_replication,
        )
    )
    log.info("broker compatibility: %s", "tansu" if applied else "apache kafka")

    app = create_app(settings)
    topics = declare_topics(app, settings)
    tables = declare_tables(app, settings)
    gateways = build_gateways(settings)
    redis = aioredis.from_url(settings.redis_url, socket_timeout=5, socket_connect_timeout=5)
    schedule = settings.janitor_schedule
    payment.register(
        app,
        topics,
        tables,
        sweep_every_ms=int(settings.dedup_sweep_interval_s * 1000),
        schedule=schedule,
        bootstrap=settings.kafka_bootstrap,
        fraud_rules=settings.fraud_rules if settings.fraud_enabled else None,
    )
    if settings.fraud_enabled:
        fraud.register(app, topics, tables, settings.fraud_rules)
    breakers = breakers_for(
        sorted(gateways), failures=settings.breaker_failures, reset_after_s=settings.breaker_reset_s
    )
    executor.register(
        app,
        topics,
        gateways,
        tables,
        max_in_flight=settings.executor_concurrency,
        breakers=breakers,
    )
    janitor.register(
        app,
        topics,
        tables,
        gateways,
        breakers,
        schedule,
        every_s=settings.janitor_interval_s,
        concurrency=settings.janitor_concurrency,
    )
    projection.register(app, topics, redis)
    REGISTRY.register(ConsumerLag(app, frozenset(names.ALL_TOPICS)))
    analytics.register(
        app,
        topics,
        tables.metrics,
        sizes_s=settings.metrics_windows,
        grace_s=settings.metrics_grace_s,
        retention_s=settings.metrics_retention_s,
        emit_every_s=settings.metrics_emit_interval_s,
    )
    pages.register(app, tables, breakers)
    looplag.register(app)  # payments_event_loop_lag_seconds, and a warning when the loop stalls

    @app.on_before_shutdown.connect  # type: ignore[arg-type]
    async def _close(app_: object, **kwargs: object) -> None:
        for gw in gateways.values():
            await gw.close()
        await redis.aclose()

    # The garbage collector: at CPython's default thresholds (700, 10, 10) it runs a young
    # collection every 700 allocations and a full one, scanning every live object, often
    # enough to stall the event loop for 100 ms and more with a large heap. What exists by
    # now (modules, the app, its tables and agents) lives as long as the process: frozen,
    # it is never scanned again; the rest is collected less often.
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)
    Worker(app, loglevel=settings.log_level.lower(), loop=loop).execute_from_commandline()
