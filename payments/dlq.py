"""`payments dlq list|show|replay`: what is in `dead_letter`, why, and sending it back.

A dead letter keeps the original key, value and headers, plus `dlq-*` headers naming where it
came from and why. Replay produces the original record again to its source topic (without the
`dlq-*` headers, with `dlq-replayed-from` naming the dead letter), after whatever made it fail
was fixed. The pipeline dedupes by payment id, command id and event id, so replaying a
record twice is harmless. A webhook parked as `Unroutable` is routed again first: its
gateway payment id is looked up in the read model, and it is replayed keyed by our payment id
only once that lookup succeeds.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaProducer

from schemas import codec, decode
from streams import names
from streams.indexes import gateway_payment_key
from streams.scan import read_topic

REPLAYED_FROM = "dlq-replayed-from"
_EVENT = codec("gateway_event")


@dataclass(frozen=True)
class DeadLetter:
    partition: int
    offset: int
    timestamp_ms: int
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...]

    @property
    def ref(self) -> str:
        return f"{self.partition}:{self.offset}"

    def header(self, name: str) -> str:
        for key, value in self.headers:
            if key == name:
                return value.decode("utf-8", "replace")
        return ""

    @property
    def source_topic(self) -> str:
        return self.header(names.DLQ_SOURCE_TOPIC)

    @property
    def error_type(self) -> str:
        return self.header(names.DLQ_ERROR_TYPE)

    def original_headers(self) -> list[tuple[str, bytes]]:
        return [(k, v) for k, v in self.headers if not k.startswith("dlq-")]

    def summary(self) -> dict[str, Any]:
        return {
            "ref": self.ref,
            "timestamp_ms": self.timestamp_ms,
            "source": f"{self.source_topic}[{self.header(names.DLQ_SOURCE_PARTITION)}]"
            f"@{self.header(names.DLQ_SOURCE_OFFSET)}",
            "error_type": self.error_type,
            "error": self.header(names.DLQ_ERROR_MESSAGE),
            "key": self.key.decode("utf-8", "replace") if self.key is not None else None,
            "replayed_from": self.header(REPLAYED_FROM) or None,
        }

    def detail(self) -> dict[str, Any]:
        """Everything, with the value decoded when its Avro schema is known."""
        out = self.summary()
        out["headers"] = {k: v.decode("utf-8", "replace") for k, v in self.headers}
        out["value"] = _readable(self)
        return out


def _readable(letter: DeadLetter) -> Any:
    schema = letter.header("avro-schema")
    if schema and letter.value is not None:
        name = _schema_name(schema)
        try:
            record = decode(name, letter.value, dict(letter.headers))
        except Exception as exc:  # that is why it is here, often
            return {"undecodable": f"{type(exc).__name__}: {exc}", "bytes": len(letter.value)}
        return {
            k: (v.decode("utf-8", "replace") if isinstance(v, bytes) else v)
            for k, v in record.items()
        }
    if letter.value is None:
        return None
    return {"bytes": len(letter.value), "preview": letter.value[:200].hex()}


def _schema_name(header: str) -> str:
    """`payments.v1.GatewayEvent.v1` -> `gateway_event`."""
    record = header.split(".")[-2] if header.count(".") >= 2 else header
    return "".join(f"_{c.lower()}" if c.isupper() else c for c in record).lstrip("_")


async def read_all(bootstrap: str) -> list[DeadLetter]:
    """Every record in `dead_letter`, oldest first per partition, without joining a group."""
    return [
        DeadLetter(
            partition=r.partition,
            offset=r.offset,
            timestamp_ms=r.timestamp,
            key=r.key,
            value=r.value,
            headers=tuple(r.headers),
        )
        for r in await read_topic(bootstrap, names.DEAD_LETTER)
    ]


@dataclass(frozen=True)
class Replayed:
    ref: str
    topic: str | None
    key: str | None
    skipped: str | None = None  # why it was not replayed


async def replay(
    bootstrap: str, letters: list[DeadLetter], *, redis: Any | None = None
) -> list[Replayed]:
    """Produce each dead letter's original record to its source topic (acks=all)."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    done: list[Replayed] = []
    try:
        for letter in letters:
            topic = letter.source_topic
            if topic not in names.ALL_TOPICS or topic == names.DEAD_LETTER:
                done.append(Replayed(letter.ref, None, None, f"unknown source topic {topic!r}"))
                continue
            key, value = letter.key, letter.value
            if letter.error_type == "Unroutable":
                routed = await _route(letter, redis)
                if isinstance(routed, str):
                    done.append(Replayed(letter.ref, topic, None, routed))
                    continue
                key, value = routed
            headers = [*letter.original_headers(), (REPLAYED_FROM, letter.ref.encode())]
            await producer.send_and_wait(topic, value, key=key, headers=headers)
            done.append(Replayed(letter.ref, topic, key.decode() if key else None))
    finally:
        await producer.stop()
    return done


async def _route(letter: DeadLetter, redis: Any | None) -> tuple[bytes, bytes] | str:
    """A parked webhook keyed and labelled with our payment id, or why it still cannot be."""
    if redis is None or letter.value is None:
        return "unroutable webhook: no read model to look its payment up in"
    event = decode("gateway_event", letter.value, dict(letter.headers))
    reference = letter.key.decode() if letter.key else ""
    found = await redis.get(gateway_payment_key(event["gateway"], reference))
    if not found:
        return f"still no payment of ours for {event['gateway']} payment {reference!r}"
    payment_id = found.decode() if isinstance(found, bytes) else str(found)
    return payment_id.encode(), _EVENT.encode({**event, "payment_id": payment_id})


def select(letters: list[DeadLetter], refs: list[str], error_type: str | None) -> list[DeadLetter]:
    chosen = [d for d in letters if not refs or d.ref in refs]
    if error_type:
        chosen = [d for d in chosen if d.error_type == error_type]
    missing = set(refs) - {d.ref for d in letters}
    if missing:
        raise SystemExit(f"no dead letter at {', '.join(sorted(missing))}")
    return chosen


def dumps(obj: Any) -> str:
    return json.dumps(obj, indent=2, default=str)
