"""The OpenAPI document, generated from the request and response models."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from ingress.models import CreatePayment, ErrorResponse, PaymentAccepted, PaymentView


def _ref(model: type[BaseModel]) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{model.__name__}"}


def _json(model: type[BaseModel], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": _ref(model)}}}


def _errors(*codes: int) -> dict[str, Any]:
    return {str(c): _json(ErrorResponse, "error") for c in codes}


def build_openapi() -> dict[str, Any]:
    schemas: dict[str, Any] = {}
    for model in (CreatePayment, PaymentAccepted, PaymentView, ErrorResponse):
        schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
        schemas.update(schema.pop("$defs", {}))
        schemas[model.__name__] = schema
    return {
        "openapi": "3.0.3",
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
                        **_errors(400, 409, 413, 415, 503),
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
                    "responses": {"200": _json(PaymentView, "the payment"), **_errors(404, 503)},
                }
            },
            "/v1/webhooks/{gateway}": {
                "post": {
                    "operationId": "receiveWebhook",
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
            "/healthz": {"get": {"responses": {"200": {"description": "process is up"}}}},
            "/readyz": {
                "get": {
                    "responses": {
                        "200": {"description": "ready"},
                        "503": {"description": "not ready"},
                    }
                }
            },
        },
        "components": {"schemas": schemas},
    }
