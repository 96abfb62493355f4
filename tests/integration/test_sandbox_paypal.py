"""The gateway sandbox's PayPal emulation, driven over HTTP by the real `paypal-server-sdk`.

The SDK (not hand-written requests) is the point: it proves the sandbox speaks PayPal's wire
format (paths, headers, JSON shapes, error envelopes) closely enough for the SDK's own models
and exceptions. Webhooks go to a tiny recording server and are verified here with
`cryptography` directly, independently of our ingress verifier.
"""

from __future__ import annotations

import base64
import json
import time
import uuid
import zlib
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding
from paypalserversdk.configuration import Configuration, Server
from paypalserversdk.exceptions.api_exception import ApiException
from paypalserversdk.exceptions.error_exception import ErrorException
from paypalserversdk.exceptions.o_auth_provider_exception import OAuthProviderException
from paypalserversdk.http.auth.o_auth_2 import ClientCredentialsAuthCredentials
from paypalserversdk.models.amount_with_breakdown import AmountWithBreakdown
from paypalserversdk.models.capture_request import CaptureRequest
from paypalserversdk.models.card_request import CardRequest
from paypalserversdk.models.money import Money
from paypalserversdk.models.order_request import OrderRequest
from paypalserversdk.models.payment_source import PaymentSource
from paypalserversdk.models.purchase_unit_request import PurchaseUnitRequest
from paypalserversdk.models.refund_request import RefundRequest
from paypalserversdk.paypal_serversdk_client import PaypalServersdkClient
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.types import ASGIApp

from gateways.sandbox.app import SandboxConfig, create_app
from tests.servers import serve_asgi

WEBHOOK_ID = "WH-TEST-PAYPAL"


# --- serving ASGI apps on loopback (also used by the adapter and signature tests) ----------


@dataclass
class Recorder:
    """A webhook endpoint that keeps every delivery (headers lower-cased, raw body)."""

    requests: list[tuple[dict[str, str], bytes]] = field(default_factory=list)

    def app(self, base_url: str) -> ASGIApp:
        async def receive(request: Request) -> JSONResponse:
            headers = {k.lower(): v for k, v in request.headers.items()}
            self.requests.append((headers, await request.body()))
            return JSONResponse({"ok": True})

        return Starlette(routes=[Route("/paypal", receive, methods=["POST"])])

    def wait_for(
        self, event_type: str, resource_id: str, timeout_s: float = 5
    ) -> tuple[dict[str, str], dict[str, Any]]:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for headers, body in list(self.requests):
                event = json.loads(body)
                resource = event["resource"]
                found = resource.get("id", resource.get("dispute_id"))
                if event["event_type"] == event_type and found == resource_id:
                    return headers, event
            time.sleep(0.02)
        raise AssertionError(f"no {event_type} for {resource_id} within {timeout_s}s")


@dataclass
class RunningPayPal:
    base_url: str
    control: httpx.Client
    recorder: Recorder

    @property
    def api_base(self) -> str:
        return f"{self.base_url}/paypal"

    def reset(self) -> None:
        self.control.post("/_sandbox/reset").raise_for_status()
        self.recorder.requests.clear()

    def summary(self) -> dict[str, dict[str, int]]:
        return self.control.get("/_sandbox/ledger/summary").raise_for_status().json()

    def entries(self, **query: str) -> list[dict[str, Any]]:
        return (
            self.control.get("/_sandbox/ledger", params=query).raise_for_status().json()["entries"]
        )

    def tokens_issued(self) -> int:
        return int(
            self.control.get("/_sandbox/paypal/stats").raise_for_status().json()["tokens_issued"]
        )

    def faults(self, **config: Any) -> None:
        self.control.post("/_sandbox/faults/paypal", json=config).raise_for_status()

    def settle(self, capture_id: str, outcome: str, *, as_json: bool = True) -> httpx.Response:
        url = f"/_sandbox/paypal/captures/{capture_id}/settle"
        if as_json:
            return self.control.post(url, json={"outcome": outcome})
        return self.control.post(url, data={"outcome": outcome})


