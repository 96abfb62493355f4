"""Typed errors under one root; HTTP codes, retries and dead-lettering are decided by type."""

from __future__ import annotations


class PipelineError(Exception):
    """Root of every error this project raises on purpose."""

    code: str = "internal_error"

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        if code is not None:
            self.code = code

    @property
    def message(self) -> str:
        return str(self)


# --- domain -----------------------------------------------------------------
class PaymentError(PipelineError):
    code = "payment_error"


class InvalidMoney(PaymentError):
    code = "invalid_amount"


class UnknownCurrency(InvalidMoney):
    code = "unsupported_currency"


class CurrencyMismatch(PaymentError):
    code = "currency_mismatch"


class IllegalTransition(PaymentError):
    code = "illegal_transition"


# --- gateways ---------------------------------------------------------------
class GatewayError(PipelineError):
    """A gateway call did not succeed; `retryable` tells the executor what to do."""

    code = "gateway_error"
    retryable = False


class GatewayDeclined(GatewayError):
    """The gateway refused the payment method. Never retried."""

    code = "card_declined"

    def __init__(self, message: str, *, code: str | None = None, decline_code: str | None = None):
        super().__init__(message, code=code)
        self.decline_code = decline_code or self.code


class GatewayInvalidRequest(GatewayError):
    code = "invalid_request"


class GatewayAuthError(GatewayError):
    code = "authentication_failed"


class GatewayUnavailable(GatewayError):
    code = "gateway_unavailable"
    retryable = True


class CircuitOpen(GatewayError):
    """Refused before anything was sent (the gateway's circuit is open): provably no charge."""

    code = "gateway_circuit_open"


class GatewayTimeout(GatewayUnavailable):
    """The request may have reached the gateway: the outcome is unknown."""

    code = "gateway_timeout"


class NotSupported(GatewayError):
    code = "not_supported"


# --- serialization ----------------------------------------------------------
class SerializationError(PipelineError):
    code = "serialization_error"
