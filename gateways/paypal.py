"""PayPal adapter: Orders v2 and Payments v2 through the official `paypal-server-sdk`.

The SDK is synchronous (requests), so every call runs in a bounded thread pool. It has no
base-URL parameter: a `Configuration` subclass points it at `api_base`.

We pay server-side with a vaulted card: `authorize` creates an order with
`payment_source.card.vault_id` and `PayPal-Request-Id`, which PayPal processes at once (a
single-step order): intent CAPTURE charges, intent AUTHORIZE holds the funds.

What `GatewayResult.gateway_reference` holds, so that the next call on the payment works:

- a charge (automatic capture, or `capture`): the **capture id**; `refund` refunds it.
- a hold (manual capture): the **authorization id**; `capture` and `cancel` act on it.
- `requires_action` (3-D Secure): the **order id**; once the buyer approved, `capture`
  captures the order (intent CAPTURE).
- `fetch` takes any of the three: it asks for a capture, then an authorization, then an order.

OAuth: one token is fetched before any concurrent call (under an asyncio lock) and refreshed
ahead of its expiry; the SDK gets it through its token-provider hook, so its own threads
never fetch one each.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Final

import requests
from apimatic_core.exceptions.auth_validation_exception import AuthValidationException
from paypalserversdk.configuration import Configuration, Server
from paypalserversdk.exceptions.api_exception import ApiException
from paypalserversdk.http.auth.o_auth_2 import ClientCredentialsAuthCredentials
from paypalserversdk.models.amount_with_breakdown import AmountWithBreakdown
from paypalserversdk.models.authorization_status import AuthorizationStatus
from paypalserversdk.models.capture_request import CaptureRequest as PayPalCaptureRequest
from paypalserversdk.models.capture_status import CaptureStatus
from paypalserversdk.models.card_request import CardRequest
from paypalserversdk.models.checkout_payment_intent import CheckoutPaymentIntent
from paypalserversdk.models.money import Money as PayPalMoney
from paypalserversdk.models.order_request import OrderRequest
from paypalserversdk.models.order_status import OrderStatus
from paypalserversdk.models.payment_source import PaymentSource
from paypalserversdk.models.purchase_unit_request import PurchaseUnitRequest
from paypalserversdk.models.refund_request import RefundRequest as PayPalRefundRequest
from paypalserversdk.models.refund_status import RefundStatus as PayPalRefundStatus
from paypalserversdk.paypal_serversdk_client import PaypalServersdkClient
from requests.adapters import HTTPAdapter

from domain.errors import (
    GatewayAuthError,
    GatewayDeclined,
    GatewayError,
    GatewayInvalidRequest,
    GatewayTimeout,
    GatewayUnavailable,
    NotSupported,
)
from domain.money import Money, from_decimal_string, to_decimal_string
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

log = logging.getLogger(__name__)

S = PaymentStatus

# Every PayPal status, mapped; tests enumerate the SDK's own enums against these.
# COMPLETED says only that the order's intent ran: the capture or authorization inside it
# decides (see `order_result`).
ORDER_STATUS_MAP: Final[dict[str, PaymentStatus]] = {
    OrderStatus.CREATED: S.PENDING,
    OrderStatus.SAVED: S.PENDING,
    OrderStatus.APPROVED: S.PROCESSING,  # the buyer is done; our capture is next
    OrderStatus.VOIDED: S.CANCELED,
    OrderStatus.COMPLETED: S.SUCCEEDED,
    OrderStatus.PAYER_ACTION_REQUIRED: S.REQUIRES_ACTION,
}

CAPTURE_STATUS_MAP: Final[dict[str, PaymentStatus]] = {
    CaptureStatus.COMPLETED: S.SUCCEEDED,
    CaptureStatus.DECLINED: S.FAILED,
    CaptureStatus.PARTIALLY_REFUNDED: S.PARTIALLY_REFUNDED,
    CaptureStatus.PENDING: S.PROCESSING,
    CaptureStatus.REFUNDED: S.REFUNDED,
    CaptureStatus.FAILED: S.FAILED,
}

AUTHORIZATION_STATUS_MAP: Final[dict[str, PaymentStatus]] = {
    AuthorizationStatus.CREATED: S.AUTHORIZED,
    AuthorizationStatus.CAPTURED: S.SUCCEEDED,
    AuthorizationStatus.DENIED: S.FAILED,
    # Money was captured; the rest of the hold stays open on PayPal, but our payment has one
    # capture, so it is captured.
    AuthorizationStatus.PARTIALLY_CAPTURED: S.SUCCEEDED,
    AuthorizationStatus.VOIDED: S.CANCELED,
    AuthorizationStatus.PENDING: S.PROCESSING,
}

REFUND_STATUS_MAP: Final[dict[str, RefundStatus]] = {
    PayPalRefundStatus.CANCELLED: RefundStatus.FAILED,
    PayPalRefundStatus.FAILED: RefundStatus.FAILED,
    PayPalRefundStatus.PENDING: RefundStatus.INITIATED,
    PayPalRefundStatus.COMPLETED: RefundStatus.PROCESSED,
}

# Error issues that are the payer's instrument saying no: declines, never retried.
DECLINE_ISSUES: Final[dict[str, str]] = {
    "INSTRUMENT_DECLINED": "card_declined",
    "TRANSACTION_REFUSED": "card_declined",
    "INSUFFICIENT_FUNDS": "insufficient_funds",
    "PAYER_CANNOT_PAY": "card_declined",
    "CARD_EXPIRED": "card_declined",
    "REFERENCED_CARD_EXPIRED": "card_declined",
    "REDIRECT_PAYER_FOR_ALTERNATE_FUNDING": "card_declined",
    "MAX_NUMBER_OF_PAYMENT_ATTEMPTS_EXCEEDED": "card_declined",
    "DECLINED_DUE_TO_RELATED_TXN": "card_declined",
    "AUTHORIZATION_DENIED": "card_declined",
    "COMPLIANCE_VIOLATION": "card_declined",
    "PAYER_ACCOUNT_LOCKED_OR_CLOSED": "card_declined",
    "PAYER_ACCOUNT_RESTRICTED": "card_declined",
}
# The buyer has to act (approve, pass 3-D Secure) before the order can be paid.
ACTION_ISSUES: Final = frozenset({"PAYER_ACTION_REQUIRED", "ORDER_NOT_APPROVED"})
IDEMPOTENCY_ISSUES: Final = frozenset({"PAYPAL_REQUEST_ID_PREVIOUSLY_USED", "DUPLICATE_REQUEST_ID"})
# The same request is still being processed by PayPal: retry with the same key.
IN_PROGRESS_ISSUES: Final = frozenset({"ORDER_COMPLETION_IN_PROGRESS"})
ALREADY_CAPTURED_ISSUES: Final = frozenset(
    {"PREVIOUSLY_CAPTURED", "AUTHORIZATION_ALREADY_CAPTURED"}
)

# Card processor response codes on a DECLINED capture (PayPal's `ProcessorResponseCode`).
PROCESSOR_DECLINES: Final[dict[str, str]] = {
    "5120": "insufficient_funds",
    "0500": "do_not_honor",
    "5100": "generic_decline",
    "5400": "expired_card",
    "5110": "cvv2_failure",
    "5180": "invalid_or_restricted_card",
    "5650": "authentication_required",
    "9500": "suspected_fraud",
}

DEFAULT_TOKEN_LIFETIME_S = 32_400  # what PayPal grants when a token omits expires_in
REPRESENTATION = "return=representation"
# How long PayPal honours a PayPal-Request-Id on create-order, kept on the safe side: within
# it a replayed request returns the first one's order instead of making another.
REQUEST_ID_WINDOW_MS = 6 * 3600 * 1000


# --- amounts ---------------------------------------------------------------------------------


def to_value(money: Money) -> str:
    """Our integer minor units as PayPal's decimal string: 1000 USD -> "10.00"."""
    return to_decimal_string(money.amount, money.currency)