@pytest.fixture(scope="module")
def server() -> Iterator[RunningPayPal]:
    recorder = Recorder()
    with serve_asgi(recorder.app) as receiver_url:

        def sandbox_app(base_url: str) -> ASGIApp:
            config = SandboxConfig(
                public_url=base_url, webhook_base_url=receiver_url, paypal_webhook_id=WEBHOOK_ID
            )
            return create_app(config)

        with serve_asgi(sandbox_app) as base_url:
            control = httpx.Client(base_url=base_url, timeout=10)
            try:
                yield RunningPayPal(base_url, control, recorder)
            finally:
                control.close()


@pytest.fixture
def sandbox(server: RunningPayPal) -> RunningPayPal:
    server.reset()  # every test starts from an empty account, ledger and counters
    return server


def sdk_client(api_base: str, secret: str = "secret") -> PaypalServersdkClient:
    class LocalConfiguration(Configuration):
        def get_base_uri(self, server: Server = Server.DEFAULT) -> str:
            return api_base

    credentials = ClientCredentialsAuthCredentials(
        o_auth_client_id="client-1", o_auth_client_secret=secret
    )
    return PaypalServersdkClient(
        config=LocalConfiguration(client_credentials_auth_credentials=credentials, timeout=10)
    )


@pytest.fixture
def client(sandbox: RunningPayPal) -> PaypalServersdkClient:
    return sdk_client(sandbox.api_base)


def key() -> str:
    return f"req-{uuid.uuid4()}"


def order_body(
    vault_id: str | None = "paypal_vault_ok",
    *,
    intent: str = "CAPTURE",
    value: str = "10.00",
    currency: str = "USD",
    payment_id: str = "pay_1",
) -> OrderRequest:
    unit = PurchaseUnitRequest(
        amount=AmountWithBreakdown(currency_code=currency, value=value),
        reference_id="order-7",
        custom_id=payment_id,
        invoice_id=payment_id,
    )
    if vault_id is None:
        return OrderRequest(intent=intent, purchase_units=[unit])
    return OrderRequest(
        intent=intent,
        purchase_units=[unit],
        payment_source=PaymentSource(card=CardRequest(vault_id=vault_id)),
    )


def create(
    client: PaypalServersdkClient, body: OrderRequest | None = None, request_id: str | None = None
) -> Any:
    options: dict[str, Any] = {"body": body or order_body(), "prefer": "return=representation"}
    options["paypal_request_id"] = request_id or key()
    return client.orders.create_order(options)


def warm(client: PaypalServersdkClient) -> None:
    """Make the SDK fetch and keep its access token (any authenticated call does)."""
    with pytest.raises(ErrorException):
        client.orders.get_order({"id": "WARM-UP"})


def issues(exc: ErrorException) -> list[str]:
    return [d.issue for d in exc.details or []]


def rejected(call: Callable[[], Any]) -> ErrorException:
    with pytest.raises(ErrorException) as caught:
        call()
    return caught.value


# --- OAuth ----------------------------------------------------------------------------------


def test_token_is_issued_for_basic_client_credentials(sandbox: RunningPayPal) -> None:
    response = sandbox.control.post(
        "/paypal/v1/oauth2/token",
        auth=("client-1", "s3cret"),
        data={"grant_type": "client_credentials"},
    )

    body = response.json()
    assert response.status_code == 200
    assert body["token_type"] == "Bearer"
    assert body["expires_in"] == 32400
    assert body["access_token"] and body["app_id"] and body["nonce"] and body["scope"]
    assert sandbox.tokens_issued() == 1


