"""Reading request bodies: a size limit, a strict JSON content type."""

from __future__ import annotations

import json
from typing import Any

from starlette.requests import Request

from ingress.errors import ApiError

JSON_TYPES = ("application/json",)


async def read_body(request: Request, max_bytes: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > max_bytes:
        raise ApiError(413, "payload_too_large", f"body exceeds {max_bytes} bytes")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > max_bytes:
            raise ApiError(413, "payload_too_large", f"body exceeds {max_bytes} bytes")
    return bytes(body)


def require_json_type(request: Request) -> None:
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype not in JSON_TYPES:
        raise ApiError(415, "unsupported_media_type", "Content-Type must be application/json")


def parse_json(body: bytes) -> Any:
    try:
        return json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise ApiError(400, "invalid_json", "body is not valid JSON") from None


async def read_json(request: Request, max_bytes: int) -> Any:
    require_json_type(request)
    return parse_json(await read_body(request, max_bytes))
