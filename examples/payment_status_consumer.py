#!/usr/bin/env python3
"""Example downstream consumer of the `payment_status` topic (order / notification services).

Self-contained on purpose: it uses only `aiokafka` and `fastavro`, never this project's own
packages, exactly as a separate team would. It shows the whole consumer-side contract:

* records are keyed by payment id (UTF-8); values are schemaless Avro;
* the Kafka header `avro-schema` names the writer schema and its version, for example
  `payments.v1.PaymentStatus.v2`; an older writer `vN` is decoded with
  `payment_status.vN.avsc` as writer schema and the current file as reader schema;
* `seq` grows by one per payment: a record whose seq is not newer than the last one applied
  for that payment is a duplicate (delivery is at-least-once) and is skipped;
* offsets are committed only after the records of a batch were handled.

Each applied record is printed as one JSON line on stdout; diagnostics go to stderr.

    python examples/payment_status_consumer.py --from-beginning --max-records 10
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import json
import signal
import sys
import time
from pathlib import Path
from typing import Any

import fastavro
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.structs import ConsumerRecord

TOPIC = "payment_status"
SCHEMA_HEADER = "avro-schema"
REPO = Path(__file__).resolve().parents[1]
DEFAULT_SCHEMA = REPO / "schemas" / "payment_status.avsc"
DEFAULT_BOOTSTRAP = "127.0.0.1:19092"
DEFAULT_GROUP = "payment-status-example"


class UnknownWriterSchema(Exception):
    """The record was written with a schema this consumer does not have (update schemas/)."""


def default_bootstrap() -> str:
    """`kafka_bootstrap` from `.payments/endpoints.json` (written by `make run`), if any."""
    for base in (Path.cwd(), REPO):
        path = base / ".payments" / "endpoints.json"
        try:
            value = json.loads(path.read_text()).get("kafka_bootstrap")
        except (OSError, ValueError, AttributeError):
            continue
        if isinstance(value, str) and value:
            return value
    return DEFAULT_BOOTSTRAP


class StatusDecoder:
    """Decodes payment_status values, resolving older writer schemas against the current one."""

    def __init__(self, schema_path: Path) -> None:
        self.schema_path = schema_path
        raw = json.loads(schema_path.read_text())
        self.full_name = f"{raw['namespace']}.{raw['name']}"
        self.version = int(raw.get("version", 1))
        self.reader = fastavro.parse_schema(raw)
        self._writers: dict[int, Any] = {self.version: self.reader}

    def _writer(self, header: bytes | None) -> Any:
        if header is None:  # no header: assume the current schema
            return self.reader
        name, _, version = header.decode().rpartition(".")
        if name != self.full_name or not version.startswith("v") or not version[1:].isdigit():
            raise UnknownWriterSchema(f"header {header!r} does not name {self.full_name}.v<N>")
        number = int(version[1:])
        if number not in self._writers:
            # Older versions stay beside the current file as `<name>.v<N>.avsc`. A newer
            # version than ours has no file here: this consumer must be updated first.
            stem = self.schema_path.name.removesuffix(".avsc")
            path = self.schema_path.with_name(f"{stem}.v{number}.avsc")
            if number > self.version or not path.exists():
                raise UnknownWriterSchema(f"no schema file for {header.decode()} ({path.name})")
            self._writers[number] = fastavro.parse_schema(json.loads(path.read_text()))
        return self._writers[number]

    def decode(self, value: bytes, headers: dict[str, bytes]) -> dict[str, Any]:
        writer = self._writer(headers.get(SCHEMA_HEADER))
        # Avro schema resolution: bytes written with `writer`, returned shaped as `reader`
        # (fields added since get their defaults).
        record = fastavro.schemaless_reader(io.BytesIO(value), writer, self.reader)
        assert isinstance(record, dict)
        return record


class StatusConsumer:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.decoder = StatusDecoder(args.schema)
        # Highest seq applied per payment id. Kept in memory for the example only: a real
        # service stores it in its own database, in the same transaction as the state change
        # it makes (order marked paid, notification recorded), so that "applied" and
        # "seq remembered" can never disagree after a crash.
        self.last_seq: dict[str, int] = {}
        self.applied = 0
        self.duplicates = 0
        self.stopping = asyncio.Event()

    def handle(self, msg: ConsumerRecord[bytes, bytes]) -> bool:
        """Apply one record unless it is a duplicate. True when it was applied."""
        if msg.value is None:
            print(f"skipping empty record at {msg.partition}:{msg.offset}", file=sys.stderr)
            return False
        rec = self.decoder.decode(msg.value, dict(msg.headers or ()))
        payment_id, seq = rec["payment_id"], rec["seq"]
        if seq <= self.last_seq.get(payment_id, 0):
            # Already applied: a redelivery after a rebalance or a crash before the commit,
            # or a re-emitted record after the producer retried. Ignoring it is the contract.
            self.duplicates += 1
            return False
        # This is where an order service would mark the order paid, or a notification
        # service send "payment received"; here we print the record.
        line = {
            "payment_id": payment_id,
            "seq": seq,
            "status": rec["status"],
            "previous_status": rec["previous_status"],
            "amount": rec["amount"],
            "currency": rec["currency"],
            "order_id": rec["order_id"],
        }
        print(json.dumps(line), flush=True)
        self.last_seq[payment_id] = seq
        self.applied += 1
        return True

    async def run(self) -> int:
        args = self.args
        deadline = time.monotonic() + args.timeout_s
        consumer = AIOKafkaConsumer(
            bootstrap_servers=args.bootstrap,
            group_id=args.group,
            client_id="payment-status-example",
            # Commit by hand, only past records that were handled: at-least-once.
            enable_auto_commit=False,
            # Used only when the group has no committed offset yet.
            auto_offset_reset="earliest" if args.from_beginning else "latest",
            # Tansu, the embedded dev broker, does not answer a waiting Fetch when records
            # arrive: it always waits out fetch_max_wait_ms (500 ms by default), which would
            # delay every record by up to that much. A short wait costs little on a real Kafka.
            fetch_max_wait_ms=10,
        )
        try:
            # Started without a subscription, start() only connects; the group join happens
            # in the background after subscribe() and counts as runtime like any wait.
            await asyncio.wait_for(consumer.start(), timeout=max(deadline - time.monotonic(), 1))
        except Exception as exc:  # the asyncio timeout, KafkaConnectionError, ...
            await consumer.stop()
            print(f"cannot connect to {args.bootstrap}: {exc!r}", file=sys.stderr)
            return 1
        consumer.subscribe([TOPIC])
        try:
            return await self._loop(consumer, deadline)
        finally:
            await consumer.stop()
            print(
                f"applied {self.applied}, skipped {self.duplicates} duplicate(s), "
                f"{len(self.last_seq)} payment(s)",
                file=sys.stderr,
            )

    async def _poll(
        self, consumer: AIOKafkaConsumer, remaining: float
    ) -> dict[TopicPartition, list[ConsumerRecord[bytes, bytes]]]:
        """One getmany(), cut short by the deadline or a stop signal.

        getmany's own timeout does not cover the wait for a partition assignment, which
        lasts as long as the group rebalances (seconds, longer when a previous member of
        the group has not left cleanly), so it is bounded here as well.
        """
        poll = asyncio.ensure_future(consumer.getmany(timeout_ms=int(min(remaining, 0.5) * 1000)))
        stop = asyncio.ensure_future(self.stopping.wait())
        await asyncio.wait({poll, stop}, timeout=remaining, return_when=asyncio.FIRST_COMPLETED)
        stop.cancel()
        if poll.done():
            batch: dict[TopicPartition, list[ConsumerRecord[bytes, bytes]]] = poll.result()
            return batch
        poll.cancel()  # nothing was taken from the consumer yet: nothing is lost
        with contextlib.suppress(asyncio.CancelledError):
            await poll
        return {}

    async def _loop(self, consumer: AIOKafkaConsumer, deadline: float) -> int:
        max_records = self.args.max_records
        while not self.stopping.is_set():
            remaining = deadline - time.monotonic()
            if remaining <= 0 or (max_records is not None and self.applied >= max_records):
                break
            batch = await self._poll(consumer, remaining)
            handled: dict[TopicPartition, int] = {}
            try:
                for tp, messages in batch.items():
                    for msg in messages:
                        if max_records is not None and self.applied >= max_records:
                            break
                        self.handle(msg)
                        handled[tp] = msg.offset + 1  # the next offset to read
            except UnknownWriterSchema as exc:
                # Do not skip a record we cannot read: commit what came before it and stop,
                # so an updated consumer resumes exactly there.
                print(f"stopping: {exc}", file=sys.stderr)
                if handled:
                    await consumer.commit(handled)
                return 2
            # Commit after handling, and only up to the last record handled (with
            # --max-records the batch may be cut short; the rest is read next time).
            if handled:
                await consumer.commit(handled)
        return 0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument(
        "--bootstrap",
        default=None,
        help=f"Kafka bootstrap HOST:PORT (default: .payments/endpoints.json, else "
        f"{DEFAULT_BOOTSTRAP})",
    )
    p.add_argument("--group", default=DEFAULT_GROUP, help="consumer group id")
    p.add_argument(
        "--from-beginning",
        action="store_true",
        help="start at the oldest record when the group has no committed offset",
    )
    p.add_argument("--max-records", type=int, default=None, help="stop after N applied records")
    p.add_argument("--timeout-s", type=float, default=30.0, help="stop after S seconds in total")
    p.add_argument("--schema", type=Path, default=DEFAULT_SCHEMA, help="payment_status.avsc")
    args = p.parse_args(argv)
    if args.bootstrap is None:
        args.bootstrap = default_bootstrap()
    return args


async def amain(args: argparse.Namespace) -> int:
    consumer = StatusConsumer(args)
    loop = asyncio.get_running_loop()
    # Ctrl-C or SIGTERM: finish the batch in hand, commit it, leave the group cleanly.
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, consumer.stopping.set)
    return await consumer.run()


def main(argv: list[str] | None = None) -> int:
    return asyncio.run(amain(parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())
