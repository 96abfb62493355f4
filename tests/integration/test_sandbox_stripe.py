"""The gateway sandbox's Stripe emulation, driven over HTTP by the real `stripe` SDK.

Using the official SDK (not hand-written requests) is the point: it proves the sandbox speaks
Stripe's wire format closely enough that our adapter cannot tell the difference.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import stripe

from gateways.sandbox.app import SandboxConfig, create_app
from tests.servers import serve_asgi

stripe.enable_telemetry = False  # otherwise the SDK writes under ~/.config/stripe

TEST_KEY = "sk_test_x"


@dataclass
class RunningSandbox:
    base_url: str
    control: httpx.Client

    @property
    def stripe_base(self) -> str:
        return f"{self.base_url}/stripe"

    def summary(self) -> dict[str, dict[str, int]]:
        return self.control.get("/_sandbox/ledger/summary").raise_for_status().json()

    def entries(self, **query: str) -> list[dict[str, Any]]:
        return (
            self.control.get("/_sandbox/ledger", params=query).raise_for_status().json()["entries"]
        )

    def settle(self, intent_id: str, outcome: str, *, as_json: bool = False) -> httpx.Response:
        url = f"/_sandbox/stripe/payment_intents/{intent_id}/settle"
        if as_json:
            return self.control.post(url, json={"outcome": outcome})
        return self.control.post(url, data={"outcome": outcome})

    def reset(self) -> None:
        self.control.post("/_sandbox/reset").raise_for_status()


@contextmanager
def serve(config: SandboxConfig) -> Iterator[RunningSandbox]:
    """Run the sandbox under uvicorn on a free loopback port, in a background thread."""
    with (
        serve_asgi(lambda _url: create_app(config)) as base_url,
        httpx.Client(base_url=base_url, timeout=5) as control,
    ):
        yield RunningSandbox(base_url=base_url, control=control)


@pytest.fixture(scope="module")
def server() -> Iterator[RunningSandbox]:
    with serve(SandboxConfig()) as running:
        yield running


@pytest.fixture
def sandbox(server: RunningSandbox) -> RunningSandbox:
    server.reset()  # every test starts from an empty account and ledger
    return server


def sdk_client(
    sandbox: RunningSandbox, http: stripe.HTTPXClient, api_key: str = TEST_KEY
) -> stripe.StripeClient:
    return stripe.StripeClient(
        api_key,
        base_addresses={"api": sandbox.stripe_base},
        http_client=http,
        max_network_retries=0,  # a retry would hide what the sandbox answered
    )


@pytest.fixture
def client(sandbox: RunningSandbox) -> Iterator[stripe.StripeClient]:
    # HTTPXClient refuses synchronous calls unless asked; these tests are synchronous.
    http = stripe.HTTPXClient(allow_sync_methods=True)
    yield sdk_client(sandbox, http)
    http.close()


def key() -> str:
    return f"idem-{uuid.uuid4()}"


def create(
    client: stripe.StripeClient,
    *,
    payment_method: str | None = "pm_card_visa",
    amount: int = 1000,
    payment_id: str | None = "pay_1",
    idempotency_key: str | None = None,
    **extra: Any,
) -> stripe.PaymentIntent:
    params: dict[str, Any] = {
        "amount": amount,
        "currency": "usd",
        "payment_method_types": ["card"],
        **extra,
    }
    if payment_method is not None:
        params["payment_method"] = payment_method
    if payment_id is not None:
        params["metadata"] = {"payment_id": payment_id}
    return client.v1.payment_intents.create(
        params=params,  # type: ignore[arg-type]
        options={"idempotency_key": idempotency_key or key()},
    )


# --- creating and confirming --------------------------------------------------------------


def test_create_without_payment_method_requires_payment_method(
    client: stripe.StripeClient,
) -> None:
    pi = create(client, payment_method=None)

    assert pi.status == "requires_payment_method"
    assert pi.id.startswith("pi_") and len(pi.id) == 27
    assert pi.object == "payment_intent"
    assert pi.payment_method is None
    assert pi.latest_charge is None
    assert pi.livemode is False
    assert pi.confirmation_method == "automatic"
    assert isinstance(pi.created, int)


def test_create_then_confirm_charges(client: stripe.StripeClient, sandbox: RunningSandbox) -> None:
    pi = create(client)
    assert pi.status == "requires_confirmation"
    assert sandbox.entries() == []

    confirmed = client.v1.payment_intents.confirm(pi.id, options={"idempotency_key": key()})

    assert confirmed.status == "succeeded"
    assert confirmed.amount_received == 1000
    assert confirmed.latest_charge.startswith("ch_")
    assert sandbox.summary() == {
        "pay_1": {"captured": 1000, "refunded": 0, "captures": 1, "refunds": 0}
    }


def test_confirm_later_with_payment_method_param(client: stripe.StripeClient) -> None:
    pi = create(client, payment_method=None)

    confirmed = client.v1.payment_intents.confirm(
        pi.id, params={"payment_method": "pm_card_mastercard"}
    )

    assert confirmed.status == "succeeded"
    assert confirmed.payment_method == "pm_card_mastercard"


@pytest.mark.parametrize("token", ["pm_card_visa", "tok_visa", "pm_card_mastercard"])
def test_confirm_on_create_with_good_card_succeeds(
    client: stripe.StripeClient, sandbox: RunningSandbox, token: str
) -> None:
    pi = create(client, payment_method=token, confirm=True, currency="USD", description="order 7")

    assert pi.status == "succeeded"
    assert pi.currency == "usd"  # Stripe answers in lower case whatever we send
    assert (pi.amount, pi.amount_received, pi.amount_capturable) == (1000, 1000, 0)
    assert pi.capture_method == "automatic"
    assert pi.description == "order 7"
    assert pi.metadata.to_dict() == {"payment_id": "pay_1"}
    assert pi.last_payment_error is None and pi.next_action is None
    assert sandbox.summary()["pay_1"] == {
        "captured": 1000,
        "refunded": 0,
        "captures": 1,
        "refunds": 0,
    }


@pytest.mark.parametrize(
    ("token", "code", "decline_code"),
    [
        ("pm_card_chargeDeclined", "card_declined", "generic_decline"),
        ("tok_chargeDeclined", "card_declined", "generic_decline"),
        ("pm_card_chargeDeclinedInsufficientFunds", "card_declined", "insufficient_funds"),
        ("tok_chargeDeclinedInsufficientFunds", "card_declined", "insufficient_funds"),
        ("pm_card_chargeDeclinedExpiredCard", "expired_card", "expired_card"),
    ],
)
def test_confirm_declined_card_raises_card_error(
    client: stripe.StripeClient,
    sandbox: RunningSandbox,
    token: str,
    code: str,
    decline_code: str,
) -> None:
    with pytest.raises(stripe.CardError) as caught:
        create(client, payment_method=token, confirm=True)

    exc = caught.value
    assert exc.http_status == 402
    assert exc.code == code
    assert exc.error is not None
    assert exc.error.decline_code == decline_code
    assert exc.user_message
    failed = exc.error.payment_intent
    assert failed.status == "requires_payment_method"
    assert failed.last_payment_error.decline_code == decline_code
    assert failed.last_payment_error.payment_method.id == token
    # The intent exists after a decline, exactly as on Stripe, and no money moved.
    assert client.v1.payment_intents.retrieve(failed.id).status == "requires_payment_method"
    assert sandbox.entries() == []


def test_declined_intent_can_be_confirmed_with_another_card(
    client: stripe.StripeClient, sandbox: RunningSandbox
) -> None:
    with pytest.raises(stripe.CardError) as caught:
        create(client, payment_method="pm_card_chargeDeclined", confirm=True)
    assert caught.value.error is not None
    intent_id = caught.value.error.payment_intent.id

    pi = client.v1.payment_intents.confirm(intent_id, params={"payment_method": "pm_card_visa"})

    assert pi.status == "succeeded"
    assert pi.last_payment_error is None
    assert sandbox.summary()["pay_1"]["captures"] == 1


@pytest.mark.parametrize(
    "token", ["pm_card_authenticationRequired", "pm_card_threeDSecure2Required"]
)
def test_confirm_requiring_authentication_returns_requires_action(
    client: stripe.StripeClient, sandbox: RunningSandbox, token: str
) -> None:
    pi = create(client, payment_method=token, confirm=True)

    assert pi.status == "requires_action"
    assert pi.next_action.type == "use_stripe_sdk"
    assert sandbox.entries() == []

    settled = sandbox.settle(pi.id, "succeeded")
    assert settled.status_code == 200
    assert settled.json()["status"] == "succeeded"
    assert settled.json()["next_action"] is None
    assert sandbox.summary()["pay_1"]["captured"] == 1000


def test_failed_authentication_returns_to_requires_payment_method(
    client: stripe.StripeClient, sandbox: RunningSandbox
) -> None:
    pi = create(client, payment_method="pm_card_authenticationRequired", confirm=True)

    body = sandbox.settle(pi.id, "failed").json()

    assert body["status"] == "requires_payment_method"
    assert body["last_payment_error"]["code"] == "payment_intent_authentication_failure"
    assert sandbox.entries() == []


def test_processing_payment_stays_processing_until_settled(
    client: stripe.StripeClient, sandbox: RunningSandbox
) -> None:
    pi = create(client, payment_method="pm_card_processing", confirm=True)
    assert pi.status == "processing"
    assert client.v1.payment_intents.retrieve(pi.id).status == "processing"
    assert sandbox.entries() == []

    settled = sandbox.settle(pi.id, "succeeded", as_json=True)

    assert settled.json()["status"] == "succeeded"
    assert client.v1.payment_intents.retrieve(pi.id).amount_received == 1000
    assert sandbox.summary()["pay_1"]["captures"] == 1
    # Settling twice is a state error, not a second charge.
    assert sandbox.settle(pi.id, "succeeded").status_code == 400
    assert sandbox.summary()["pay_1"]["captures"] == 1


def test_processing_payment_settled_as_failed_is_declined(
    client: stripe.StripeClient, sandbox: RunningSandbox
) -> None:
    pi = create(client, payment_method="pm_card_processing", confirm=True)

    body = sandbox.settle(pi.id, "failed").json()

    assert body["status"] == "requires_payment_method"
    assert body["last_payment_error"]["decline_code"] == "generic_decline"
    assert sandbox.entries() == []


def test_settle_rejects_unknown_outcome_and_unknown_intent(sandbox: RunningSandbox) -> None:
    assert sandbox.settle("pi_missing", "succeeded").status_code == 404
    assert sandbox.settle("pi_missing", "maybe").status_code == 400


def test_unknown_payment_method_is_invalid_request(client: stripe.StripeClient) -> None:
    with pytest.raises(stripe.InvalidRequestError) as caught:
        create(client, payment_method="pm_card_doesNotExist", confirm=True)

    assert caught.value.http_status == 400
    assert caught.value.code == "resource_missing"
    assert caught.value.param == "payment_method"


def test_confirm_without_payment_method_is_rejected(client: stripe.StripeClient) -> None:
    pi = create(client, payment_method=None)

    with pytest.raises(stripe.InvalidRequestError) as caught:
        client.v1.payment_intents.confirm(pi.id)

    assert caught.value.code == "payment_intent_unexpected_state"


def test_confirm_succeeded_intent_is_unexpected_state(client: stripe.StripeClient) -> None:
    pi = create(client, confirm=True)

    with pytest.raises(stripe.InvalidRequestError) as caught:
        client.v1.payment_intents.confirm(pi.id)

    assert caught.value.code == "payment_intent_unexpected_state"


def test_retrieve_unknown_intent_is_resource_missing(client: stripe.StripeClient) -> None:
    with pytest.raises(stripe.InvalidRequestError) as caught:
        client.v1.payment_intents.retrieve("pi_doesnotexist")

    assert caught.value.http_status == 404
    assert caught.value.code == "resource_missing"


@pytest.mark.parametrize(
    ("params", "code"),
    [
        ({"currency": "usd"}, "parameter_missing"),
        ({"amount": 0, "currency": "usd"}, "amount_too_small"),
        ({"amount": 1000, "currency": "usd", "colour": "red"}, "parameter_unknown"),
    ],
)
def test_invalid_create_params_are_rejected(
    client: stripe.StripeClient, params: dict[str, Any], code: str
) -> None:
    with pytest.raises(stripe.InvalidRequestError) as caught:
        client.v1.payment_intents.create(params=params)  # type: ignore[arg-type]

    assert caught.value.code == code


def test_nested_form_params_round_trip(client: stripe.StripeClient) -> None:
    pi = client.v1.payment_intents.create(
        params={
            "amount": 250,
            "currency": "eur",
            "payment_method_types": ["card"],
            "metadata": {"payment_id": "pay_9", "order_id": "ord_1", "user_id": "u[1]"},
        }
    )

    fetched = client.v1.payment_intents.retrieve(pi.id)
    assert fetched.metadata.to_dict() == {
        "payment_id": "pay_9",
        "order_id": "ord_1",
        "user_id": "u[1]",
    }
    assert fetched.payment_method_types == ["card"]
    assert fetched.amount == 250 and fetched.currency == "eur"


def test_raw_form_body_with_brackets_is_parsed(sandbox: RunningSandbox) -> None:
    response = sandbox.control.post(
        "/stripe/v1/payment_intents",
        content="amount=1000&currency=usd&metadata[payment_id]=pay_1&payment_method_types[0]=card",
        headers={
            "Authorization": f"Bearer {TEST_KEY}",
            "Content-Type": "application/x-www-form-urlencoded",
        },
    )

    assert response.status_code == 200
    body = response.json()
    assert body["metadata"] == {"payment_id": "pay_1"}
    assert body["payment_method_types"] == ["card"]
    assert body["status"] == "requires_payment_method"


# --- authentication -----------------------------------------------------------------------


def test_live_key_is_authentication_error(sandbox: RunningSandbox) -> None:
    http = stripe.HTTPXClient(allow_sync_methods=True)
    live = sdk_client(sandbox, http, api_key="sk_live_x")

    with pytest.raises(stripe.AuthenticationError) as caught:
        live.v1.payment_intents.retrieve("pi_any")
    http.close()

    assert caught.value.http_status == 401


def test_missing_key_is_401_api_key_invalid(sandbox: RunningSandbox) -> None:
    response = sandbox.control.post("/stripe/v1/payment_intents", data={"amount": "1"})

    assert response.status_code == 401
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error"
    assert error["code"] == "api_key_invalid"


def test_unknown_url_is_json_404(client: stripe.StripeClient, sandbox: RunningSandbox) -> None:
    response = sandbox.control.get(
        "/stripe/v1/charges", headers={"Authorization": f"Bearer {TEST_KEY}"}
    )

    assert response.status_code == 404
    assert response.json()["error"]["type"] == "invalid_request_error"


# --- manual capture and cancel ------------------------------------------------------------


def test_manual_capture_full(client: stripe.StripeClient, sandbox: RunningSandbox) -> None:
    pi = create(client, confirm=True, capture_method="manual")
    assert pi.status == "requires_capture"
    assert (pi.amount_capturable, pi.amount_received) == (1000, 0)
    assert [e["kind"] for e in sandbox.entries()] == ["authorization"]
    assert sandbox.summary()["pay_1"]["captures"] == 0

    captured = client.v1.payment_intents.capture(pi.id, options={"idempotency_key": key()})

    assert captured.status == "succeeded"
    assert (captured.amount_capturable, captured.amount_received) == (0, 1000)
    assert sandbox.summary()["pay_1"] == {
        "captured": 1000,
        "refunded": 0,
        "captures": 1,
        "refunds": 0,
    }


def test_manual_capture_partial(client: stripe.StripeClient, sandbox: RunningSandbox) -> None:
    pi = create(client, confirm=True, capture_method="manual")

    captured = client.v1.payment_intents.capture(pi.id, params={"amount_to_capture": 600})

    assert captured.status == "succeeded"
    assert (captured.amount_received, captured.amount_capturable) == (600, 0)
    kinds = [(e["kind"], e["amount"]) for e in sandbox.entries(payment_id="pay_1")]
    assert kinds == [("authorization", 1000), ("capture", 600), ("void", 400)]
    assert sandbox.summary()["pay_1"]["captured"] == 600
    # The remainder was released: there is nothing left to capture.
    with pytest.raises(stripe.InvalidRequestError) as caught:
        client.v1.payment_intents.capture(pi.id, params={"amount_to_capture": 400})
    assert caught.value.code == "payment_intent_unexpected_state"


def test_capture_more_than_authorized_is_rejected(
    client: stripe.StripeClient, sandbox: RunningSandbox
) -> None:
    pi = create(client, confirm=True, capture_method="manual")

    with pytest.raises(stripe.InvalidRequestError) as caught:
        client.v1.payment_intents.capture(pi.id, params={"amount_to_capture": 1001})

    assert caught.value.code == "amount_too_large"
    assert client.v1.payment_intents.retrieve(pi.id).status == "requires_capture"
    assert sandbox.summary()["pay_1"]["captures"] == 0


def test_capture_of_automatic_intent_is_unexpected_state(client: stripe.StripeClient) -> None:
    pi = create(client, confirm=True)

    with pytest.raises(stripe.InvalidRequestError) as caught:
        client.v1.payment_intents.capture(pi.id)

    assert caught.value.code == "payment_intent_unexpected_state"


def test_cancel_authorized_intent_voids_the_authorization(
    client: stripe.StripeClient, sandbox: RunningSandbox
) -> None:
    pi = create(client, confirm=True, capture_method="manual")

    canceled = client.v1.payment_intents.cancel(
        pi.id, params={"cancellation_reason": "requested_by_customer"}
    )

    assert canceled.status == "canceled"
    assert canceled.cancellation_reason == "requested_by_customer"
    assert canceled.amount_capturable == 0
    assert [(e["kind"], e["amount"]) for e in sandbox.entries()] == [
        ("authorization", 1000),
        ("void", 1000),
    ]
    assert sandbox.summary()["pay_1"]["captured"] == 0


@pytest.mark.parametrize(
    "token", [None, "pm_card_authenticationRequired", "pm_card_processing", "pm_card_visa"]
)
def test_cancel_before_capture_succeeds(client: stripe.StripeClient, token: str | None) -> None:
    # None: requires_payment_method; pm_card_visa unconfirmed: requires_confirmation.
    confirm = token not in (None, "pm_card_visa")
    pi = create(client, payment_method=token, confirm=confirm)

    assert client.v1.payment_intents.cancel(pi.id).status == "canceled"


def test_cancel_succeeded_or_canceled_intent_is_unexpected_state(
    client: stripe.StripeClient,
) -> None:
    succeeded = create(client, confirm=True)
    canceled = client.v1.payment_intents.cancel(create(client, payment_method=None).id)

    for pi in (succeeded, canceled):
        with pytest.raises(stripe.InvalidRequestError) as caught:
            client.v1.payment_intents.cancel(pi.id)
        assert caught.value.code == "payment_intent_unexpected_state"
        assert caught.value.http_status == 400


# --- refunds -------------------------------------------------------------------------------


def test_refund_defaults_to_the_whole_capture(
    client: stripe.StripeClient, sandbox: RunningSandbox
) -> None:
    pi = create(client, confirm=True)

    refund = client.v1.refunds.create(
        params={
            "payment_intent": pi.id,
            "reason": "requested_by_customer",
            "metadata": {"payment_id": "pay_1", "refund_id": "rf_1"},
        },
        options={"idempotency_key": key()},
    )

    assert refund.id.startswith("re_")
    assert refund.object == "refund"
    assert (refund.amount, refund.currency, refund.status) == (1000, "usd", "succeeded")
    assert refund.payment_intent == pi.id
    assert refund.metadata.to_dict() == {"payment_id": "pay_1", "refund_id": "rf_1"}
    assert client.v1.refunds.retrieve(refund.id).amount == 1000
    assert sandbox.summary()["pay_1"] == {
        "captured": 1000,
        "refunded": 1000,
        "captures": 1,
        "refunds": 1,
    }


def test_refund_cannot_exceed_capture(client: stripe.StripeClient, sandbox: RunningSandbox) -> None:
    pi = create(client, confirm=True)
    client.v1.refunds.create(params={"payment_intent": pi.id, "amount": 600})

    with pytest.raises(stripe.InvalidRequestError) as too_large:
        client.v1.refunds.create(params={"payment_intent": pi.id, "amount": 401})
    assert too_large.value.code == "amount_too_large"

    client.v1.refunds.create(params={"payment_intent": pi.id, "amount": 400})
    with pytest.raises(stripe.InvalidRequestError) as exhausted:
        client.v1.refunds.create(params={"payment_intent": pi.id, "amount": 1})
    assert exhausted.value.code == "charge_already_refunded"

    assert sandbox.summary()["pay_1"] == {
        "captured": 1000,
        "refunded": 1000,
        "captures": 1,
        "refunds": 2,
    }


def test_refund_after_partial_capture_is_bounded_by_the_capture(
    client: stripe.StripeClient,
) -> None:
    pi = create(client, confirm=True, capture_method="manual")
    client.v1.payment_intents.capture(pi.id, params={"amount_to_capture": 300})

    with pytest.raises(stripe.InvalidRequestError) as caught:
        client.v1.refunds.create(params={"payment_intent": pi.id, "amount": 301})
    assert caught.value.code == "amount_too_large"
    assert client.v1.refunds.create(params={"payment_intent": pi.id}).amount == 300


def test_refund_of_uncaptured_or_unknown_intent_is_rejected(client: stripe.StripeClient) -> None:
    pi = create(client, confirm=True, capture_method="manual")

    with pytest.raises(stripe.InvalidRequestError) as uncaptured:
        client.v1.refunds.create(params={"payment_intent": pi.id})
    with pytest.raises(stripe.InvalidRequestError) as unknown:
        client.v1.refunds.create(params={"payment_intent": "pi_nope"})
    with pytest.raises(stripe.InvalidRequestError) as missing:
        client.v1.refunds.retrieve("re_nope")

    assert uncaptured.value.code == "charge_not_refundable"
    assert unknown.value.code == "resource_missing"
    assert missing.value.http_status == 404


# --- idempotency --------------------------------------------------------------------------


def test_same_idempotency_key_same_body_replays(
    client: stripe.StripeClient, sandbox: RunningSandbox
) -> None:
    k = key()
    first = create(client, confirm=True, idempotency_key=k)
    second = create(client, confirm=True, idempotency_key=k)

    assert second.id == first.id
    assert second.to_dict() == first.to_dict()
    assert first.last_response is not None and second.last_response is not None
    assert "idempotent-replayed" not in first.last_response.headers
    assert second.last_response.headers["idempotent-replayed"] == "true"
    assert second.last_response.idempotency_key == k
    assert sandbox.summary()["pay_1"]["captures"] == 1


def test_same_key_different_body_is_idempotency_error(
    client: stripe.StripeClient, sandbox: RunningSandbox
) -> None:
    k = key()
    create(client, confirm=True, idempotency_key=k)

    with pytest.raises(stripe.IdempotencyError) as caught:
        create(client, confirm=True, amount=2000, idempotency_key=k)

    assert caught.value.http_status == 400
    assert "same parameters" in (caught.value.user_message or "")
    assert sandbox.summary()["pay_1"]["captures"] == 1


def test_same_key_different_endpoint_is_idempotency_error(client: stripe.StripeClient) -> None:
    k = key()
    pi = create(client, confirm=True, idempotency_key=k)

    with pytest.raises(stripe.IdempotencyError):
        client.v1.refunds.create(params={"payment_intent": pi.id}, options={"idempotency_key": k})


def test_declined_response_is_replayed_for_the_same_key(
    client: stripe.StripeClient, sandbox: RunningSandbox
) -> None:
    k = key()
    errors = []
    for _ in range(2):
        with pytest.raises(stripe.CardError) as caught:
            create(client, payment_method="pm_card_chargeDeclined", confirm=True, idempotency_key=k)
        errors.append(caught.value)

    assert errors[0].error is not None and errors[1].error is not None
    assert errors[1].error.payment_intent.id == errors[0].error.payment_intent.id
    assert errors[1].headers is not None
    assert errors[1].headers["idempotent-replayed"] == "true"


def test_rejected_params_do_not_burn_the_key(client: stripe.StripeClient) -> None:
    # Stripe saves nothing for requests that fail validation, so a corrected retry may reuse
    # the key; the adapter relies on this when it fixes a request and tries again.
    k = key()
    with pytest.raises(stripe.InvalidRequestError):
        create(client, payment_method="pm_card_nope", confirm=True, idempotency_key=k)

    assert create(client, confirm=True, idempotency_key=k).status == "succeeded"


def test_capture_retried_with_same_key_captures_once(
    client: stripe.StripeClient, sandbox: RunningSandbox
) -> None:
    pi = create(client, confirm=True, capture_method="manual")
    k = key()

    for _ in range(3):
        captured = client.v1.payment_intents.capture(
            pi.id, params={"amount_to_capture": 500}, options={"idempotency_key": k}
        )
        assert captured.status == "succeeded"

    assert sandbox.summary()["pay_1"] == {
        "captured": 500,
        "refunded": 0,
        "captures": 1,
        "refunds": 0,
    }


def test_reset_forgets_intents_ledger_and_keys(
    client: stripe.StripeClient, sandbox: RunningSandbox
) -> None:
    k = key()
    pi = create(client, confirm=True, idempotency_key=k)

    sandbox.reset()

    assert sandbox.entries() == [] and sandbox.summary() == {}
    with pytest.raises(stripe.InvalidRequestError):
        client.v1.payment_intents.retrieve(pi.id)
    assert create(client, amount=5, confirm=True, idempotency_key=k).amount == 5


# --- ledger -------------------------------------------------------------------------------


def test_ledger_entry_records_who_what_and_how_much(
    client: stripe.StripeClient, sandbox: RunningSandbox
) -> None:
    pi = create(client, confirm=True, amount=1234)

    [entry] = sandbox.entries()

    assert entry == {
        "gateway": "stripe",
        "kind": "capture",
        "object_id": pi.latest_charge,
        "payment_intent": pi.id,
        "amount": 1234,
        "currency": "usd",
        "payment_id": "pay_1",
        "created": entry["created"],
    }
    assert isinstance(entry["amount"], int) and isinstance(entry["created"], int)


def test_ledger_filters_by_payment_id(client: stripe.StripeClient, sandbox: RunningSandbox) -> None:
    a = create(client, confirm=True, payment_id="pay_a")
    create(client, confirm=True, payment_id="pay_b", amount=700)
    create(client, confirm=True, payment_id=None, amount=50)
    client.v1.refunds.create(params={"payment_intent": a.id, "amount": 100})

    entries = sandbox.entries(payment_id="pay_a")

    assert [(e["kind"], e["amount"]) for e in entries] == [("capture", 1000), ("refund", 100)]
    assert entries[1]["object_id"].startswith("re_")
    assert len(sandbox.entries()) == 4
    # Money without a payment_id is in the ledger but cannot be summarised per payment.
    assert sandbox.summary() == {
        "pay_a": {"captured": 1000, "refunded": 100, "captures": 1, "refunds": 1},
        "pay_b": {"captured": 700, "refunded": 0, "captures": 1, "refunds": 0},
    }


def test_healthz(sandbox: RunningSandbox) -> None:
    assert sandbox.control.get("/_sandbox/healthz").json() == {"ok": True}


# --- latency and concurrency --------------------------------------------------------------


@pytest.fixture(scope="module")
def slow_server() -> Iterator[RunningSandbox]:
    with serve(SandboxConfig(latency_ms=100)) as running:
        yield running


def test_latency_applies_to_stripe_requests(slow_server: RunningSandbox) -> None:
    http = stripe.HTTPXClient(allow_sync_methods=True)
    client = sdk_client(slow_server, http)
    started = time.perf_counter()
    with pytest.raises(stripe.InvalidRequestError):
        client.v1.payment_intents.retrieve("pi_missing")
    assert time.perf_counter() - started >= 0.1
    http.close()


async def test_concurrent_requests_with_same_key_execute_once(
    slow_server: RunningSandbox,
) -> None:
    slow_server.reset()
    http = stripe.HTTPXClient()
    client = sdk_client(slow_server, http)
    k = key()
    params: Any = {
        "amount": 1000,
        "currency": "usd",
        "payment_method": "pm_card_visa",
        "confirm": True,
        "metadata": {"payment_id": "pay_concurrent"},
    }

    results = await asyncio.gather(
        *(
            client.v1.payment_intents.create_async(params=params, options={"idempotency_key": k})
            for _ in range(5)
        )
    )
    await http.close_async()

    assert len({pi.id for pi in results}) == 1
    replayed = [
        pi.last_response is not None and pi.last_response.headers.get("idempotent-replayed")
        for pi in results
    ]
    assert replayed.count("true") == 4
    assert slow_server.summary()["pay_concurrent"]["captures"] == 1