def test_wrong_secret_is_invalid_client(sandbox: RunningPayPal) -> None:
    raw = sandbox.control.post(
        "/paypal/v1/oauth2/token",
        auth=("client-1", "wrong-secret"),
        data={"grant_type": "client_credentials"},
    )
    with pytest.raises(OAuthProviderException) as caught:
        sdk_client(sandbox.api_base, secret="wrong-secret").oauth_2.fetch_token()

    assert raw.status_code == 401
    assert raw.json() == {
        "error": "invalid_client",
        "error_description": "Client Authentication failed",
    }
    assert caught.value.response_code == 401
    assert sandbox.tokens_issued() == 0


def test_api_call_without_issued_token_is_authentication_failure(sandbox: RunningPayPal) -> None:
    response = sandbox.control.get(
        "/paypal/v2/checkout/orders/ANY", headers={"Authorization": "Bearer not-issued"}
    )

    assert response.status_code == 401
    assert response.json()["name"] == "AUTHENTICATION_FAILURE"


def test_expired_token_is_refused(sandbox: RunningPayPal) -> None:
    sandbox.control.post("/_sandbox/paypal/token_ttl", json={"expires_in": 1}).raise_for_status()
    token = sandbox.control.post(
        "/paypal/v1/oauth2/token", auth=("c", "s"), data={"grant_type": "client_credentials"}
    ).json()
    assert token["expires_in"] == 1
    headers = {"Authorization": f"Bearer {token['access_token']}"}
    assert sandbox.control.get("/paypal/v2/checkout/orders/X", headers=headers).status_code == 404

    time.sleep(1.05)

    assert sandbox.control.get("/paypal/v2/checkout/orders/X", headers=headers).status_code == 401


def test_token_ttl_rejects_nonsense(sandbox: RunningPayPal) -> None:
    assert (
        sandbox.control.post("/_sandbox/paypal/token_ttl", data={"expires_in": "0"}).status_code
        == 400
    )
    assert (
        sandbox.control.post("/_sandbox/paypal/token_ttl", data={"expires_in": "x"}).status_code
        == 400
    )
    assert sandbox.control.get("/_sandbox/paypal/token_ttl").json() == {"expires_in": 32400}


# --- single-step orders with a vaulted card ---------------------------------------------------


def test_vaulted_card_order_completes_and_captures_once(
    client: PaypalServersdkClient, sandbox: RunningPayPal
) -> None:
    response = create(client)

    order = response.body
    capture = order.purchase_units[0].payments.captures[0]
    assert response.status_code == 201
    assert order.status == "COMPLETED" and order.intent == "CAPTURE"
    assert capture.status == "COMPLETED"
    assert (capture.amount.currency_code, capture.amount.value) == ("USD", "10.00")
    assert (capture.custom_id, capture.invoice_id) == ("pay_1", "pay_1")
    assert order.payment_source.card.last_digits == "4242"
    assert order.payment_source.card.brand == "VISA"
    assert [entry["kind"] for entry in sandbox.entries()] == ["capture"]
    [entry] = sandbox.entries()
    assert entry["object_id"] == capture.id and entry["payment_intent"] == order.id
    assert entry["currency"] == "USD" and entry["payment_id"] == "pay_1"
    assert sandbox.summary() == {
        "pay_1": {"captured": 1000, "refunded": 0, "captures": 1, "refunds": 0}
    }


def test_authorize_intent_holds_funds(
    client: PaypalServersdkClient, sandbox: RunningPayPal
) -> None:
    order = create(client, order_body(intent="AUTHORIZE")).body

    auth = order.purchase_units[0].payments.authorizations[0]
    assert order.status == "COMPLETED"
    assert auth.status == "CREATED"
    assert auth.expiration_time
    assert [(e["kind"], e["amount"]) for e in sandbox.entries()] == [("authorization", 1000)]
    assert sandbox.summary()["pay_1"]["captured"] == 0


