"""API keys and roles at the ingress: 401 without a valid key, 403 for the wrong role, and a
merchant sees only the payments its own key created."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from domain.keys import Role, digest, new_key
from payments.devstack import DevStack
from tests.conftest import running_stack
from tests.integration.helpers import auth, payment_body, wait_settled

pytestmark = pytest.mark.stack
OTHER_MERCHANT = new_key(Role.MERCHANT)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, external_services: Any) -> Iterator[DevStack]:
    env = {"PAYMENTS_API_KEYS": f"shop-2:merchant:{digest(OTHER_MERCHANT)}"}
    with running_stack(tmp_path_factory.mktemp("auth"), external_services, env) as s:
        yield s


def call(stack: DevStack, method: str, path: str, key: str | None, **kw: Any) -> httpx.Response:
    headers = {"Idempotency-Key": kw.pop("idem", uuid.uuid4().hex)}
    if key is not None:
        headers["Authorization"] = f"Bearer {key}"
    return httpx.request(
        method, f"{stack.endpoints['ingress_url']}{path}", headers=headers, timeout=15, **kw
    )


def test_no_key_or_a_wrong_key_is_401(stack: DevStack) -> None:
    for key in (None, "pk_merchant_not-a-key", "x"):
        r = call(stack, "POST", "/v1/payments", key, json=payment_body())
        assert r.status_code == 401, r.text
        assert r.json()["error"]["code"] == "unauthorized"
        assert r.headers["www-authenticate"] == "Bearer"
    basic = httpx.post(
        f"{stack.endpoints['ingress_url']}/v1/payments",
        headers={"Authorization": "Basic dXNlcjpwYXNz"},
        json=payment_body(),
    )
    assert basic.status_code == 401


def test_a_merchant_sees_only_its_own_payments(stack: DevStack) -> None:
    mine = stack.endpoints["merchant_api_key"]
    idem = uuid.uuid4().hex
    created = call(stack, "POST", "/v1/payments", mine, json=payment_body(), idem=idem)
    assert created.status_code == 202, created.text
    pid = created.json()["payment_id"]
    with httpx.Client(
        base_url=stack.endpoints["ingress_url"], headers=auth(stack.endpoints, "merchant")
    ) as client:
        assert wait_settled(client, pid)["status"] == "succeeded"
    assert call(stack, "GET", f"/v1/payments/{pid}", OTHER_MERCHANT).status_code == 404
    hijack = call(stack, "POST", "/v1/payments", OTHER_MERCHANT, json=payment_body(), idem=idem)
    assert hijack.status_code == 409, hijack.text  # another key's Idempotency-Key
    capture = call(stack, "POST", f"/v1/payments/{pid}/cancel", OTHER_MERCHANT)
    assert capture.status_code == 404
    assert (
        call(stack, "GET", f"/v1/payments/{pid}", stack.endpoints["admin_api_key"]).status_code
        == 200
    )


def test_refunds_listings_and_reviews_need_the_admin_role(stack: DevStack) -> None:
    merchant, admin = stack.endpoints["merchant_api_key"], stack.endpoints["admin_api_key"]
    created = call(stack, "POST", "/v1/payments", merchant, json=payment_body())
    pid = created.json()["payment_id"]
    with httpx.Client(
        base_url=stack.endpoints["ingress_url"], headers=auth(stack.endpoints, "merchant")
    ) as client:
        wait_settled(client, pid)
    for method, path, body in (
        ("POST", f"/v1/payments/{pid}/refunds", {}),
        ("GET", "/v1/payments", None),
        ("GET", "/v1/refunds", None),
        ("POST", f"/v1/payments/{pid}/review", {"decision": "approve"}),
    ):
        r = call(stack, method, path, merchant, json=body)
        assert r.status_code == 403, (path, r.text)
        assert r.json()["error"]["code"] == "forbidden"
    refund = call(stack, "POST", f"/v1/payments/{pid}/refunds", admin, json={})
    assert refund.status_code == 202, refund.text
    assert call(stack, "GET", "/v1/payments", admin).status_code == 200


def test_webhooks_health_and_metrics_need_no_key(stack: DevStack) -> None:
    base = stack.endpoints["ingress_url"]
    for path in ("/healthz", "/readyz", "/metrics", "/openapi.json", "/dashboard"):
        assert httpx.get(f"{base}{path}", timeout=10).status_code == 200, path
    forged = httpx.post(f"{base}/v1/webhooks/stripe", content=b"{}", timeout=10)
    assert forged.status_code == 400  # refused by its signature check, not by a key check


def test_ingress_logs_are_json_with_the_request_id_and_no_secrets(stack: DevStack) -> None:
    base = stack.endpoints["ingress_url"]
    rid = f"req-{uuid.uuid4().hex[:12]}"
    r = httpx.post(
        f"{base}/v1/webhooks/stripe",
        content=b"{}",
        headers={"X-Request-Id": rid, "stripe-signature": "t=1,v1=00"},
        timeout=10,
    )
    assert r.status_code == 400 and r.headers["x-request-id"] == rid
    odd = httpx.get(f"{base}/healthz", headers={"X-Request-Id": "no spaces allowed"}, timeout=10)
    assert odd.headers["x-request-id"] != "no spaces allowed"
    assert len(odd.headers["x-request-id"]) == 32
    call(stack, "GET", "/v1/payments", stack.endpoints["merchant_api_key"])  # a 403, logged or not
    time.sleep(0.5)
    text = (stack.opts.state_dir / "logs" / "ingress.log").read_text()
    records = [json.loads(line) for line in text.splitlines() if line.startswith("{")]
    assert records and {"time", "level", "logger", "message"} <= set(records[0])
    mine = [rec for rec in records if rec.get("request_id") == rid]
    assert mine and mine[0]["logger"] == "ingress.webhooks.route", mine
    for secret in (stack.endpoints["merchant_api_key"], stack.endpoints["admin_api_key"]):
        assert secret not in text
