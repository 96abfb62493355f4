"""The faust app, built from settings. Topics, tables and agents are declared elsewhere."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import faust

from payments.settings import Settings
from streams import faust_compat, names


def create_app(settings: Settings) -> faust.App:
    """The app for `settings`, the same on Apache Kafka and Tansu but for one setting.

    That one is the fetch wait. Apache Kafka
    answers a waiting Fetch as soon as records arrive, so faust's own 1,500 ms wait costs
    nothing there; Tansu always waits it out, so tansu_compat clamps it (and only there).
    The session timeout is short on both: on Tansu because it holds every JoinGroup for
    half of it, on Kafka because a killed worker's partitions wait that long for a new
    owner (the broker's group.min.session.timeout.ms, 6 s, is the floor).
    """
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    app = faust.App(
        settings.app_id,
        broker=f"kafka://{settings.kafka_bootstrap}",
        store=settings.store,
        datadir=str(settings.data_dir),
        topic_partitions=settings.topic_partitions,
        topic_replication_factor=settings.topic_replication,
        broker_session_timeout=settings.broker_session_timeout_s,
        broker_heartbeat_interval=max(1.0, settings.broker_session_timeout_s / 4),
        producer_acks=-1,
        producer_linger_ms=settings.producer_linger_ms,
        processing_guarantee="at_least_once",  # see broker.md: exactly_once is not trusted
        consumer_auto_offset_reset="earliest",
        web_enabled=True,
        web_host="127.0.0.1",
        web_port=settings.worker_web_port,
        web_in_thread=False,
        topic_disable_leader=True,
        table_cleanup_interval=30.0,
    )
    faust_compat.keep_queues_on_resume(app)  # else a takeover can drop fetched records
    faust_compat.refetch_dropped_records(app)  # else the fetcher can drop records for good
    faust_compat.hold_skipped_offsets(app)  # else a commit can pass a record never applied
    faust_compat.no_commit_past_a_hole(app)  # else a commit can pass one never acked
    faust_compat.keep_acks_of_a_failed_commit(app)  # else a failed commit loses its acks
    faust_compat.refetch_instead_of_gaps(app)  # else a commit can pass records never handed out
    faust_compat.recover_from_the_start(app)  # else an offset below -1 crashes recovery
    faust_compat.redeliver_holes(app)  # else a record that reached no agent strands the commit
    faust_compat.watch_commit_stalls(app)  # a commit that stays put is logged, with why
    return app


@dataclass(frozen=True)
class Topics:
    payment_inputs: Any  # every topic about a payment, consumed by the payment agent
    gateway_commands: Any
    gateway_results: Any  # for sending; consumed through payment_inputs
    payment_status: Any
    refund_status: Any
    payment_analytics: Any
    payment_checks: Any  # for sending; consumed through payment_inputs
    fraud_checks: Any  # keyed by user id
    fraud_card_checks: Any  # keyed by card fingerprint
    fraud_verdicts: Any  # for sending; consumed through payment_inputs
    analytics_by_dims: Any  # payment_analytics re-keyed for the metrics windows
    payment_metrics: Any
    dead_letter: Any


def declare_topics(app: faust.App, settings: Settings) -> Topics:
    """Raw-bytes topics: agents decode Avro themselves so a bad record can be dead-lettered."""

    def topic(*topic_names: str) -> Any:
        return app.topic(
            *topic_names,
            key_serializer="raw",
            value_serializer="raw",
            partitions=settings.topic_partitions,
            replicas=settings.topic_replication,
        )

    return Topics(
        payment_inputs=topic(*names.PAYMENT_INPUTS),
        gateway_commands=topic(names.GATEWAY_COMMANDS),
        gateway_results=topic(names.GATEWAY_RESULTS),
        payment_status=topic(names.PAYMENT_STATUS),
        refund_status=topic(names.REFUND_STATUS),
        payment_analytics=topic(names.PAYMENT_ANALYTICS),
        payment_checks=topic(names.PAYMENT_CHECKS),
        fraud_checks=topic(names.FRAUD_CHECKS),
        fraud_card_checks=topic(names.FRAUD_CARD_CHECKS),
        fraud_verdicts=topic(names.FRAUD_VERDICTS),
        analytics_by_dims=topic(names.ANALYTICS_BY_DIMS),
        payment_metrics=topic(names.PAYMENT_METRICS),
        dead_letter=topic(names.DEAD_LETTER),
    )
