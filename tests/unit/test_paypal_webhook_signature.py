"""`PayPalVerifier` against the sandbox's signer, with the certificate served over a socket."""

from __future__ import annotations

import base64
import datetime as dt
import json
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import NameOID
from starlette.types import ASGIApp

from gateways.sandbox.app import SandboxConfig, create_app
from gateways.sandbox.paypal import WebhookSigner
from ingress.webhooks.base import WebhookRejected
from ingress.webhooks.paypal import PayPalVerifier
from tests.servers import serve_asgi

WEBHOOK_ID = "WH-UNIT-0001"


@dataclass
class CertServer:
    base_url: str
    signer: WebhookSigner

    @property
    def host(self) -> str:
        return self.base_url.removeprefix("http://")

    def verifier(self, **overrides: Any) -> PayPalVerifier:
        options: dict[str, Any] = {
            "webhook_id": WEBHOOK_ID,
            "allowed_cert_hosts": frozenset({self.host}),
        }
        return PayPalVerifier(**(options | overrides))


@pytest.fixture(scope="module")
def certs() -> Iterator[CertServer]:
    """The sandbox, serving its signing certificate at its own URL."""
    holder: dict[str, Any] = {}

    def make_app(base_url: str) -> ASGIApp:
        app = create_app(SandboxConfig(public_url=base_url, paypal_webhook_id=WEBHOOK_ID))
        holder["signer"] = app.state.sandbox.paypal.signer
        return app

    with serve_asgi(make_app) as base_url:
        yield CertServer(base_url, holder["signer"])


def capture_event(**resource: Any) -> bytes:
    body = {
        "id": "WH-1AB-2CD",
        "event_version": "1.0",
        "create_time": "2026-01-02T03:04:05Z",
        "resource_type": "capture",
        "event_type": "PAYMENT.CAPTURE.COMPLETED",
        "summary": "Payment completed",
        "resource": {
            "id": "CAP123",
            "status": "COMPLETED",
            "amount": {"currency_code": "USD", "value": "12.34"},
            "custom_id": "pay_42",
            "invoice_id": "pay_42",
            "supplementary_data": {"related_ids": {"order_id": "ORD1"}},
        }
        | resource,
    }
    return json.dumps(body, separators=(",", ":")).encode()


def lower(headers: dict[str, str]) -> dict[str, str]:
    return {k.lower(): v for k, v in headers.items()}


async def rejection(verifier: PayPalVerifier, headers: dict[str, str], body: bytes) -> str:
    with pytest.raises(WebhookRejected) as caught:
        await verifier.verify(headers, body)
    return caught.value.code


async def test_sandbox_signature_verifies_and_normalises(certs: CertServer) -> None:
    body = capture_event()
    headers = lower(certs.signer.headers(body))

    event = await certs.verifier().verify(headers, body)

    assert event.gateway == "paypal"
    assert (event.event_id, event.event_type) == ("WH-1AB-2CD", "PAYMENT.CAPTURE.COMPLETED")
    assert (event.object_id, event.payment_id) == ("CAP123", "pay_42")
    assert (event.amount, event.currency) == (1234, "USD")
    assert event.occurred_at_ms == 1767323045000
    assert event.payload == body
    assert event.replay_key == headers["paypal-transmission-id"]


async def test_tampered_body_is_signature_invalid(certs: CertServer) -> None:
    body = capture_event()
    headers = lower(certs.signer.headers(body))

    assert await rejection(certs.verifier(), headers, body.replace(b"12.34", b"99.99")) == (
        "signature_invalid"
    )


async def test_other_webhook_id_is_signature_invalid(certs: CertServer) -> None:
    body = capture_event()
    headers = lower(certs.signer.headers(body))

    verifier = certs.verifier(webhook_id="WH-SOMEONE-ELSE")

    assert await rejection(verifier, headers, body) == "signature_invalid"


