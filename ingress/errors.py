"""HTTP errors: one type, one JSON shape `{"error": {"code", "message"}}`."""

from __future__ import annotations

import logging
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse

from domain.cards import redact_pans
from domain.errors import PipelineError

log = logging.getLogger(__name__)


class ApiError(PipelineError):
    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        details: list[dict[str, Any]] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message, code=code)
        self.status = status
        self.details = details
        self.headers = headers


def error_response(
    status: int,
    code: str,
    message: str,
    details: list[dict[str, Any]] | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    body: dict[str, Any] = {"code": code, "message": redact_pans(message)}
    if details:
        body["details"] = details
    return JSONResponse({"error": body}, status_code=status, headers=headers)


async def handle_api_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ApiError)
    return error_response(exc.status, exc.code, exc.message, exc.details, exc.headers)


async def handle_unexpected(request: Request, exc: Exception) -> JSONResponse:
    """Never a stack trace or an input value in a response."""
    log.exception("unhandled error on %s %s", request.method, request.url.path)
    return error_response(500, "internal_error", "internal error; the request may be retried")


async def handle_http_exception(request: Request, exc: Exception) -> JSONResponse:
    status = getattr(exc, "status_code", 500)
    codes = {404: "not_found", 405: "method_not_allowed"}
    detail = str(getattr(exc, "detail", ""))
    # Keep the exception's headers: a 405 must say which methods are allowed (`Allow`).
    headers = dict(getattr(exc, "headers", None) or {})
    return error_response(status, codes.get(status, "http_error"), detail, headers=headers or None)
