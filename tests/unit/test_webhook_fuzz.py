"""Fuzzing the webhook verifiers: whatever headers and body arrive, the answer is a verified
event or `WebhookRejected` (a 400 with a reason), never another exception (a 500).

Hypothesis drives arbitrary headers and bytes, and also bodies signed correctly, so that the
parsing after the signature check is reached with arbitrary JSON as well."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from typing import Any

import httpx
import stripe
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateways.sandbox.square import signature_headers
from ingress.webhooks.base import VerifiedEvent, WebhookRejected
from ingress.webhooks.paypal import PayPalVerifier
from ingress.webhooks.square import SquareVerifier
from ingress.webhooks.stripe import StripeVerifier

SECRET = "whsec_fuzz"
SQUARE_KEY, SQUARE_URL = "square_fuzz_key", "http://127.0.0.1:8000/v1/webhooks/square"
FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

text = st.text(max_size=80)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | text,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(text, inner, max_size=4),
    max_leaves=20,
)
# Event-shaped JSON: the keys the normalisers look for, with arbitrary values.
event_like = st.fixed_dictionaries(
    {},
    optional={
        "id": json_values,
        "type": st.sampled_from(["payment_intent.succeeded", "charge.refunded", "payment.updated",
                                 "refund.updated", "PAYMENT.CAPTURE.COMPLETED"]) | json_values,
        "event_type": json_values,
        "created": json_values,
        "created_at": json_values,
        "create_time": json_values,
        "data": st.dictionaries(text, json_values, max_size=3)
        | st.fixed_dictionaries({"object": st.dictionaries(text, json_values, max_size=5)}),
        "resource": st.dictionaries(text, json_values, max_size=5),
        "livemode": json_values,
        "object": json_values,
    },
)  # fmt: skip


def outcome(verifier: Any, headers: dict[str, str], body: bytes) -> str:
    try:
        event = asyncio.run(verifier.verify(headers, body))
    except WebhookRejected as exc:
        return f"rejected:{exc.code}"
    assert isinstance(event, VerifiedEvent)
    return "verified"


@FUZZ
@given(headers=st.dictionaries(st.sampled_from(["stripe-signature", "x"]), text), body=st.binary())
def test_stripe_anything(headers: dict[str, str], body: bytes) -> None:
    assert outcome(StripeVerifier(secret=SECRET), headers, body).startswith("rejected")


@FUZZ
@given(event=event_like | json_values)
def test_stripe_signed_arbitrary_json(event: Any) -> None:
    payload = json.dumps(event)
    header = stripe.WebhookSignature.generate_signature_header(payload, SECRET)  # type: ignore[attr-defined]
    outcome(StripeVerifier(secret=SECRET), {"stripe-signature": header}, payload.encode())


@FUZZ
@given(
    headers=st.dictionaries(st.sampled_from(["x-square-hmacsha256-signature", "x"]), text),
    body=st.binary(),
)
def test_square_anything(headers: dict[str, str], body: bytes) -> None:
    verifier = SquareVerifier(signature_key=SQUARE_KEY, notification_url=SQUARE_URL)
    assert outcome(verifier, headers, body).startswith("rejected")


@FUZZ
@given(event=event_like | json_values)
def test_square_signed_arbitrary_json(event: Any) -> None:
    body = json.dumps(event).encode()
    headers = signature_headers(body, signature_key=SQUARE_KEY, notification_url=SQUARE_URL)
    verifier = SquareVerifier(signature_key=SQUARE_KEY, notification_url=SQUARE_URL)
    outcome(verifier, {k.lower(): v for k, v in headers.items()}, body)


def _no_network(request: httpx.Request) -> httpx.Response:
    raise httpx.ConnectError("no network in this test", request=request)


PAYPAL_HEADERS = st.fixed_dictionaries(
    {},
    optional={
        "paypal-auth-algo": st.just("SHA256withRSA") | text,
        "paypal-cert-url": st.sampled_from(
            ["https://api.paypal.com/v1/notifications/certs/CERT-1", "http://api.paypal.com/x",
             "https://evil.example/cert", "https://api.paypal.com.evil.example/c", ""]
        ) | text,
        "paypal-transmission-id": text,
        "paypal-transmission-sig": text,
        "paypal-transmission-time": st.just(
            time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        ) | text,
    },
)  # fmt: skip


@FUZZ
@given(headers=PAYPAL_HEADERS, body=st.binary(max_size=200))
def test_paypal_anything_even_a_trusted_host_that_cannot_be_reached(
    headers: dict[str, str], body: bytes
) -> None:
    async def run() -> str:
        async with httpx.AsyncClient(transport=httpx.MockTransport(_no_network)) as http:
            verifier = PayPalVerifier(
                webhook_id="WH-FUZZ", allowed_cert_hosts=frozenset({"api.paypal.com"}), http=http
            )
            try:
                await verifier.verify(headers, body)
            except WebhookRejected as exc:
                return exc.code
            return "verified"

    assert asyncio.run(run()) != "verified"


@FUZZ
@given(event=event_like | json_values)
def test_paypal_verified_arbitrary_json(event: Any) -> None:
    """What PayPal's signature covers, read as an event: a verified event or a 400."""
    from ingress.webhooks.paypal import event_from

    with contextlib.suppress(WebhookRejected):
        assert isinstance(event_from(json.dumps(event).encode(), replay_key="t-1"), VerifiedEvent)