async def test_old_transmission_is_signature_expired(certs: CertServer) -> None:
    body = capture_event()
    old = (dt.datetime.now(dt.UTC) - dt.timedelta(seconds=301)).strftime("%Y-%m-%dT%H:%M:%SZ")
    headers = lower(certs.signer.headers(body, transmission_time=old))

    assert await rejection(certs.verifier(), headers, body) == "signature_expired"
    # ... which a wider tolerance accepts: the signature itself is good.
    assert (await certs.verifier(tolerance_s=600).verify(headers, body)).payment_id == "pay_42"


async def test_future_transmission_is_signature_expired(certs: CertServer) -> None:
    body = capture_event()
    ahead = (dt.datetime.now(dt.UTC) + dt.timedelta(seconds=400)).isoformat()
    headers = lower(certs.signer.headers(body, transmission_time=ahead))

    assert await rejection(certs.verifier(), headers, body) == "signature_expired"


async def test_cert_host_not_allow_listed_is_untrusted(certs: CertServer) -> None:
    body = capture_event()
    headers = lower(certs.signer.headers(body))
    verifier = certs.verifier(allowed_cert_hosts=frozenset({"api.paypal.com"}))

    assert await rejection(verifier, headers, body) == "certificate_untrusted"


@pytest.mark.parametrize(
    "url",
    [
        "ftp://{host}/_sandbox/paypal/cert.pem",
        "http://user@{host}/_sandbox/paypal/cert.pem",
        "http://{host}.evil.example/cert.pem",
        "http://{host}/_sandbox/paypal/missing.pem",  # allowed host, but no certificate there
    ],
)
async def test_cert_url_tricks_are_untrusted(certs: CertServer, url: str) -> None:
    body = capture_event()
    headers = lower(certs.signer.headers(body)) | {"paypal-cert-url": url.format(host=certs.host)}

    assert await rejection(certs.verifier(), headers, body) == "certificate_untrusted"


@pytest.mark.parametrize(
    "header",
    [
        "paypal-transmission-id",
        "paypal-transmission-time",
        "paypal-transmission-sig",
        "paypal-cert-url",
        "paypal-auth-algo",
    ],
)
async def test_missing_header_is_signature_missing(certs: CertServer, header: str) -> None:
    body = capture_event()
    headers = lower(certs.signer.headers(body))
    del headers[header]

    assert await rejection(certs.verifier(), headers, body) == "signature_missing"


@pytest.mark.parametrize(
    ("header", "value"),
    [
        ("paypal-auth-algo", "SHA1withRSA"),
        ("paypal-transmission-sig", "%%% not base64 %%%"),
        ("paypal-transmission-time", "yesterday"),
        ("paypal-transmission-id", "another-id"),
    ],
)
async def test_bad_header_values_are_signature_invalid(
    certs: CertServer, header: str, value: str
) -> None:
    body = capture_event()
    headers = lower(certs.signer.headers(body)) | {header: value}

    assert await rejection(certs.verifier(), headers, body) == "signature_invalid"


async def test_signed_but_unreadable_payloads_are_payload_invalid(certs: CertServer) -> None:
    for body in (b"not json", b"[]", json.dumps({"id": "WH-1"}).encode()):
        headers = lower(certs.signer.headers(body))
        assert await rejection(certs.verifier(), headers, body) == "payload_invalid"
    bad_amount = capture_event(amount={"currency_code": "USD", "value": "1.234"})
    headers = lower(certs.signer.headers(bad_amount))
    assert await rejection(certs.verifier(), headers, bad_amount) == "payload_invalid"


async def test_dispute_and_order_events_find_the_payment_id(certs: CertServer) -> None:
    dispute = {
        "id": "WH-D",
        "event_type": "CUSTOMER.DISPUTE.CREATED",
        "create_time": "2026-01-02T03:04:05Z",
        "resource": {
            "dispute_id": "PP-D-1",
            "disputed_transactions": [{"seller_transaction_id": "CAP1", "custom": "pay_7"}],
            "dispute_amount": {"currency_code": "JPY", "value": "500"},
        },
    }
    approved = {
        "id": "WH-O",
        "event_type": "CHECKOUT.ORDER.APPROVED",
        "resource": {
            "id": "ORD1",
            "purchase_units": [
                {"custom_id": "pay_8", "amount": {"currency_code": "BHD", "value": "1.500"}}
            ],
        },
    }
    verifier = certs.verifier()
    events = []
    for payload in (dispute, approved):
        body = json.dumps(payload).encode()
        events.append(await verifier.verify(lower(certs.signer.headers(body)), body))

    assert [(e.object_id, e.payment_id, e.amount, e.currency) for e in events] == [
        ("PP-D-1", "pay_7", 500, "JPY"),
        ("ORD1", "pay_8", 1500, "BHD"),
    ]