# PayPal's decimal string as integer minor units, exactly: "10.00" USD -> 1000.
to_minor_units = from_decimal_string


def _paypal_money(money: Money) -> PayPalMoney:
    return PayPalMoney(currency_code=money.currency, value=to_value(money))


def _amount_of(obj: Mapping[str, Any] | None) -> int:
    """Minor units of a resource's `amount` ({currency_code, value}); 0 when absent."""
    amount = (obj or {}).get("amount")
    if not isinstance(amount, Mapping):
        return 0
    return to_minor_units(amount.get("value"), str(amount.get("currency_code")))


# --- errors ------------------------------------------------------------------------------------


class _NotFound(GatewayInvalidRequest):
    """PayPal has no such object (404): lets a flow try the other kind of reference."""


class _PayerActionRequired(GatewayInvalidRequest):
    code = "requires_action"


class _AlreadyCaptured(GatewayInvalidRequest):
    pass


def _error_body(response: Any) -> Mapping[str, Any]:
    try:
        body = json.loads(getattr(response, "text", "") or "{}")
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def translate_api_error(status: int, body: Mapping[str, Any]) -> GatewayError:
    """PayPal's error answer (HTTP status and `{name, details[].issue}`) as our typed error."""
    details = body.get("details") or []
    issues = [str(d.get("issue")) for d in details if isinstance(d, Mapping) and d.get("issue")]
    issue = issues[0] if issues else None
    name = body.get("name") or body.get("error") or "error"
    message = f"paypal {status} {name}" + (f": {issue}" if issue else "")
    if body.get("debug_id"):
        message += f" (debug_id {body['debug_id']})"
    if status == 401 or status == 403:
        return GatewayAuthError(message)
    if status in (409, 429) or status >= 500 or issue in IN_PROGRESS_ISSUES:
        return GatewayUnavailable(message)
    if status == 404:
        return _NotFound(message)
    return _issue_error(issue, message)


