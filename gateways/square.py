"""Square adapter: the v2 Payments and Refunds APIs through the official `squareup` SDK.

`AsyncSquare` runs on an httpx client we own, on the httpx-aiohttp transport: ~0.4 ms of CPU per
call instead of ~2.5 ms with httpx's own transport (see gateways.md). The SDK's retries are off
(`max_retries: 0`): the executor retries, always with the same idempotency key.

Square specifics this module absorbs:
- The idempotency key is a body field capped at 45 characters; longer keys of ours are hashed
  deterministically (`square_idempotency_key`), so a retry still sends the same key.
- CompletePayment and CancelPayment take no idempotency key. They act on one payment's state,
  so a retry after a lost answer finds it COMPLETED / CANCELED: that is treated as success.
- CompletePayment has no amount: partial capture raises `NotSupported`. (Square can lower an
  APPROVED amount with UpdatePayment first; two non-atomic calls, so not done here.)
- A 200 whose body holds `errors` does not raise in the SDK; `_call` checks for it.
- `CARD_DECLINED_VERIFICATION_REQUIRED` is not a final decline: the buyer must verify
  (3-D Secure via the Web Payments SDK's verifyBuyer), so authorize answers `requires_action`.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import AsyncGenerator, Awaitable, Mapping, Sequence
from contextlib import aclosing
from datetime import UTC, datetime, timedelta
from typing import Any, Final, TypeVar

import aiohttp
import httpx
import httpx_aiohttp
from square import AsyncSquare
from square.core.api_error import ApiError
from square.core.request_options import RequestOptions

from domain.errors import (
    GatewayAuthError,
    GatewayDeclined,
    GatewayError,
    GatewayInvalidRequest,
    GatewayTimeout,
    GatewayUnavailable,
    NotSupported,
)
from domain.payment import CaptureMode
from domain.status import PaymentStatus
from gateways.base import (
    AuthorizeRequest,
    CancelRequest,
    CaptureRequest,
    CardDetails,
    EventKind,
    GatewayResult,
    LookupRequest,
    RefundRequest,
    RefundResult,
    RefundStatus,
    WebhookEffect,
)

__all__ = [
    "CARD_STATUS_MAP",
    "DECLINE_CODES",
    "ERROR_CATEGORIES",
    "ERROR_CODES",
    "HANDLED_EVENTS",
    "MAX_IDEMPOTENCY_KEY",
    "REFUND_STATUS_MAP",
    "STATUS_MAP",
    "SquareGateway",
    "interpret_event",
    "payment_status",
    "square_idempotency_key",
    "to_result",
    "translate_error",
    "translate_transport_error",
]

T = TypeVar("T")

# Every Payment.status Square documents (APPROVED, PENDING, COMPLETED, CANCELED, FAILED). A test
# reads the set from the SDK's own field documentation.
STATUS_MAP: Final[dict[str, PaymentStatus]] = {
    "APPROVED": PaymentStatus.AUTHORIZED,  # authorized, waiting for CompletePayment
    "PENDING": PaymentStatus.PROCESSING,  # the outcome arrives later (payment.updated)
    "COMPLETED": PaymentStatus.SUCCEEDED,
    "CANCELED": PaymentStatus.CANCELED,
    "FAILED": PaymentStatus.FAILED,
}

# Every CardPaymentDetails.status (AUTHORIZED, CAPTURED, VOIDED, FAILED): used only when a
# payment carries no top-level status, which Square always sends; kept complete regardless.
CARD_STATUS_MAP: Final[dict[str, PaymentStatus]] = {
    "AUTHORIZED": PaymentStatus.AUTHORIZED,
    "CAPTURED": PaymentStatus.SUCCEEDED,
    "VOIDED": PaymentStatus.CANCELED,
    "FAILED": PaymentStatus.FAILED,
}

# Every PaymentRefund.status (PENDING, COMPLETED, REJECTED, FAILED).
REFUND_STATUS_MAP: Final[dict[str, RefundStatus]] = {
    "PENDING": RefundStatus.INITIATED,
    "COMPLETED": RefundStatus.PROCESSED,
    "REJECTED": RefundStatus.FAILED,
    "FAILED": RefundStatus.FAILED,
}

# Square error codes that mean "the card (network or issuer) said no". Our error code is
# `insufficient_funds` for INSUFFICIENT_FUNDS and `card_declined` for the rest; the decline
# code is Square's code in lower case (generic_decline, cvv_failure, ...), like Stripe's.
DECLINE_CODES: Final[frozenset[str]] = frozenset(
    {
        "GENERIC_DECLINE",
        "CARD_DECLINED",
        "CARD_DECLINED_CALL_ISSUER",
        "CARD_DECLINED_VERIFICATION_REQUIRED",
        "INSUFFICIENT_FUNDS",
        "CVV_FAILURE",
        "VERIFY_CVV_FAILURE",
        "ADDRESS_VERIFICATION_FAILURE",
        "VERIFY_AVS_FAILURE",
        "INVALID_POSTAL_CODE",
        "CARD_EXPIRED",
        "INVALID_EXPIRATION",
        "BAD_EXPIRATION",
        "EXPIRATION_FAILURE",
        "PAN_FAILURE",
        "INVALID_ACCOUNT",
        "ACCOUNT_UNUSABLE",
        "CARD_NOT_SUPPORTED",
        "INSUFFICIENT_PERMISSIONS",
        "CARDHOLDER_INSUFFICIENT_PERMISSIONS",
        "TRANSACTION_LIMIT",
        "PAYMENT_LIMIT_EXCEEDED",
        "VOICE_FAILURE",
        "INVALID_PIN",
        "MISSING_PIN",
        "ALLOWABLE_PIN_TRIES_EXCEEDED",
        "CHIP_INSERTION_REQUIRED",
        "READER_DECLINED",
        "RESERVATION_DECLINED",
        "GIFT_CARD_AVAILABLE_AMOUNT",
        "BUYER_REFUSED_PAYMENT",
    }
)

_AUTH = (GatewayAuthError, "authentication_failed")
_UNAVAILABLE = (GatewayUnavailable, "gateway_unavailable")
_TIMEOUT = (GatewayTimeout, "gateway_timeout")
_INVALID = (GatewayInvalidRequest, "invalid_request")

# Square error codes with a meaning of their own; anything else falls back on the error's
# category, then on the HTTP status (`translate_error`). A test checks every SDK code lands.
ERROR_CODES: Final[dict[str, tuple[type[GatewayError], str]]] = {
    **{code: (GatewayDeclined, "card_declined") for code in DECLINE_CODES},
    "INSUFFICIENT_FUNDS": (GatewayDeclined, "insufficient_funds"),
    "UNAUTHORIZED": _AUTH,
    "ACCESS_TOKEN_EXPIRED": _AUTH,
    "ACCESS_TOKEN_REVOKED": _AUTH,
    "CLIENT_DISABLED": _AUTH,
    "FORBIDDEN": _AUTH,
    "INSUFFICIENT_SCOPES": _AUTH,
    "APPLICATION_DISABLED": _AUTH,
    "V1_APPLICATION": _AUTH,
    "V1_ACCESS_TOKEN": _AUTH,
    "CARD_PROCESSING_NOT_ENABLED": _AUTH,
    "MERCHANT_SUBSCRIPTION_NOT_FOUND": _AUTH,
    "RATE_LIMITED": _UNAVAILABLE,
    "INTERNAL_SERVER_ERROR": _UNAVAILABLE,
    "SERVICE_UNAVAILABLE": _UNAVAILABLE,
    "BAD_GATEWAY": _UNAVAILABLE,
    "TEMPORARY_ERROR": _UNAVAILABLE,
    # The request reached Square and its own upstream did not answer: money may have moved.
    "GATEWAY_TIMEOUT": _TIMEOUT,
    "REQUEST_TIMEOUT": _TIMEOUT,
    # Same code as the Stripe adapter, so the executor treats both gateways alike.
    "IDEMPOTENCY_KEY_REUSED": (GatewayInvalidRequest, "idempotency_error"),
    "INVALID_CARD_DATA": _INVALID,
    "CARD_TOKEN_USED": _INVALID,
    "CARD_TOKEN_EXPIRED": _INVALID,
    "SOURCE_USED": _INVALID,
    "SOURCE_EXPIRED": _INVALID,
    "NOT_FOUND": _INVALID,
    "REFUND_AMOUNT_INVALID": _INVALID,
}

ERROR_CATEGORIES: Final[dict[str, tuple[type[GatewayError], str]]] = {
    "API_ERROR": _UNAVAILABLE,
    "AUTHENTICATION_ERROR": _AUTH,
    "RATE_LIMIT_ERROR": _UNAVAILABLE,
    "PAYMENT_METHOD_ERROR": (GatewayDeclined, "card_declined"),
    "INVALID_REQUEST_ERROR": _INVALID,
    "REFUND_ERROR": _INVALID,
    "MERCHANT_SUBSCRIPTION_ERROR": _AUTH,
    "EXTERNAL_VENDOR_ERROR": _UNAVAILABLE,
}

VERIFICATION_REQUIRED = "CARD_DECLINED_VERIFICATION_REQUIRED"
MAX_IDEMPOTENCY_KEY = 45  # Square's limit on every idempotency_key
MAX_NOTE = 500  # Square's limit on Payment.note
_HASHED_KEY_PREFIX = "h:"
# A lookup given no window lists payments created from this long before ours (clock skew).
LOOKUP_SLACK_MS = 10 * 60 * 1000
# Within a window, the stretch from this long before our request is listed first: with clocks
# that agree our payment is in it, and the listing stops there.
LIKELY_SKEW_MS = 60 * 1000
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_NO_RETRIES: Final[RequestOptions] = {"max_retries": 0}


class VerificationRequired(GatewayDeclined):
    """Square wants buyer verification (SCA) before it approves; carries the FAILED payment."""

    def __init__(self, message: str, *, payment: Mapping[str, Any] | None) -> None:
        super().__init__(message, code="card_declined", decline_code=VERIFICATION_REQUIRED.lower())
        self.payment = payment


def square_idempotency_key(key: str) -> str:
    """Our key, or a deterministic 45-character digest of it when Square's cap is exceeded.

    "h:" + unpadded base64url(SHA-256) is exactly 45 characters. Keys that already start with
    "h:" are hashed too, so a short key can never collide with another key's digest.
    """
    if len(key) <= MAX_IDEMPOTENCY_KEY and not key.startswith(_HASHED_KEY_PREFIX):
        return key
    digest = hashlib.sha256(key.encode()).digest()
    return _HASHED_KEY_PREFIX + base64.urlsafe_b64encode(digest).decode().rstrip("=")


class SquareGateway:
    name = "square"

    def __init__(
        self,
        *,
        access_token: str,
        api_base: str,
        timeout_s: float,
        location_id: str = "SANDBOX_LOCATION",
    ) -> None:
        self._location_id = location_id
        self._http = httpx_aiohttp.HttpxAiohttpClient(timeout=timeout_s)
        self._client = AsyncSquare(
            base_url=api_base, token=access_token, httpx_client=self._http, timeout=timeout_s
        )

    async def authorize(self, req: AuthorizeRequest) -> GatewayResult:
        try:
            response = await _call(
                self._client.payments.create(
                    source_id=req.method_token,
                    idempotency_key=square_idempotency_key(req.idempotency_key),
                    amount_money={"amount": req.amount.amount, "currency": req.amount.currency},
                    autocomplete=req.capture is CaptureMode.AUTOMATIC,
                    reference_id=req.payment_id,  # how webhooks find their way back to us
                    location_id=self._location_id,
                    # Shown in Square's dashboard for reconciliation; Square caps notes.
                    note=f"order {req.order_id}"[:MAX_NOTE],
                    request_options=_NO_RETRIES,
                )
            )
        except VerificationRequired as exc:
            return _requires_action(exc, token=req.method_token)
        return to_result(_dump(response.payment), token=req.method_token)

    async def capture(self, req: CaptureRequest) -> GatewayResult:
        if req.amount is not None:
            await self._check_capture_amount(req)
        try:
            response = await _call(
                self._client.payments.complete(
                    payment_id=req.gateway_reference, request_options=_NO_RETRIES
                )
            )
        except GatewayInvalidRequest:
            return await self._already(req.gateway_reference, "COMPLETED")
        return to_result(_dump(response.payment))

    async def cancel(self, req: CancelRequest) -> GatewayResult:
        try:
            response = await _call(
                self._client.payments.cancel(
                    payment_id=req.gateway_reference, request_options=_NO_RETRIES
                )
            )
        except GatewayInvalidRequest:
            return await self._already(req.gateway_reference, "CANCELED")
        return to_result(_dump(response.payment))

    async def refund(self, req: RefundRequest) -> RefundResult:
        response = await _call(
            self._client.refunds.refund_payment(
                idempotency_key=square_idempotency_key(req.idempotency_key),
                amount_money={"amount": req.amount.amount, "currency": req.amount.currency},
                payment_id=req.gateway_reference,
                reason=req.reason,
                request_options=_NO_RETRIES,
            )
        )
        return to_refund_result(_dump(response.refund))

    async def fetch(self, gateway_reference: str) -> GatewayResult:
        response = await _call(
            self._client.payments.get(payment_id=gateway_reference, request_options=_NO_RETRIES)
        )
        return to_result(_dump(response.payment))

    async def lookup(self, req: LookupRequest) -> GatewayResult | None:
        """By reference when we have one; otherwise ListPayments, matched on the
        `reference_id` every payment we create carries.

        Only over `req.window`, the creation times at which our create calls can have reached
        Square (`domain.janitor.lookup_window` says why nothing of ours lies outside it), so a
        search costs the payments made in that window, not every payment since ours. The
        window is listed oldest first from a minute before our request (where our payment is
        when clocks agree), then its earlier part, and listing stops at our payment. None:
        nothing of ours in the window, i.e. Square never made a payment for it.
        """
        if req.gateway_reference:
            return await self.fetch(req.gateway_reference)
        begin, end = req.window or (req.created_at_ms - LOOKUP_SLACK_MS, None)
        likely = max(begin, req.created_at_ms - LIKELY_SKEW_MS)
        if end is not None:
            likely = min(likely, end)
        for leg in ((likely, end), (begin, likely)):
            if leg[1] is not None and leg[0] >= leg[1]:
                continue  # an empty stretch: nothing to list
            found = await self._find(req.payment_id, *leg)
            if found is not None:
                return found
        return None

    async def charges_since(
        self, since_ms: int, until_ms: int | None = None
    ) -> list[tuple[str, GatewayResult]]:
        """Every payment created in [since_ms, until_ms) (until now by default) that carries
        our payment id as its `reference_id`. Others are skipped unread (never dumped)."""
        found = []
        async with aclosing(self._pages(since_ms, until_ms)) as pages:
            async for page in pages:
                for payment in page:
                    if payment.reference_id:
                        found.append((str(payment.reference_id), to_result(_dump(payment))))
        return found

    async def _find(
        self, payment_id: str, begin_ms: int, end_ms: int | None
    ) -> GatewayResult | None:
        """Our payment among those created in [begin_ms, end_ms); no page after it is fetched,
        and only it is dumped (the SDK's pydantic dump is what a listing spends its time on)."""
        async with aclosing(self._pages(begin_ms, end_ms)) as pages:
            async for page in pages:
                for payment in page:
                    if payment.reference_id == payment_id:
                        return to_result(_dump(payment))
        return None

    async def _pages(self, begin_ms: int, end_ms: int | None) -> AsyncGenerator[list[Any], None]:
        """ListPayments of our location created in [begin_ms, end_ms), oldest first: one page
        (up to 100 SDK models) at a time, the next fetched only when asked for."""
        page = await _call(
            self._client.payments.list(
                begin_time=_rfc3339(begin_ms),
                end_time=None if end_ms is None else _rfc3339(end_ms),
                location_id=self._location_id,
                sort_order="ASC",
                request_options=_NO_RETRIES,
            )
        )
        while True:
            _raise_for_errors(page.response)
            yield list(page.items or ())
            if not page.has_next or page.get_next is None:
                return
            page = await _call(page.get_next())
            if page is None:
                return

    async def close(self) -> None:
        await self._http.aclose()

    async def _check_capture_amount(self, req: CaptureRequest) -> None:
        """CompletePayment captures the whole approved amount: any other amount is refused."""
        assert req.amount is not None
        payment = _dump((await self._get(req.gateway_reference)).payment)
        approved, currency = (
            _money(payment.get("approved_money")) or _money(payment.get("amount_money")) or (0, "")
        )
        if req.amount.currency != currency:
            raise GatewayInvalidRequest(
                f"capture in {req.amount.currency} of a Square payment in {currency}"
            )
        if req.amount.amount != approved:
            raise NotSupported(
                "Square completes the whole approved amount; partial capture is not supported"
            )

    async def _already(self, payment_id: str, wanted: str) -> GatewayResult:
        """After a refused complete/cancel: success if an earlier attempt already did it.

        Those calls have no idempotency key, so the executor's retry of a call whose answer
        was lost lands on a payment that is already COMPLETED (or CANCELED).
        """
        result = to_result(_dump((await self._get(payment_id)).payment))
        if result.provider_status != wanted:
            raise GatewayInvalidRequest(
                f"Square payment {payment_id} is {result.provider_status}, not {wanted}"
            )
        return result

    async def _get(self, payment_id: str) -> Any:
        return await _call(
            self._client.payments.get(payment_id=payment_id, request_options=_NO_RETRIES)
        )


# --- mapping --------------------------------------------------------------------------------


def payment_status(payment: Mapping[str, Any]) -> PaymentStatus | None:
    """Our status for a Square payment; None when Square reports one we do not know."""
    status = payment.get("status")
    if status is not None:
        return STATUS_MAP.get(str(status))
    card_status = (payment.get("card_details") or {}).get("status")
    return CARD_STATUS_MAP.get(str(card_status)) if card_status is not None else None


def to_result(payment: Mapping[str, Any], *, token: str | None = None) -> GatewayResult:
    """Map a Square payment to our result; unknown statuses are an error, never a guess."""
    provider_status = str(
        payment.get("status") or (payment.get("card_details") or {}).get("status")
    )
    status = payment_status(payment)
    if status is None:
        raise GatewayInvalidRequest(f"unmapped Square payment status {provider_status!r}")
    failed = status is PaymentStatus.FAILED
    code = _first_card_error(payment) if failed else None
    return GatewayResult(
        status=status,
        gateway_reference=str(payment["id"]),
        provider_status=provider_status,
        captured_amount=_captured(payment, status),
        decline_code=code.lower() if code else None,
        error_code=_our_decline_code(code) if failed else None,
        card=card_details(payment, token=token),
    )


def to_refund_result(refund: Mapping[str, Any]) -> RefundResult:
    provider_status = str(refund.get("status"))
    amount, _ = _money(refund.get("amount_money")) or (0, "")
    return RefundResult(
        # An unknown refund status is reported as initiated: never claimed done (or failed)
        # while money may still be moving; refund.updated or a fetch settles it.
        status=REFUND_STATUS_MAP.get(provider_status, RefundStatus.INITIATED),
        refund_reference=str(refund["id"]),
        amount=amount,
        provider_status=provider_status,
    )


def card_details(payment: Mapping[str, Any], *, token: str | None = None) -> CardDetails | None:
    """The card summary Square returns (brand, last 4, expiry); never a full number."""
    card: Mapping[str, Any] = (payment.get("card_details") or {}).get("card") or {}
    if not card and token is None:
        return None
    brand = card.get("card_brand")
    return CardDetails(
        brand=str(brand).lower() if brand else None,
        last4=card.get("last_4"),
        exp_month=card.get("exp_month"),
        exp_year=card.get("exp_year"),
        token=token,
    )


def _captured(payment: Mapping[str, Any], status: PaymentStatus) -> int:
    if status is not PaymentStatus.SUCCEEDED:
        return 0
    amount, _ = _money(payment.get("total_money")) or _money(payment.get("amount_money")) or (0, "")
    return amount


def _money(value: Any) -> tuple[int, str] | None:
    if not isinstance(value, Mapping) or not isinstance(value.get("amount"), int):
        return None
    return int(value["amount"]), str(value.get("currency") or "")


def _first_card_error(payment: Mapping[str, Any]) -> str | None:
    errors = (payment.get("card_details") or {}).get("errors") or []
    code = errors[0].get("code") if errors and isinstance(errors[0], Mapping) else None
    return str(code) if code else None


def _our_decline_code(code: str | None) -> str:
    return "insufficient_funds" if code == "INSUFFICIENT_FUNDS" else "card_declined"


def _requires_action(exc: VerificationRequired, *, token: str) -> GatewayResult:
    payment = exc.payment or {}
    return GatewayResult(
        status=PaymentStatus.REQUIRES_ACTION,
        gateway_reference=str(payment.get("id") or ""),
        # Square marks this payment FAILED: a verified retry creates a new one.
        provider_status=str(payment.get("status") or "FAILED"),
        message=f"{VERIFICATION_REQUIRED}: {exc.message}",
        card=card_details(payment, token=token),
    )


def _rfc3339(ms: int) -> str:
    """ms since the epoch as Square writes times: RFC 3339, UTC, milliseconds."""
    moment = _EPOCH + timedelta(milliseconds=ms)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _dump(model: Any) -> dict[str, Any]:
    """An SDK model as Square's own JSON (wire names such as `last_4`), or {} for None."""
    if model is None:
        return {}
    dumped: dict[str, Any] = model.model_dump(by_alias=True, exclude_none=True, mode="json")
    return dumped


# --- errors ---------------------------------------------------------------------------------


def translate_error(
    http_status: int | None, errors: Sequence[Mapping[str, Any]], body: Any = None
) -> GatewayError:
    """The typed error for a Square error answer: by code, then category, then HTTP status."""
    first = errors[0] if errors else {}
    code = str(first.get("code") or "")
    detail = str(first.get("detail") or code or f"Square answered HTTP {http_status}")
    if code == VERIFICATION_REQUIRED:
        payment = body.get("payment") if isinstance(body, Mapping) else None
        return VerificationRequired(detail, payment=payment)
    kind, our_code = (
        ERROR_CODES.get(code)
        or ERROR_CATEGORIES.get(str(first.get("category")))
        or _by_status(http_status)
    )
    if kind is GatewayDeclined:
        return GatewayDeclined(
            detail, code=_our_decline_code(code), decline_code=code.lower() or None
        )
    return kind(f"square {code or http_status}: {detail}", code=our_code)


def _by_status(http_status: int | None) -> tuple[type[GatewayError], str]:
    if http_status in (401, 403):
        return _AUTH
    if http_status in (408, 504):
        return _TIMEOUT
    if http_status == 402:
        return GatewayDeclined, "card_declined"
    if http_status == 429 or http_status is None or http_status >= 500:
        return _UNAVAILABLE
    return _INVALID


async def _call(awaitable: Awaitable[T]) -> T:
    """Await one SDK call and translate Square's answers and transport failures."""
    try:
        response = await awaitable
    except ApiError as exc:
        raise translate_error(exc.status_code, _error_dicts(exc.body), exc.body) from exc
    except httpx.TransportError as exc:
        raise translate_transport_error(exc) from exc
    except aiohttp.ClientError as exc:  # anything the transport did not map to httpx
        raise GatewayTimeout(f"square request failed mid-flight: {type(exc).__name__}") from exc
    _raise_for_errors(response)
    return response


def _raise_for_errors(response: Any) -> None:
    """A 2xx carrying errors: the SDK does not raise for it, so we do."""
    errors = getattr(response, "errors", None)
    if errors:
        raise translate_error(200, [_dump(e) for e in errors], _dump(response))


def _error_dicts(body: Any) -> list[Mapping[str, Any]]:
    errors = body.get("errors") if isinstance(body, Mapping) else None
    if not isinstance(errors, list):
        return []
    return [e for e in errors if isinstance(e, Mapping)]


def translate_transport_error(exc: httpx.TransportError) -> GatewayError:
    """Unavailable when the request never left; timeout (outcome unknown) otherwise."""
    if _never_sent(exc):
        return GatewayUnavailable(f"cannot reach square: {type(exc).__name__}")
    # The request may have reached Square: whether money moved is unknown.
    if isinstance(exc, httpx.TimeoutException):
        return GatewayTimeout("square did not answer in time")
    return GatewayTimeout(f"connection to square lost mid-request: {type(exc).__name__}")


def _never_sent(exc: httpx.TransportError) -> bool:
    """True when the request provably never reached Square (safe to call unavailable).

    The httpx-aiohttp transport maps every aiohttp connection error, a server hang-up after
    the request included, to httpx.ConnectTimeout, so the aiohttp cause decides.
    """
    cause = exc.__cause__
    if isinstance(cause, aiohttp.ClientError):
        return isinstance(cause, aiohttp.ClientConnectorError | aiohttp.ConnectionTimeoutError)
    return isinstance(
        exc,
        httpx.ConnectError | httpx.ConnectTimeout | httpx.PoolTimeout | httpx.UnsupportedProtocol,
    )


# --- webhooks -------------------------------------------------------------------------------

_PAYMENT_EVENTS = frozenset({"payment.created", "payment.updated"})
_REFUND_EVENTS = frozenset({"refund.created", "refund.updated"})
HANDLED_EVENTS: frozenset[str] = _PAYMENT_EVENTS | _REFUND_EVENTS | {"dispute.created"}


def interpret_event(event_type: str, payload: Mapping[str, Any]) -> WebhookEffect | None:
    """What a verified Square event says about our payment; None for types we do not act on."""
    data = payload.get("data") or {}
    wrapper: Mapping[str, Any] = data.get("object") or {}
    if event_type in _PAYMENT_EVENTS:
        return _payment_effect(wrapper.get("payment") or {})
    if event_type in _REFUND_EVENTS:
        return _refund_effect(wrapper.get("refund") or {})
    if event_type == "dispute.created":
        # Square nests the dispute as data.object.object; "dispute" is accepted too.
        return _dispute_effect(wrapper.get("object") or wrapper.get("dispute") or {})
    return None


def _payment_effect(payment: Mapping[str, Any]) -> WebhookEffect | None:
    status = payment_status(payment)
    if status is None:
        return None  # a status Square added after this code: skipped, never guessed
    code = _first_card_error(payment) if status is PaymentStatus.FAILED else None
    return WebhookEffect(
        kind=EventKind.PAYMENT,
        status=status,
        gateway_reference=payment.get("id"),
        amount=_captured(payment, status),
        decline_code=code.lower() if code else None,
    )


def _refund_effect(refund: Mapping[str, Any]) -> WebhookEffect:
    amount, _ = _money(refund.get("amount_money")) or (0, "")
    return WebhookEffect(
        kind=EventKind.REFUND,
        refund_status=REFUND_STATUS_MAP.get(str(refund.get("status")), RefundStatus.INITIATED),
        gateway_reference=refund.get("payment_id"),
        refund_reference=refund.get("id"),
        amount=amount,
    )


def _dispute_effect(dispute: Mapping[str, Any]) -> WebhookEffect:
    amount, _ = _money(dispute.get("amount_money")) or (0, "")
    return WebhookEffect(
        kind=EventKind.DISPUTE,
        status=PaymentStatus.DISPUTED,
        gateway_reference=(dispute.get("disputed_payment") or {}).get("payment_id"),
        amount=amount,
    )
