import io
import json
from pathlib import Path

import fastavro
import pytest

from domain.errors import SerializationError
from domain.money import Money
from domain.payment import CaptureMode, PaymentRequested, decide
from schemas import codec, decode, encode
from schemas.records import payment_requested_from_record, status_record

SCHEMA_DIR = Path(__file__).resolve().parents[2] / "schemas"


def test_every_avsc_parses_with_fastavro() -> None:
    files = sorted(SCHEMA_DIR.glob("*.avsc"))
    assert {f.stem for f in files} >= {
        "payment_requested",
        "payment_status",
        "gateway_command",
        "gateway_result",
    }
    for f in files:
        fastavro.parse_schema(json.loads(f.read_text()))


def requested_record() -> dict:
    return {
        "payment_id": "pay_1",
        "idempotency_key": "k1",
        "fingerprint": "f",
        "order_id": "o-1",
        "user_id": "u-1",
        "amount": 1999,
        "currency": "JPY",
        "gateway": "stripe",
        "payment_method": {"type": "card", "token": "pm_card_visa"},
        "capture": "automatic",
        "metadata": {"a": "b"},
        "requested_at": 1_700_000_000_123,
    }


def test_payment_requested_round_trip_keeps_integers_and_millis() -> None:
    data = encode("payment_requested", requested_record())
    req = payment_requested_from_record(decode("payment_requested", data))
    assert req.amount == Money(1999, "JPY")
    assert req.requested_at_ms == 1_700_000_000_123
    assert req.capture is CaptureMode.AUTOMATIC


def test_status_record_round_trip() -> None:
    req = PaymentRequested(
        "pay_1", "o", "u", Money(5, "BHD"), "stripe", "pm_card_visa", CaptureMode.MANUAL, "f", 7
    )
    d = decide(None, req)
    assert d.state is not None
    rec = status_record(d.state, d.changes[0])
    out = decode("payment_status", encode("payment_status", rec))
    assert out["status"] == "pending" and out["seq"] == 1 and out["previous_status"] is None


def test_garbage_bytes_raise_serialization_error() -> None:
    with pytest.raises(SerializationError):
        decode("payment_status", b"\xff\xfe garbage")
    with pytest.raises(SerializationError):
        decode("payment_status", b"")


def test_unknown_writer_schema_header_is_refused() -> None:
    data = encode("payment_requested", requested_record())
    with pytest.raises(SerializationError):
        decode("payment_requested", data, {"avro-schema": b"payments.v1.PaymentRequested.v99"})


def test_header_names_schema_and_version() -> None:
    assert codec("payment_status").headers == [("avro-schema", b"payments.v1.PaymentStatus.v2")]


def test_encoding_a_float_amount_is_refused() -> None:
    rec = requested_record() | {"amount": 19.99}
    with pytest.raises(SerializationError):
        encode("payment_requested", rec)


@pytest.mark.parametrize(
    "old_file", sorted(p.name for p in SCHEMA_DIR.glob("*.v*.avsc")), ids=lambda n: n
)
def test_records_written_with_an_older_version_still_decode(old_file: str) -> None:
    """Backward compatibility: an old record (older producer) decodes into the current schema."""
    name = old_file.split(".")[0]
    old = json.loads((SCHEMA_DIR / old_file).read_text())
    old_schema = fastavro.parse_schema(old)
    record = {f["name"]: _example(f["type"]) for f in old["fields"]}
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, old_schema, record)
    header = f"{old['namespace']}.{old['name']}.v{old['version']}".encode()
    decoded = decode(name, buf.getvalue(), {"avro-schema": header})
    for key, value in record.items():
        assert decoded[key] == value or key.endswith("_at"), key
    new_fields = {
        f["name"] for f in json.loads((SCHEMA_DIR / f"{name}.avsc").read_text())["fields"]
    }
    for added in new_fields - set(record):
        assert decoded[added] is None  # defaults fill what v1 did not have


def test_current_schemas_only_add_fields_with_defaults() -> None:
    for old_file in SCHEMA_DIR.glob("*.v*.avsc"):
        name = old_file.name.split(".")[0]
        old = {f["name"] for f in json.loads(old_file.read_text())["fields"]}
        new = json.loads((SCHEMA_DIR / f"{name}.avsc").read_text())["fields"]
        assert old <= {f["name"] for f in new}, f"{name} dropped a field"
        for f in new:
            if f["name"] not in old:
                assert "default" in f, f"{name}.{f['name']} added without a default"


def _example(avro_type: object) -> object:
    if isinstance(avro_type, list):
        return None if "null" in avro_type else _example(avro_type[0])
    if isinstance(avro_type, dict):
        if avro_type.get("type") == "record":
            return {f["name"]: _example(f["type"]) for f in avro_type["fields"]}
        if avro_type.get("type") == "map":
            return {"k": _example(avro_type["values"])}
        if avro_type.get("type") == "array":
            return [_example(avro_type["items"])]
        return 1_700_000_000_000 if avro_type.get("logicalType") else _example(avro_type["type"])
    return {"string": "x", "long": 7, "int": 3, "bytes": b"b"}[str(avro_type)]