def _issue_error(issue: str | None, message: str) -> GatewayError:
    if issue is not None and issue in DECLINE_ISSUES:
        return GatewayDeclined(message, code=DECLINE_ISSUES[issue], decline_code=issue.lower())
    if issue in ACTION_ISSUES:
        return _PayerActionRequired(message)
    if issue in IDEMPOTENCY_ISSUES:
        return GatewayInvalidRequest(message, code="idempotency_error")
    if issue in ALREADY_CAPTURED_ISSUES:
        return _AlreadyCaptured(message)
    return GatewayInvalidRequest(message)


def _translate(exc: Exception) -> GatewayError:
    """Any exception out of the SDK as our typed error."""
    if isinstance(exc, GatewayError):
        return exc  # raised by our token provider inside the SDK
    if isinstance(exc, AuthValidationException):
        return GatewayAuthError("no valid PayPal access token")
    if isinstance(exc, ApiException):
        return translate_api_error(int(exc.response_code), _error_body(exc.response))
    if isinstance(exc, requests.exceptions.ConnectTimeout):
        return GatewayUnavailable("cannot connect to PayPal in time")  # nothing was sent
    if isinstance(exc, requests.exceptions.ReadTimeout):
        return GatewayTimeout("PayPal did not answer in time")  # it may have acted
    if isinstance(exc, requests.exceptions.RequestException):
        return GatewayUnavailable(f"cannot reach PayPal: {type(exc).__name__}")
    return GatewayError(f"paypal error: {type(exc).__name__}")


# --- results ---------------------------------------------------------------------------------


def _mapped(table: Mapping[str, PaymentStatus], status: object, kind: str) -> PaymentStatus:
    try:
        return table[str(status)]
    except KeyError:
        raise GatewayInvalidRequest(f"unmapped PayPal {kind} status {status!r}") from None


def _decline_codes(obj: Mapping[str, Any]) -> tuple[str, str]:
    """(decline_code, error_code) of a DECLINED capture or DENIED authorization."""
    response = obj.get("processor_response") or {}
    code = str(response.get("response_code") or "")
    decline = PROCESSOR_DECLINES.get(code, f"processor_{code}" if code else "declined")
    return decline, "insufficient_funds" if decline == "insufficient_funds" else "card_declined"


def capture_result(capture: Mapping[str, Any], card: CardDetails | None = None) -> GatewayResult:
    status = _mapped(CAPTURE_STATUS_MAP, capture.get("status"), "capture")
    failed = status is S.FAILED
    decline, error = _decline_codes(capture) if failed else (None, None)
    moved = status in (S.SUCCEEDED, S.PARTIALLY_REFUNDED, S.REFUNDED)
    return GatewayResult(
        status=status,
        gateway_reference=str(capture["id"]),
        provider_status=str(capture.get("status")),
        captured_amount=_amount_of(capture) if moved else 0,
        decline_code=decline,
        error_code=error,
        card=card,
    )


def authorization_result(auth: Mapping[str, Any], card: CardDetails | None = None) -> GatewayResult:
    status = _mapped(AUTHORIZATION_STATUS_MAP, auth.get("status"), "authorization")
    decline, error = _decline_codes(auth) if status is S.FAILED else (None, None)
    return GatewayResult(
        status=status,
        gateway_reference=str(auth["id"]),
        provider_status=str(auth.get("status")),
        decline_code=decline,
        error_code=error,
        card=card,
    )