@pytest.mark.parametrize("intent", ["CAPTURE", "AUTHORIZE"])
def test_declined_vault_is_instrument_declined(
    client: PaypalServersdkClient, sandbox: RunningPayPal, intent: str
) -> None:
    exc = rejected(lambda: create(client, order_body("paypal_vault_declined", intent=intent)))

    assert exc.response_code == 422
    assert exc.name == "UNPROCESSABLE_ENTITY"
    assert issues(exc) == ["INSTRUMENT_DECLINED"]
    assert exc.debug_id
    assert sandbox.entries() == []


def test_insufficient_funds_completes_with_a_declined_capture(
    client: PaypalServersdkClient, sandbox: RunningPayPal
) -> None:
    order = create(client, order_body("paypal_vault_insufficient")).body

    capture = order.purchase_units[0].payments.captures[0]
    assert order.status == "COMPLETED"
    assert capture.status == "DECLINED"
    assert capture.processor_response.response_code == "5120"
    assert sandbox.entries() == []


def test_3ds_order_needs_payer_action_before_capture(
    client: PaypalServersdkClient, sandbox: RunningPayPal
) -> None:
    order = create(client, order_body("paypal_vault_3ds")).body
    links = {link.rel: link.href for link in order.links}
    assert order.status == "PAYER_ACTION_REQUIRED"
    early = rejected(
        lambda: client.orders.capture_order({"id": order.id, "paypal_request_id": key()})
    )
    assert issues(early) == ["PAYER_ACTION_REQUIRED"]

    approved = httpx.get(links["payer-action"])  # the buyer follows the link
    assert approved.json()["status"] == "APPROVED"
    captured = client.orders.capture_order(
        {"id": order.id, "paypal_request_id": key(), "prefer": "return=representation"}
    )

    assert captured.status_code == 201
    assert captured.body.status == "COMPLETED"
    assert captured.body.purchase_units[0].payments.captures[0].status == "COMPLETED"
    assert sandbox.summary()["pay_1"]["captures"] == 1
    _, event = sandbox.recorder.wait_for("CHECKOUT.ORDER.APPROVED", order.id)
    assert event["resource"]["purchase_units"][0]["custom_id"] == "pay_1"


def test_buyer_approved_order_without_payment_source(client: PaypalServersdkClient) -> None:
    order = create(client, order_body(None)).body
    assert order.status == "CREATED"
    assert {link.rel for link in order.links} >= {"approve", "capture"}
    not_yet = rejected(lambda: client.orders.capture_order({"id": order.id}))
    assert issues(not_yet) == ["ORDER_NOT_APPROVED"]

    httpx.post(next(link.href for link in order.links if link.rel == "approve"))
    done = client.orders.capture_order({"id": order.id, "prefer": "return=representation"})

    assert done.body.status == "COMPLETED"
    again = rejected(lambda: client.orders.capture_order({"id": order.id}))
    assert issues(again) == ["ORDER_ALREADY_CAPTURED"]


@pytest.mark.parametrize(
    ("outcome", "status", "event_type", "captured"),
    [
        ("completed", "COMPLETED", "PAYMENT.CAPTURE.COMPLETED", 1000),
        ("denied", "DECLINED", "PAYMENT.CAPTURE.DENIED", 0),
    ],
)
def test_pending_capture_settles_later_with_a_webhook(
    client: PaypalServersdkClient,
    sandbox: RunningPayPal,
    outcome: str,
    status: str,
    event_type: str,
    captured: int,
) -> None:
    capture = (
        create(client, order_body("paypal_vault_pending"))
        .body.purchase_units[0]
        .payments.captures[0]
    )
    assert capture.status == "PENDING"
    assert capture.status_details.reason == "PENDING_REVIEW"
    assert sandbox.entries() == []
    sandbox.recorder.wait_for("PAYMENT.CAPTURE.PENDING", capture.id)

    settled = sandbox.settle(capture.id, outcome, as_json=outcome == "completed")

    assert settled.json()["status"] == status
    assert client.payments.get_captured_payment({"capture_id": capture.id}).body.status == status
    assert sandbox.summary().get("pay_1", {}).get("captured", 0) == captured
    _, event = sandbox.recorder.wait_for(event_type, capture.id)
    assert event["resource"]["custom_id"] == "pay_1"
    assert sandbox.settle(capture.id, outcome).status_code == 422  # only a pending one settles


