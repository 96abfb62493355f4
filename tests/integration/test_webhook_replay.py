"""A replayed PayPal transmission is refused by a real ingress process, and nothing is enqueued
twice; the signing certificate comes from an allow-listed host only."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from gateways.sandbox.paypal import WebhookSigner
from payments.devstack import DevStack
from payments.procs import free_port, http_ok
from tests.servers import serve_asgi

pytestmark = pytest.mark.stack
WEBHOOK_ID = "WH-REPLAY-TEST"


@pytest.fixture(scope="module")
def signer() -> Iterator[WebhookSigner]:
    """A PayPal-style signer whose certificate is served on loopback."""
    holder: dict[str, WebhookSigner] = {}

    async def cert(request: Request) -> Response:
        return Response(holder["signer"].cert_pem(), media_type="application/x-pem-file")

    def app(base_url: str) -> Starlette:
        holder["signer"] = WebhookSigner(webhook_id=WEBHOOK_ID, cert_url=f"{base_url}/cert.pem")
        return Starlette(routes=[Route("/cert.pem", cert)])

    with serve_asgi(app):
        yield holder["signer"]


@pytest.fixture(scope="module")
def ingress(stack: DevStack, signer: WebhookSigner, tmp_path_factory) -> Iterator[str]:
    """A second, real ingress process that trusts only this signer's certificate host."""
    port = free_port()
    cert_host = signer.cert_url.removeprefix("http://").split("/")[0]
    env = {
        **os.environ,
        "PAYMENTS_KAFKA_BOOTSTRAP": stack.endpoints["kafka_bootstrap"],
        "PAYMENTS_REDIS_URL": stack.endpoints["redis_url"],
        "PAYMENTS_INGRESS_PORT": str(port),
        "PAYMENTS_PAYPAL_WEBHOOK_ID": WEBHOOK_ID,
        "PAYMENTS_PAYPAL_CERT_HOSTS": cert_host,
    }
    log = (tmp_path_factory.mktemp("ingress") / "ingress.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "payments.cli", "ingress"], env=env, stdout=log, stderr=log
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while not http_ok(f"{url}/readyz"):
            assert proc.poll() is None and time.monotonic() < deadline, "ingress did not start"
            time.sleep(0.2)
        yield url
    finally:
        proc.terminate()
        proc.wait(10)
        log.close()


def capture_completed(payment_id: str) -> bytes:
    return json.dumps(
        {
            "id": f"WH-{uuid.uuid4().hex}",
            "event_version": "1.0",
            "create_time": "2026-11-23T20:00:00Z",
            "resource_type": "capture",
            "event_type": "PAYMENT.CAPTURE.COMPLETED",
            "resource": {
                "id": "CAP-1",
                "status": "COMPLETED",
                "custom_id": payment_id,
                "amount": {"currency_code": "USD", "value": "10.00"},
            },
        }
    ).encode()


def test_replayed_transmission_is_refused(ingress: str, signer: WebhookSigner) -> None:
    body = capture_completed("pay_replay")
    headers = {"content-type": "application/json", **signer.headers(body)}
    first = httpx.post(f"{ingress}/v1/webhooks/paypal", content=body, headers=headers)
    assert first.status_code == 200, first.text
    again = httpx.post(f"{ingress}/v1/webhooks/paypal", content=body, headers=headers)
    assert again.status_code == 400 and again.json()["error"]["code"] == "webhook_replayed"
    # A new transmission of the same event (what PayPal's own retry looks like) is accepted.
    retry = {"content-type": "application/json", **signer.headers(body)}
    assert (
        httpx.post(f"{ingress}/v1/webhooks/paypal", content=body, headers=retry).status_code == 200
    )


def test_tampered_or_stale_paypal_webhooks_are_refused(ingress: str, signer: WebhookSigner) -> None:
    body = capture_completed("pay_x")
    headers = {"content-type": "application/json", **signer.headers(body)}
    tampered = httpx.post(
        f"{ingress}/v1/webhooks/paypal", content=body.replace(b"10.00", b"99.00"), headers=headers
    )
    assert tampered.json()["error"]["code"] == "signature_invalid"
    stale = {
        "content-type": "application/json",
        **signer.headers(body, transmission_time="2020-01-01T00:00:00Z"),
    }
    r = httpx.post(f"{ingress}/v1/webhooks/paypal", content=body, headers=stale)
    assert r.status_code == 400 and r.json()["error"]["code"] == "signature_expired"
