"""Avro contracts (`*.avsc`) and the codec that reads and writes them."""

from schemas.codec import SCHEMA_HEADER, Codec, codec, decode, encode

__all__ = ["SCHEMA_HEADER", "Codec", "codec", "decode", "encode"]