def order_result(order: Mapping[str, Any], vault_id: str | None = None) -> GatewayResult:
    """An order in our terms: a completed order is what its latest payment says."""
    status = _mapped(ORDER_STATUS_MAP, order.get("status"), "order")
    card = card_details(order, vault_id)
    payments = _first_unit(order).get("payments") or {}
    captures = payments.get("captures") or []
    authorizations = payments.get("authorizations") or []
    if captures:
        return capture_result(captures[-1], card)
    if authorizations:
        return authorization_result(authorizations[-1], card)
    return GatewayResult(
        status=status,
        gateway_reference=str(order["id"]),
        provider_status=str(order.get("status")),
        card=card,
    )


def card_details(order: Mapping[str, Any], vault_id: str | None) -> CardDetails | None:
    """Brand, last four digits and expiry: never more of a card."""
    card = (order.get("payment_source") or {}).get("card")
    if not isinstance(card, Mapping):
        return CardDetails(token=vault_id) if vault_id else None
    year, _, month = str(card.get("expiry") or "").partition("-")
    brand = card.get("brand")
    return CardDetails(
        brand=brand.lower() if isinstance(brand, str) else None,
        last4=card.get("last_digits"),
        exp_month=int(month) if month.isdigit() else None,
        exp_year=int(year) if year.isdigit() else None,
        token=vault_id,
    )


def _first_unit(order: Mapping[str, Any]) -> Mapping[str, Any]:
    units = order.get("purchase_units") or [{}]
    unit: Mapping[str, Any] = units[0]
    return unit


# --- the SDK's configuration and token --------------------------------------------------------


class _BaseUriConfiguration(Configuration):  # type: ignore[misc]
    """The SDK knows only PayPal's two hosts; this points it anywhere (the sandbox)."""

    def __init__(self, *, api_base: str, **kwargs: Any) -> None:
        self._api_base = api_base.rstrip("/")
        super().__init__(**kwargs)

    def get_base_uri(self, server: Server = Server.DEFAULT) -> str:
        return self._api_base


class _TokenKeeper:
    """Holds the one access token; the SDK's threads ask it, and only it fetches.

    The asyncio side refreshes ahead of expiry (`due`), so calls never carry a token about to
    lapse; the thread lock makes a fetch happen once even if a worker thread finds the token
    stale at the same moment.
    """

    def __init__(self, fetch: Callable[[], Any]) -> None:
        self._fetch = fetch
        self._token: Any = None
        self._refresh_at = 0.0  # time.monotonic()
        self._guard = threading.Lock()

    @property
    def due(self) -> bool:
        return self._token is None or time.monotonic() >= self._refresh_at

    def invalidate(self) -> None:
        """PayPal refused the token (401): the next call fetches a new one."""
        self._refresh_at = 0.0

    def current(self, stale: Any = None) -> Any:
        """The token to use, fetched first if missing, due, or what the SDK found expired."""
        with self._guard:
            if self.due or (stale is not None and stale is self._token):
                self._replace(self._fetch())
            return self._token

    def provide(self, last_token: Any, _auth_manager: Any) -> Any:
        """The SDK's `o_auth_token_provider`: it asks only when its copy is missing/expired."""
        return self.current(stale=last_token)

    def _replace(self, token: Any) -> None:
        lifetime = int(getattr(token, "expires_in", 0) or DEFAULT_TOKEN_LIFETIME_S)
        # Refresh with 10% of the lifetime (at most a minute) to spare, so that no request
        # goes out with a token that lapses in flight.
        margin = min(60.0, lifetime / 10)
        old, self._token = self._token, token
        self._refresh_at = time.monotonic() + lifetime - margin
        if old is not None:
            # The SDK keeps its own copy until that copy expires: expiring it now makes the
            # SDK ask `provide` again, which hands it the new token.
            old.expiry = 0


# --- the adapter -----------------------------------------------------------------------------