# --- certificate fetching, without the sandbox: a transport that counts ---------------------


def self_signed(not_before: dt.datetime, not_after: dt.datetime) -> tuple[rsa.RSAPrivateKey, bytes]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test")])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .sign(key, hashes.SHA256())
    )
    return key, cert.public_bytes(serialization.Encoding.PEM)


def signed_headers(key: rsa.RSAPrivateKey, body: bytes, cert_url: str) -> dict[str, str]:
    tid = "tid-1"
    sent = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    message = f"{tid}|{sent}|{WEBHOOK_ID}|{zlib.crc32(body)}".encode()
    signature = key.sign(message, padding.PKCS1v15(), hashes.SHA256())
    return {
        "paypal-transmission-id": tid,
        "paypal-transmission-time": sent,
        "paypal-transmission-sig": base64.b64encode(signature).decode(),
        "paypal-cert-url": cert_url,
        "paypal-auth-algo": "SHA256withRSA",
    }


async def test_certificate_is_fetched_once_per_url_over_https() -> None:
    now = dt.datetime.now(dt.UTC)
    key, pem = self_signed(now - dt.timedelta(days=1), now + dt.timedelta(days=1))
    fetched: list[str] = []

    def serve(request: httpx.Request) -> httpx.Response:
        fetched.append(str(request.url))
        return httpx.Response(200, content=pem)

    url = "https://api.paypal.com/v1/notifications/certs/CERT-1"
    async with httpx.AsyncClient(transport=httpx.MockTransport(serve)) as http:
        verifier = PayPalVerifier(
            webhook_id=WEBHOOK_ID, allowed_cert_hosts=frozenset({"api.paypal.com"}), http=http
        )
        for _ in range(3):
            body = capture_event()
            await verifier.verify(signed_headers(key, body, url), body)

    assert fetched == [url]


async def test_expired_certificate_is_untrusted() -> None:
    now = dt.datetime.now(dt.UTC)
    key, pem = self_signed(now - dt.timedelta(days=30), now - dt.timedelta(days=1))
    url = "https://api.paypal.com/v1/notifications/certs/CERT-OLD"
    transport = httpx.MockTransport(lambda request: httpx.Response(200, content=pem))
    async with httpx.AsyncClient(transport=transport) as http:
        verifier = PayPalVerifier(
            webhook_id=WEBHOOK_ID, allowed_cert_hosts=frozenset({"api.paypal.com"}), http=http
        )
        body = capture_event()
        code = await rejection(verifier, signed_headers(key, body, url), body)

    assert code == "certificate_untrusted"


async def test_certificate_of_another_key_is_signature_invalid() -> None:
    now = dt.datetime.now(dt.UTC)
    _, pem = self_signed(now - dt.timedelta(days=1), now + dt.timedelta(days=1))
    impostor, _ = self_signed(now - dt.timedelta(days=1), now + dt.timedelta(days=1))
    url = "https://api.paypal.com/v1/notifications/certs/CERT-2"
    transport = httpx.MockTransport(lambda request: httpx.Response(200, content=pem))
    async with httpx.AsyncClient(transport=transport) as http:
        verifier = PayPalVerifier(
            webhook_id=WEBHOOK_ID, allowed_cert_hosts=frozenset({"api.paypal.com"}), http=http
        )
        body = capture_event()
        code = await rejection(verifier, signed_headers(impostor, body, url), body)

    assert code == "signature_invalid"