def test_unknown_vault_id_is_token_id_not_found(client: PaypalServersdkClient) -> None:
    exc = rejected(lambda: create(client, order_body("paypal_vault_nope")))

    assert (exc.response_code, issues(exc)) == (422, ["TOKEN_ID_NOT_FOUND"])


def test_single_step_order_needs_a_request_id(client: PaypalServersdkClient) -> None:
    exc = rejected(lambda: client.orders.create_order({"body": order_body()}))

    assert (exc.response_code, issues(exc)) == (400, ["PAYPAL_REQUEST_ID_REQUIRED"])


@pytest.mark.parametrize(
    ("currency", "value", "status", "issue"),
    [
        ("USD", "10.001", 422, "DECIMAL_PRECISION"),
        ("JPY", "10.5", 422, "DECIMALS_NOT_SUPPORTED"),
        ("USD", "0.00", 422, "CANNOT_BE_ZERO_OR_NEGATIVE"),
        ("USD", "-1.00", 400, "INVALID_PARAMETER_SYNTAX"),
        ("USD", "1e3", 400, "INVALID_PARAMETER_SYNTAX"),
        ("USD", "1.", 400, "INVALID_PARAMETER_SYNTAX"),
        ("XXX", "1.00", 422, "CURRENCY_NOT_SUPPORTED"),
    ],
)
def test_bad_amounts_are_refused(
    client: PaypalServersdkClient, currency: str, value: str, status: int, issue: str
) -> None:
    exc = rejected(lambda: create(client, order_body(value=value, currency=currency)))

    assert (exc.response_code, issues(exc)) == (status, [issue])
    assert (
        exc.details[0].field == "/purchase_units/0/amount/value"
        or issue == "CURRENCY_NOT_SUPPORTED"
    )


@pytest.mark.parametrize(
    ("currency", "value", "minor"),
    [("USD", "10.00", 1000), ("USD", "0.5", 50), ("JPY", "1000", 1000), ("BHD", "1.234", 1234)],
)
def test_amounts_become_exact_minor_units(
    client: PaypalServersdkClient, sandbox: RunningPayPal, currency: str, value: str, minor: int
) -> None:
    create(client, order_body(value=value, currency=currency))

    assert sandbox.summary()["pay_1"]["captured"] == minor


# --- idempotency ----------------------------------------------------------------------------


def test_same_request_id_replays_with_200(
    client: PaypalServersdkClient, sandbox: RunningPayPal
) -> None:
    request_id = key()
    first = create(client, request_id=request_id)
    second = create(client, request_id=request_id)

    assert (first.status_code, second.status_code) == (201, 200)
    assert second.body.id == first.body.id
    assert json.loads(second.text) == json.loads(first.text)
    assert sandbox.summary()["pay_1"]["captures"] == 1


def test_same_request_id_with_another_body_is_refused(
    client: PaypalServersdkClient, sandbox: RunningPayPal
) -> None:
    request_id = key()
    create(client, request_id=request_id)

    exc = rejected(lambda: create(client, order_body(value="20.00"), request_id=request_id))

    assert (exc.response_code, issues(exc)) == (422, ["PAYPAL_REQUEST_ID_PREVIOUSLY_USED"])
    assert sandbox.summary()["pay_1"]["captures"] == 1


def test_declined_answer_is_replayed_for_the_same_request_id(client: PaypalServersdkClient) -> None:
    request_id = key()
    body = order_body("paypal_vault_declined")
    first = rejected(lambda: create(client, body, request_id))
    second = rejected(lambda: create(client, body, request_id))

    assert first.debug_id == second.debug_id  # the stored answer, not a second attempt