class PayPalGateway:
    name = "paypal"

    def __init__(
        self,
        *,
        client_id: str,
        client_secret: str,
        api_base: str,
        timeout_s: float,
        max_workers: int = 32,
    ) -> None:
        self._client_id = client_id
        self._pool = ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="paypal")
        self._session = _session(max_workers)
        self._tokens = _TokenKeeper(self._fetch_token)
        self._token_lock = asyncio.Lock()
        config = _BaseUriConfiguration(
            api_base=api_base,
            http_client_instance=self._session,
            override_http_client_configuration=True,
            timeout=timeout_s,
            max_retries=0,  # the executor retries, always with the same PayPal-Request-Id
            client_credentials_auth_credentials=ClientCredentialsAuthCredentials(
                o_auth_client_id=client_id,
                o_auth_client_secret=client_secret,
                o_auth_token_provider=self._tokens.provide,
            ),
        )
        self._client = PaypalServersdkClient(config=config)

    # --- the Gateway protocol -------------------------------------------------------------

    async def authorize(self, req: AuthorizeRequest) -> GatewayResult:
        manual = req.capture is CaptureMode.MANUAL
        body = OrderRequest(
            intent=CheckoutPaymentIntent.AUTHORIZE if manual else CheckoutPaymentIntent.CAPTURE,
            purchase_units=[
                PurchaseUnitRequest(
                    amount=AmountWithBreakdown(
                        currency_code=req.amount.currency, value=to_value(req.amount)
                    ),
                    reference_id=req.order_id,
                    custom_id=req.payment_id,  # how webhooks find their way back to us
                    invoice_id=req.payment_id,
                )
            ],
            payment_source=PaymentSource(card=CardRequest(vault_id=req.method_token)),
        )
        order = await self._call(
            self._client.orders.create_order,
            {"body": body, "paypal_request_id": req.idempotency_key, "prefer": REPRESENTATION},
        )
        result = order_result(order, req.method_token)
        if result.status is S.FAILED:
            # A single-step order can complete with a declined capture: a decline all the same.
            raise GatewayDeclined(
                f"paypal declined the card ({result.decline_code})",
                code=result.error_code,
                decline_code=result.decline_code,
            )
        return result

    async def capture(self, req: CaptureRequest) -> GatewayResult:
        # final_capture: a partial capture releases the rest of the hold, as our payment
        # is captured once.
        fields: dict[str, Any] = {"final_capture": True}
        if req.amount is not None:
            fields["amount"] = _paypal_money(req.amount)
        options = {
            "authorization_id": req.gateway_reference,
            "paypal_request_id": req.idempotency_key,
            "prefer": REPRESENTATION,
            "body": PayPalCaptureRequest(**fields),
        }
        try:
            capture = await self._call(self._client.payments.capture_authorized_payment, options)
        except _NotFound:
            return await self._capture_order(req)
        return capture_result(capture)

    async def cancel(self, req: CancelRequest) -> GatewayResult:
        options = {
            "authorization_id": req.gateway_reference,
            "paypal_request_id": req.idempotency_key,
            "prefer": REPRESENTATION,
        }
        try:
            auth = await self._call(self._client.payments.void_payment, options)
        except _NotFound:
            raise NotSupported(
                "PayPal can void only an authorization; a capture must be refunded and an "
                "unpaid order simply expires"
            ) from None
        except _AlreadyCaptured:
            raise NotSupported("PayPal cannot cancel a captured payment; refund it") from None
        return authorization_result(auth)

    async def refund(self, req: RefundRequest) -> RefundResult:
        fields: dict[str, Any] = {
            "amount": _paypal_money(req.amount),
            "custom_id": req.payment_id,  # routes the refund's webhook back to the payment
            "invoice_id": req.refund_id,
        }
        if req.reason:
            fields["note_to_payer"] = req.reason[:255]
        refund = await self._call(
            self._client.payments.refund_captured_payment,
            {
                "capture_id": req.gateway_reference,
                "paypal_request_id": req.idempotency_key,
                "prefer": REPRESENTATION,
                "body": PayPalRefundRequest(**fields),
            },
        )
        status = str(refund.get("status"))
        return RefundResult(
            # A status we do not know yet is not final: initiated, never a guess of done.
            status=REFUND_STATUS_MAP.get(status, RefundStatus.INITIATED),
            refund_reference=str(refund["id"]),
            amount=_amount_of(refund) or req.amount.amount,
            provider_status=status,
        )

    async def fetch(self, gateway_reference: str) -> GatewayResult:
        """The payment behind a capture, authorization or order id (tried in that order)."""
        payments = self._client.payments
        try:
            return capture_result(
                await self._call(payments.get_captured_payment, {"capture_id": gateway_reference})
            )
        except _NotFound:
            pass
        try:
            return authorization_result(
                await self._call(
                    payments.get_authorized_payment, {"authorization_id": gateway_reference}
                )
            )
        except _NotFound:
            pass
        return order_result(
            await self._call(self._client.orders.get_order, {"id": gateway_reference})
        )

    async def lookup(self, req: LookupRequest) -> GatewayResult | None:
        """By reference when we have one. PayPal has no search by our id, so otherwise the
        unanswered create-order is replayed with its PayPal-Request-Id: PayPal answers with
        the order that request made, or makes it now if it never arrived, never a second one.
        Only within `REQUEST_ID_WINDOW_MS`, while PayPal still holds the request id."""
        if req.gateway_reference:
            return await self.fetch(req.gateway_reference)
        if req.authorize is None:
            raise NotSupported("no PayPal reference and no create-order to replay")
        if time.time() * 1000 - req.created_at_ms > REQUEST_ID_WINDOW_MS:
            raise NotSupported("past the PayPal-Request-Id window: left for an operator")
        return await self.authorize(req.authorize)

    async def charges_since(self, since_ms: int) -> list[tuple[str, GatewayResult]]:
        raise NotSupported(
            "PayPal's Orders API has no list; its transaction search lags by hours. "
            "Audit PayPal payments by reference instead."
        )

    async def close(self) -> None:
        await asyncio.to_thread(self._pool.shutdown, wait=True)
        self._session.close()

    # --- internals --------------------------------------------------------------------------

    async def _capture_order(self, req: CaptureRequest) -> GatewayResult:
        """Capture an order the buyer approved (after 3-D Secure or a redirect)."""
        options = {
            "id": req.gateway_reference,
            # Its own key: the authorization attempt above already used the request's key.
            "paypal_request_id": f"{req.idempotency_key}:order",
            "prefer": REPRESENTATION,
        }
        try:
            order = await self._call(self._client.orders.capture_order, options)
        except _PayerActionRequired:
            return GatewayResult(
                status=S.REQUIRES_ACTION,
                gateway_reference=req.gateway_reference,
                provider_status=OrderStatus.PAYER_ACTION_REQUIRED,
            )
        return order_result(order)

    async def _call(
        self, operation: Callable[[dict[str, Any]], Any], options: dict[str, Any]
    ) -> dict[str, Any]:
        """Run one SDK call in the pool; PayPal's JSON answer, or our typed error."""
        await self._ensure_token()
        loop = asyncio.get_running_loop()
        try:
            response = await loop.run_in_executor(self._pool, functools.partial(operation, options))
        except Exception as exc:
            error = _translate(exc)
            if isinstance(error, GatewayAuthError) and isinstance(exc, ApiException):
                self._tokens.invalidate()
            if error is exc:
                raise
            raise error from exc
        return _json_of(response)

    async def _ensure_token(self) -> None:
        """Fetch (or refresh) the token once, before calls that would each fetch one."""
        if not self._tokens.due:
            return
        async with self._token_lock:
            if self._tokens.due:
                loop = asyncio.get_running_loop()
                await loop.run_in_executor(self._pool, self._tokens.current)

    def _fetch_token(self) -> Any:
        """One token request; its failures logged here, since the SDK would hide them."""
        try:
            token = self._client.oauth_2.fetch_token()
        except ApiException as exc:
            body = _error_body(exc.response)
            log.error(
                "PayPal token endpoint refused client %s: HTTP %s %s",
                self._client_id,
                exc.response_code,
                body.get("error") or body.get("name") or "",
            )
            # `from None`: the SDK's exception holds the request with our Basic credentials.
            if exc.response_code in (400, 401, 403):
                raise GatewayAuthError("PayPal refused our client credentials") from None
            raise GatewayUnavailable(
                f"PayPal token endpoint answered {exc.response_code}"
            ) from None
        except requests.exceptions.RequestException as exc:
            log.warning("PayPal token endpoint unreachable: %s", type(exc).__name__)
            raise GatewayUnavailable("cannot reach the PayPal token endpoint") from None
        if token is None or not getattr(token, "access_token", None):
            log.error("PayPal token endpoint answered without an access token")
            raise GatewayAuthError("PayPal returned no access token")
        return token


