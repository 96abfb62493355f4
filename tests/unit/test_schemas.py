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
    assert codec("payment_status").headers == [("avro-schema", b"payments.v1.PaymentStatus.v1")]


def test_encoding_a_float_amount_is_refused() -> None:
    rec = requested_record() | {"amount": 19.99}
    with pytest.raises(SerializationError):
        encode("payment_requested", rec)