def test_refused_input_does_not_burn_the_request_id(client: PaypalServersdkClient) -> None:
    request_id = key()
    rejected(lambda: create(client, order_body("paypal_vault_nope"), request_id))

    assert create(client, request_id=request_id).status_code == 201


def test_concurrent_requests_with_one_request_id_execute_once(
    client: PaypalServersdkClient, sandbox: RunningPayPal
) -> None:
    sandbox.faults(latency_ms=100)  # widen the window in which duplicates overlap
    request_id = key()
    warm(client)  # the SDK's token is fetched outside the race
    with ThreadPoolExecutor(max_workers=5) as pool:
        results = list(pool.map(lambda _: create(client, request_id=request_id), range(5)))

    assert len({r.body.id for r in results}) == 1
    assert sorted(r.status_code for r in results) == [200, 200, 200, 200, 201]
    assert sandbox.summary()["pay_1"]["captures"] == 1


# --- authorizations -------------------------------------------------------------------------


def authorized(client: PaypalServersdkClient) -> Any:
    return (
        create(client, order_body(intent="AUTHORIZE"))
        .body.purchase_units[0]
        .payments.authorizations[0]
    )


def capture_auth(
    client: PaypalServersdkClient, auth_id: str, value: str | None, *, final: bool = True
) -> Any:
    body = CaptureRequest(final_capture=final)
    if value is not None:
        body = CaptureRequest(amount=Money(currency_code="USD", value=value), final_capture=final)
    return client.payments.capture_authorized_payment(
        {
            "authorization_id": auth_id,
            "paypal_request_id": key(),
            "prefer": "return=representation",
            "body": body,
        }
    )


def test_final_partial_capture_releases_the_rest(
    client: PaypalServersdkClient, sandbox: RunningPayPal
) -> None:
    auth = authorized(client)

    captured = capture_auth(client, auth.id, "4.00")

    assert captured.status_code == 201
    assert captured.body.status == "COMPLETED"
    assert captured.body.supplementary_data.related_ids.authorization_id == auth.id
    assert (
        client.payments.get_authorized_payment({"authorization_id": auth.id}).body.status
        == "CAPTURED"
    )
    assert [(e["kind"], e["amount"]) for e in sandbox.entries()] == [
        ("authorization", 1000),
        ("capture", 400),
        ("void", 600),
    ]
    again = rejected(lambda: capture_auth(client, auth.id, "1.00"))
    assert issues(again) == ["AUTHORIZATION_ALREADY_CAPTURED"]


def test_capture_above_the_authorization_is_refused(client: PaypalServersdkClient) -> None:
    auth = authorized(client)

    exc = rejected(lambda: capture_auth(client, auth.id, "10.01"))

    assert issues(exc) == ["MAX_CAPTURE_AMOUNT_EXCEEDED"]


def test_non_final_capture_then_void_releases_the_rest(
    client: PaypalServersdkClient, sandbox: RunningPayPal
) -> None:
    auth = authorized(client)
    capture_auth(client, auth.id, "3.00", final=False)
    assert (
        client.payments.get_authorized_payment({"authorization_id": auth.id}).body.status
        == "PARTIALLY_CAPTURED"
    )

    voided = client.payments.void_payment(
        {"authorization_id": auth.id, "paypal_request_id": key(), "prefer": "return=representation"}
    )

    assert voided.body.status == "VOIDED"
    assert [(e["kind"], e["amount"]) for e in sandbox.entries()][-1] == ("void", 700)
    sandbox.recorder.wait_for("PAYMENT.AUTHORIZATION.VOIDED", auth.id)