def _session(max_workers: int) -> requests.Session:
    """A requests session whose pool keeps a connection per worker thread."""
    session = requests.Session()
    adapter = HTTPAdapter(pool_connections=4, pool_maxsize=max_workers, max_retries=0)
    session.mount("https://", adapter)
    session.mount("http://", adapter)
    return session


def _json_of(response: Any) -> dict[str, Any]:
    """The raw JSON PayPal sent: exactly its fields, not the SDK model's subset."""
    text = getattr(response, "text", "") or ""
    try:
        body = json.loads(text) if text.strip() else {}
    except ValueError:
        raise GatewayError("PayPal answered with something other than JSON") from None
    if not isinstance(body, dict):
        raise GatewayError("PayPal answered with a JSON value that is not an object")
    return body


# --- webhooks ---------------------------------------------------------------------------------

_CAPTURE_EVENTS: Final[dict[str, PaymentStatus]] = {
    "PAYMENT.CAPTURE.COMPLETED": S.SUCCEEDED,
    "PAYMENT.CAPTURE.PENDING": S.PROCESSING,
    "PAYMENT.CAPTURE.DENIED": S.FAILED,
    "PAYMENT.CAPTURE.DECLINED": S.FAILED,
}
_AUTHORIZATION_EVENTS: Final[dict[str, PaymentStatus]] = {
    "PAYMENT.AUTHORIZATION.CREATED": S.AUTHORIZED,
    "PAYMENT.AUTHORIZATION.VOIDED": S.CANCELED,
}
HANDLED_EVENTS: frozenset[str] = frozenset(
    {*_CAPTURE_EVENTS, *_AUTHORIZATION_EVENTS}
    | {"PAYMENT.CAPTURE.REFUNDED", "CUSTOMER.DISPUTE.CREATED", "CHECKOUT.ORDER.APPROVED"}
)


