"""The OpenAPI document, generated from the request and response models."""

from __future__ import annotations

from typing import Any, get_args

from pydantic import BaseModel

from domain.refunds import RefundState
from domain.status import PaymentStatus
from ingress.models import (
    CreatePayment,
    ErrorResponse,
    GatewayName,
    PaymentAccepted,
    PaymentList,
    PaymentView,
    RefundList,
)


def _ref(model: type[BaseModel]) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{model.__name__}"}


def _json(model: type[BaseModel], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": _ref(model)}}}


def _errors(*codes: int) -> dict[str, Any]:
    return {str(c): _json(ErrorResponse, "error") for c in codes}


def _query(name: str, schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {
        "name": name,
        "in": "query",
        "required": False,
        "schema": schema,
        "description": description,
    }


_ID = {"type": "string", "minLength": 1, "maxLength": 128, "pattern": r"^[A-Za-z0-9_.:\-]+$"}
_GATEWAYS = get_args(GatewayName)
_MS = {"type": "integer", "format": "int64", "minimum": 0}


def _listing_params() -> list[dict[str, Any]]:
    return [
        _query("created_from", _MS, "created at or after, ms since the epoch (inclusive)"),
        _query("created_to", _MS, "created at or before, ms since the epoch (inclusive)"),
        _query(
            "limit",
            {"type": "integer", "minimum": 1, "maximum": 200, "default": 50},
            "at most this many items",
        ),
        _query(
            "cursor",
            {"type": "string"},
            "`next_cursor` of the previous page (opaque); pages never repeat or skip an item",
        ),
    ]


_LISTING_NOTE = (
    "Newest first (by creation time, then id), from the Redis read model only. Unknown or "
    "repeated query parameters are refused. One request scans a bounded part of the index: "
    "with a selective filter a page may hold fewer than `limit` items (even none) and still "
    "carry a `next_cursor`; follow it until it is null."
)


def build_openapi() -> dict[str, Any]:
    schemas: dict[str, Any] = {}
    for model in (
        CreatePayment,
        PaymentAccepted,
        PaymentView,
        ErrorResponse,
        PaymentList,
        RefundList,
    ):
        schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
        schemas.update(schema.pop("$defs", {}))
        schemas[model.__name__] = schema
    return {
        "openapi": "3.1.0",  # pydantic's schemas are JSON Schema 2020-12, as 3.1 has it
        "info": {"title": "payments ingress", "version": "1"},
        "paths": {
            "/v1/payments": {
                "post": {
                    "operationId": "createPayment",
                    "parameters": [
                        {
                            "name": "Idempotency-Key",
                            "in": "header",
                            "required": True,
                            "schema": {"type": "string", "minLength": 1, "maxLength": 255},
                        }
                    ],
                    "requestBody": {
                        "required": True,
                        "content": {"application/json": {"schema": _ref(CreatePayment)}},
                    },
                    "responses": {
                        "202": _json(
                            PaymentAccepted, "accepted: on Kafka, acknowledged by the broker"
                        ),
                        **_errors(400, 401, 403, 409, 413, 415, 503),
                    },
                },
                "get": {
                    "operationId": "listPayments",
                    "description": _LISTING_NOTE,
                    "parameters": [
                        _query(
                            "status",
                            {"type": "string", "enum": [s.value for s in PaymentStatus]},
                            "current status",
                        ),
                        _query(
                            "gateway",
                            {"type": "string", "enum": list(_GATEWAYS)},
                            "gateway",
                        ),
                        _query("user_id", _ID, "the payer"),
                        _query("order_id", _ID, "the order"),
                        *_listing_params(),
                    ],
                    "responses": {
                        "200": _json(PaymentList, "a page of payments"),
                        **_errors(400, 401, 403, 503),
                    },
                },
            },
            "/v1/refunds": {
                "get": {
                    "operationId": "listRefunds",
                    "description": _LISTING_NOTE,
                    "parameters": [
                        _query(
                            "status",
                            {"type": "string", "enum": [s.value for s in RefundState]},
                            "current status",
                        ),
                        _query("payment_id", _ID, "refunds of this payment"),
                        *_listing_params(),
                    ],
                    "responses": {
                        "200": _json(RefundList, "a page of refunds"),
                        **_errors(400, 401, 403, 503),
                    },
                }
            },
            "/v1/payments/{payment_id}": {
                "get": {
                    "operationId": "getPayment",
                    "parameters": [
                        {
                            "name": "payment_id",
                            "in": "path",
                            "required": True,
                            "schema": {"type": "string"},
                        }
                    ],
                    "responses": {
                        "200": _json(PaymentView, "the payment"),
                        **_errors(401, 403, 404, 503),
                    },
                }
            },
            "/v1/webhooks/{gateway}": {
                "post": {
                    "operationId": "receiveWebhook",
                    "security": [],
                    "description": "Gateway webhooks; authenticated by the gateway's signature "
                    "over the raw body (Stripe-Signature, x-square-hmacsha256-signature, "
                    "PAYPAL-TRANSMISSION-*). 200 only after Kafka acknowledged.",
                    "parameters": [
                        {
                            "name": "gateway",
                            "in": "path",
                            "required": True,
                            "schema": {"type": "string", "enum": ["stripe", "paypal", "square"]},
                        }
                    ],
                    "requestBody": {
                        "required": True,
                        "content": {"application/json": {"schema": {"type": "object"}}},
                    },
                    "responses": {
                        "200": {"description": "received (and produced to gateway_events)"},
                        **_errors(400, 404, 413, 503),
                    },
                }
            },
            "/healthz": {
                "get": {"security": [], "responses": {"200": {"description": "process is up"}}}
            },
            "/readyz": {
                "get": {
                    "security": [],
                    "responses": {
                        "200": {"description": "ready"},
                        "503": {"description": "not ready"},
                    },
                }
            },
        },
        "components": {
            "schemas": schemas,
            "securitySchemes": {
                "apiKey": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "An API key (merchant or admin role); see the README",
                }
            },
        },
        # Every route needs a key but the webhooks (signed by the gateway), which opt out.
        "security": [{"apiKey": []}],
    }