def test_void_then_capture_and_void_again_are_refused(
    client: PaypalServersdkClient, sandbox: RunningPayPal
) -> None:
    auth = authorized(client)

    minimal = client.payments.void_payment(
        {"authorization_id": auth.id, "paypal_request_id": key()}
    )

    assert minimal.status_code == 204  # Prefer: return=minimal answers with no body
    assert issues(rejected(lambda: capture_auth(client, auth.id, None))) == ["AUTHORIZATION_VOIDED"]
    again = rejected(lambda: client.payments.void_payment({"authorization_id": auth.id}))
    assert issues(again) == ["PREVIOUSLY_VOIDED"]
    order = client.orders.get_order({"id": sandbox.entries()[0]["payment_intent"]}).body
    assert order.status == "VOIDED"


def test_void_after_capture_is_previously_captured(client: PaypalServersdkClient) -> None:
    auth = authorized(client)
    capture_auth(client, auth.id, None)

    exc = rejected(lambda: client.payments.void_payment({"authorization_id": auth.id}))

    assert issues(exc) == ["PREVIOUSLY_CAPTURED"]


# --- refunds ----------------------------------------------------------------------------------


def refund(client: PaypalServersdkClient, capture_id: str, value: str | None) -> Any:
    body = (
        RefundRequest()
        if value is None
        else RefundRequest(amount=Money(currency_code="USD", value=value))
    )
    return client.payments.refund_captured_payment(
        {
            "capture_id": capture_id,
            "paypal_request_id": key(),
            "prefer": "return=representation",
            "body": body,
        }
    )


def test_partial_refunds_up_to_the_capture(
    client: PaypalServersdkClient, sandbox: RunningPayPal
) -> None:
    capture = create(client).body.purchase_units[0].payments.captures[0]

    first = refund(client, capture.id, "3.00")
    over = rejected(lambda: refund(client, capture.id, "7.01"))
    rest = refund(client, capture.id, None)

    assert first.status_code == 201 and first.body.status == "COMPLETED"
    assert first.body.amount.value == "3.00" and first.body.custom_id == "pay_1"
    assert issues(over) == ["REFUND_AMOUNT_EXCEEDED"]
    assert rest.body.amount.value == "7.00"
    assert client.payments.get_refund({"refund_id": first.body.id}).body.amount.value == "3.00"
    assert (
        client.payments.get_captured_payment({"capture_id": capture.id}).body.status == "REFUNDED"
    )
    assert issues(rejected(lambda: refund(client, capture.id, "0.01"))) == [
        "CAPTURE_FULLY_REFUNDED"
    ]
    assert sandbox.summary()["pay_1"] == {
        "captured": 1000,
        "refunded": 1000,
        "captures": 1,
        "refunds": 2,
    }
    _, event = sandbox.recorder.wait_for("PAYMENT.CAPTURE.REFUNDED", first.body.id)
    assert event["resource"]["supplementary_data"]["related_ids"]["capture_id"] == capture.id


def test_refund_of_a_pending_capture_is_refused(client: PaypalServersdkClient) -> None:
    capture = (
        create(client, order_body("paypal_vault_pending"))
        .body.purchase_units[0]
        .payments.captures[0]
    )

    assert issues(rejected(lambda: refund(client, capture.id, None))) == ["PENDING_CAPTURE"]


def test_unknown_objects_are_resource_not_found(client: PaypalServersdkClient) -> None:
    for call in (
        lambda: client.orders.get_order({"id": "NOPE"}),
        lambda: client.payments.get_captured_payment({"capture_id": "NOPE"}),
        lambda: client.payments.get_authorized_payment({"authorization_id": "NOPE"}),
        lambda: client.payments.get_refund({"refund_id": "NOPE"}),
    ):
        exc = rejected(call)
        assert (exc.response_code, exc.name, issues(exc)) == (
            404,
            "RESOURCE_NOT_FOUND",
            ["INVALID_RESOURCE_ID"],
        )