def interpret_event(event_type: str, payload: Mapping[str, Any]) -> WebhookEffect | None:
    """What a verified PayPal event says about our payment; None for types we do not act on."""
    resource: Mapping[str, Any] = payload.get("resource") or {}
    if event_type in _CAPTURE_EVENTS:
        status = _CAPTURE_EVENTS[event_type]
        return WebhookEffect(
            kind=EventKind.PAYMENT,
            status=status,
            gateway_reference=resource.get("id"),
            amount=_amount_of(resource) if status is S.SUCCEEDED else 0,
            decline_code=_decline_codes(resource)[0] if status is S.FAILED else None,
        )
    if event_type in _AUTHORIZATION_EVENTS:
        return WebhookEffect(
            kind=EventKind.PAYMENT,
            status=_AUTHORIZATION_EVENTS[event_type],
            gateway_reference=resource.get("id"),
            amount=0,
        )
    if event_type == "PAYMENT.CAPTURE.REFUNDED":
        return WebhookEffect(
            kind=EventKind.REFUND,
            refund_status=REFUND_STATUS_MAP.get(
                str(resource.get("status")), RefundStatus.INITIATED
            ),
            gateway_reference=_refunded_capture(resource),
            refund_reference=resource.get("id"),
            amount=_amount_of(resource),
        )
    if event_type == "CUSTOMER.DISPUTE.CREATED":
        return _dispute_effect(resource)
    if event_type == "CHECKOUT.ORDER.APPROVED":
        # The buyer finished (3-D Secure, approval); nothing moved until we capture the order.
        return WebhookEffect(
            kind=EventKind.PAYMENT,
            status=S.PROCESSING,
            gateway_reference=resource.get("id"),
            capture_needed=True,
        )
    return None


def _refunded_capture(refund: Mapping[str, Any]) -> str | None:
    """The capture a refund belongs to: `related_ids`, else the `up` link PayPal always sends."""
    related = (refund.get("supplementary_data") or {}).get("related_ids") or {}
    if related.get("capture_id"):
        return str(related["capture_id"])
    for link in refund.get("links") or []:
        if isinstance(link, Mapping) and link.get("rel") == "up" and link.get("href"):
            return str(link["href"]).rstrip("/").rsplit("/", 1)[-1]
    return None


def _dispute_effect(dispute: Mapping[str, Any]) -> WebhookEffect:
    transactions = dispute.get("disputed_transactions") or [{}]
    disputed = dispute.get("dispute_amount")
    amount = (
        to_minor_units(disputed.get("value"), str(disputed.get("currency_code")))
        if isinstance(disputed, Mapping)
        else None
    )
    return WebhookEffect(
        kind=EventKind.DISPUTE,
        status=S.DISPUTED,
        gateway_reference=transactions[0].get("seller_transaction_id"),
        amount=amount,
    )
