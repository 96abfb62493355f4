"""Request models. Strict: amounts are integers, unknown fields are refused."""

from __future__ import annotations

import hashlib
import json
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictInt,
    StringConstraints,
    field_validator,
    model_validator,
)

from domain.money import MAX_MINOR_UNITS, normalize_currency

Id = Annotated[str, StringConstraints(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_.:\-]+$")]
Token = Annotated[str, StringConstraints(min_length=1, max_length=255, pattern=r"^[!-~]+$")]
MetaKey = Annotated[str, StringConstraints(min_length=1, max_length=40)]
MetaValue = Annotated[str, StringConstraints(max_length=500)]
IDEMPOTENCY_KEY_PATTERN = r"^[!-~]{1,255}$"


Country = Annotated[str, StringConstraints(pattern=r"^[A-Z]{2}$")]
GatewayName = Literal["stripe", "paypal", "square"]


class PaymentMethod(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    type: Literal["card"]
    token: Token | None = Field(
        default=None,
        description="A gateway token (pm_..., cnon:..., a vault id); never a card number. "
        "Used with whichever gateway the payment goes to.",
    )
    fingerprint: Token | None = Field(
        default=None,
        description="The card's fingerprint from the gateway (e.g. Stripe's card.fingerprint), "
        "for the fraud rules' per-card history; omitted: the token stands for the card.",
    )
    gateway_tokens: Annotated[dict[GatewayName, Token], Field(min_length=1)] | None = Field(
        default=None,
        description="The method's token for each gateway it may go to; routing only picks "
        "gateways named here. Give this or `token`, not both.",
    )

    @model_validator(mode="after")
    def _one_kind_of_token(self) -> PaymentMethod:
        if (self.token is None) == (self.gateway_tokens is None):
            raise ValueError("give either token or gateway_tokens")
        return self

    def token_for(self, gateway: str) -> str | None:
        if self.gateway_tokens is not None:
            return next((t for g, t in self.gateway_tokens.items() if g == gateway), None)
        return self.token


class CreatePayment(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    order_id: Id
    user_id: Id
    amount: Annotated[StrictInt, Field(gt=0, le=MAX_MINOR_UNITS, description="integer minor units")]
    currency: Annotated[str, StringConstraints(min_length=3, max_length=3)] = Field(
        description="ISO 4217 code, e.g. USD, JPY, BHD"
    )
    gateway: GatewayName | None = Field(
        default=None,
        description="The gateway to use, alone. Omitted: the routing rules choose, with "
        "failover to the next gateway when one provably did not charge.",
    )
    payment_method: PaymentMethod
    capture: Literal["automatic", "manual"] = "automatic"
    billing_country: Country | None = Field(
        default=None, description="ISO 3166-1 alpha-2; with ip_country, for the fraud rules"
    )
    ip_country: Country | None = Field(
        default=None, description="ISO 3166-1 alpha-2 country of the customer's IP address"
    )
    metadata: Annotated[dict[MetaKey, MetaValue], Field(max_length=20)] = Field(
        default_factory=dict
    )

    @field_validator("currency")
    @classmethod
    def _known_currency(cls, v: str) -> str:
        return normalize_currency(v)

    def fingerprint(self) -> str:
        """SHA-256 of the canonical body: same key + different body is a conflict."""
        canonical = json.dumps(self.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()


class PaymentAccepted(BaseModel):
    payment_id: str
    status: Literal["pending"] = "pending"


class ErrorBody(BaseModel):
    code: str
    message: str
    details: list[dict[str, Any]] | None = None


class ErrorResponse(BaseModel):
    error: ErrorBody


class PaymentView(BaseModel):
    payment_id: str
    status: str
    order_id: str
    user_id: str
    gateway: str
    amount: int
    currency: str
    captured_amount: int
    refunded_amount: int
    decline_code: str | None
    error_code: str | None
    gateway_reference: str | None
    card: dict[str, str | None] | None = None
    seq: int
    updated_at_ms: int


class CaptureBody(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    amount: Annotated[StrictInt, Field(gt=0, le=MAX_MINOR_UNITS)] | None = Field(
        default=None, description="minor units to capture; omitted captures all authorized"
    )


class RefundBody(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    amount: Annotated[StrictInt, Field(gt=0, le=MAX_MINOR_UNITS)] | None = Field(
        default=None, description="minor units; omitted refunds everything still refundable"
    )
    currency: Annotated[str, StringConstraints(min_length=3, max_length=3)] | None = Field(
        default=None, description="if given, must be the payment's currency"
    )
    reason: Literal["duplicate", "fraudulent", "requested_by_customer"] | None = None

    def fingerprint(self) -> str:
        canonical = json.dumps(self.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()


class ReviewBody(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    decision: Literal["approve", "reject"]


class ActionAccepted(BaseModel):
    payment_id: str
    action: Literal["capture", "cancel", "approve", "reject"]
    status: Literal["requested"] = "requested"


class RefundAccepted(BaseModel):
    refund_id: str
    payment_id: str
    status: Literal["initiated"] = "initiated"


class RefundView(BaseModel):
    refund_id: str
    payment_id: str
    status: str
    amount: int
    currency: str
    reason: str | None
    error_code: str | None
    gateway_reference: str | None
    seq: int
    updated_at_ms: int


class PaymentListItem(PaymentView):
    created_at_ms: int = Field(
        description="when the payment was created (its first status record), ms since the epoch"
    )


class PaymentList(BaseModel):
    data: list[PaymentListItem] = Field(description="newest first")
    next_cursor: str | None = Field(
        description="pass as `cursor` for the next page; null when there is nothing more"
    )


class RefundListItem(RefundView):
    created_at_ms: int = Field(
        description="when the refund was created (its first status record), ms since the epoch"
    )


class RefundList(BaseModel):
    data: list[RefundListItem] = Field(description="newest first")
    next_cursor: str | None = Field(
        description="pass as `cursor` for the next page; null when there is nothing more"
    )