# --- faults -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("config", "status", "name"),
    [
        ({"error_rate": 1.0}, 500, "INTERNAL_SERVER_ERROR"),
        ({"unavailable": True}, 503, "SERVICE_UNAVAILABLE"),
    ],
)
def test_injected_faults_use_paypal_envelopes(
    client: PaypalServersdkClient,
    sandbox: RunningPayPal,
    config: dict[str, Any],
    status: int,
    name: str,
) -> None:
    warm(client)  # a token first: faults hit the token endpoint too
    sandbox.faults(**config)

    with pytest.raises(ApiException) as api:
        create(client)
    raw = sandbox.control.post(
        "/paypal/v1/oauth2/token", auth=("c", "s"), data={"grant_type": "client_credentials"}
    )

    assert api.value.response_code == status
    assert json.loads(api.value.response.text)["name"] == name
    assert raw.status_code == status
    assert sandbox.entries() == []


# --- webhooks ---------------------------------------------------------------------------------


def test_webhooks_are_signed_with_the_served_certificate(
    client: PaypalServersdkClient, sandbox: RunningPayPal
) -> None:
    capture = create(client).body.purchase_units[0].payments.captures[0]

    headers, event = sandbox.recorder.wait_for("PAYMENT.CAPTURE.COMPLETED", capture.id)
    body = next(b for h, b in sandbox.recorder.requests if h is headers)
    cert = x509.load_pem_x509_certificate(httpx.get(headers["paypal-cert-url"]).content)
    message = "|".join(
        [
            headers["paypal-transmission-id"],
            headers["paypal-transmission-time"],
            WEBHOOK_ID,
            str(zlib.crc32(body)),
        ]
    ).encode()

    assert headers["paypal-auth-algo"] == "SHA256withRSA"
    assert headers["paypal-cert-url"] == f"{sandbox.base_url}/_sandbox/paypal/cert.pem"
    cert.public_key().verify(
        base64.b64decode(headers["paypal-transmission-sig"]),
        message,
        padding.PKCS1v15(),
        hashes.SHA256(),
    )
    assert event["id"].startswith("WH-") and event["event_version"] == "1.0"
    assert event["resource_type"] == "capture"
    resource = event["resource"]
    assert resource["custom_id"] == "pay_1" and resource["invoice_id"] == "pay_1"
    assert resource["amount"] == {"currency_code": "USD", "value": "10.00"}
    assert resource["supplementary_data"]["related_ids"]["order_id"]


def test_dispute_carries_the_payment_id(
    client: PaypalServersdkClient, sandbox: RunningPayPal
) -> None:
    capture = create(client).body.purchase_units[0].payments.captures[0]

    response = sandbox.control.post(f"/_sandbox/paypal/captures/{capture.id}/dispute")

    dispute = response.json()
    assert response.status_code == 200
    assert dispute["disputed_transactions"][0] == {
        "seller_transaction_id": capture.id,
        "create_time": capture.create_time,
        "transaction_status": "COMPLETED",
        "gross_amount": {"currency_code": "USD", "value": "10.00"},
        "invoice_number": "pay_1",
        "custom": "pay_1",
    }
    _, event = sandbox.recorder.wait_for("CUSTOMER.DISPUTE.CREATED", dispute["dispute_id"])
    assert event["resource_type"] == "dispute"


def test_reset_forgets_orders_and_counters(
    client: PaypalServersdkClient, sandbox: RunningPayPal
) -> None:
    order = create(client).body
    assert sandbox.tokens_issued() == 1

    sandbox.reset()

    assert sandbox.tokens_issued() == 0 and sandbox.entries() == []
    # The SDK's token is still good: only the account's state was forgotten.
    assert rejected(lambda: client.orders.get_order({"id": order.id})).response_code == 404


def test_unrecognized_path_is_a_paypal_404(
    client: PaypalServersdkClient, sandbox: RunningPayPal
) -> None:
    token = client.oauth_2.fetch_token().access_token

    response = sandbox.control.get(
        "/paypal/v1/nothing", headers={"Authorization": f"Bearer {token}"}
    )

    assert response.status_code == 404
    assert response.json()["name"] == "RESOURCE_NOT_FOUND"
