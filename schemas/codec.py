"""Schemaless Avro encoding with the writer schema named in a Kafka header.

Each `.avsc` is parsed once per process. Records carry the header
`avro-schema: <full name>.v<version>` so a reader can resolve an older writer schema
against the current one. fastavro errors are re-raised as `SerializationError`.
"""

from __future__ import annotations

import io
import json
from collections.abc import Mapping
from functools import cache
from pathlib import Path
from typing import Any

import fastavro
import fastavro.validation

from domain.errors import SerializationError

SCHEMA_DIR = Path(__file__).parent
SCHEMA_HEADER = "avro-schema"


class Codec:
    """One schema, parsed once: `encode(dict) -> bytes`, `decode(bytes) -> dict`."""

    def __init__(self, name: str, raw: Mapping[str, Any]) -> None:
        self.name = name
        self.version = int(raw.get("version", 1))
        self.full_name = f"{raw['namespace']}.{raw['name']}"
        self.header_value = f"{self.full_name}.v{self.version}".encode()
        self.schema = fastavro.parse_schema(dict(raw))

    def encode(self, record: Mapping[str, Any]) -> bytes:
        buf = io.BytesIO()
        try:
            # fastavro's writer silently truncates a float written to a long: validate first.
            fastavro.validation.validate(record, self.schema, raise_errors=True)
            fastavro.schemaless_writer(buf, self.schema, dict(record), strict_allow_default=True)
        except Exception as exc:
            raise SerializationError(f"{self.name}: cannot encode record: {exc}") from exc
        return buf.getvalue()

    def decode(self, data: bytes | None, writer: Codec | None = None) -> dict[str, Any]:
        if not data:
            raise SerializationError(f"{self.name}: empty record")
        try:
            record = fastavro.schemaless_reader(
                io.BytesIO(data), (writer or self).schema, self.schema
            )
        except Exception as exc:  # fastavro raises many types for corrupt input
            raise SerializationError(f"{self.name}: cannot decode record: {exc}") from exc
        if not isinstance(record, dict):
            raise SerializationError(f"{self.name}: record is not an object")
        return record

    @property
    def headers(self) -> list[tuple[str, bytes]]:
        return [(SCHEMA_HEADER, self.header_value)]


def _load(path: Path) -> Codec:
    try:
        raw = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise SerializationError(f"cannot read schema {path.name}: {exc}") from exc
    return Codec(path.stem, raw)


@cache
def codec(name: str) -> Codec:
    """The current codec for `name` (file `schemas/<name>.avsc`)."""
    path = SCHEMA_DIR / f"{name}.avsc"
    if not path.exists():
        raise SerializationError(f"no schema named {name!r}")
    return _load(path)


@cache
def _writer_by_header(value: bytes) -> Codec | None:
    """Older writer schemas live beside the current one as `<name>.v<N>.avsc`."""
    for path in SCHEMA_DIR.glob("*.avsc"):
        candidate = _load(path)
        if candidate.header_value == value:
            return candidate
    return None


def encode(name: str, record: Mapping[str, Any]) -> bytes:
    return codec(name).encode(record)


def decode(
    name: str, data: bytes | None, headers: Mapping[str, bytes] | None = None
) -> dict[str, Any]:
    """Decode `data` into the current `name` schema, honouring an older writer header."""
    reader = codec(name)
    writer = None
    if headers:
        value = headers.get(SCHEMA_HEADER)
        if value is not None and value != reader.header_value:
            writer = _writer_by_header(bytes(value))
            if writer is None:
                raise SerializationError(f"{name}: unknown writer schema {value!r}")
    return reader.decode(data, writer)
