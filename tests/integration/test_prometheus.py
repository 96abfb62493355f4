"""Prometheus /metrics of the worker and the ingress after real traffic."""

from __future__ import annotations

import json
import time
from dataclasses import replace

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from payments.devstack import DevStack
from payments.procs import free_port, http_ok
from tests.integration.helpers import api_client, payment_body, post_payment, wait_settled

pytestmark = pytest.mark.stack


def samples(url: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    text = httpx.get(f"{url}/metrics", timeout=10).text
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(
    found: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str
) -> float:
    return found.get((name, frozenset(labels.items())), 0.0)


def test_worker_and_ingress_metrics_after_traffic(stack: DevStack) -> None:
    worker, ingress = stack.endpoints["worker_url"], stack.endpoints["ingress_url"]
    before_w, before_i = samples(worker), samples(ingress)
    with api_client(stack) as client:
        ids = []
        for token in ("pm_card_visa", "pm_card_chargeDeclined"):
            r = post_payment(client, payment_body(token))
            assert r.status_code == 202, r.text
            ids.append(r.json()["payment_id"])
        for pid in ids:
            wait_settled(client, pid)
        forged = client.post(
            "/v1/webhooks/stripe",
            content=json.dumps({"id": "evt_forged", "type": "payment_intent.succeeded"}),
            headers={"stripe-signature": "t=1,v1=00", "content-type": "application/json"},
        )
        assert forged.status_code == 400

    deadline = time.monotonic() + 20
    while True:
        w, i = samples(worker), samples(ingress)
        calls = "payments_gateway_calls_total"
        grew = {
            "success": value(w, calls, gateway="stripe", operation="authorize", outcome="succeeded")
            > value(before_w, calls, gateway="stripe", operation="authorize", outcome="succeeded"),
            "failure": value(w, calls, gateway="stripe", operation="authorize", outcome="failed")
            > value(before_w, calls, gateway="stripe", operation="authorize", outcome="failed"),
            "verified": value(
                i, "payments_webhook_verifications_total", gateway="stripe", result="ok", reason=""
            )
            > value(
                before_i, "payments_webhook_verifications_total", gateway="stripe", result="ok",
                reason="",
            ),
        }  # fmt: skip
        if all(grew.values()) or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert all(grew.values()), grew
    refused = sum(
        v
        for (name, labels), v in i.items()
        if name == "payments_webhook_verifications_total"
        and dict(labels)["result"] == "failed"
        and dict(labels)["reason"].startswith("signature_")
    )
    assert refused >= 1
    assert value(w, "payments_gateway_call_seconds_count", gateway="stripe", operation="authorize")
    assert value(w, "payments_settled_total", gateway="stripe", status="succeeded") >= 1
    assert value(w, "payments_settled_total", gateway="stripe", status="failed") >= 1
    assert value(w, "payments_processing_seconds_count", gateway="stripe") >= 2
    lag = {dict(labels)["topic"] for (name, labels) in w if name == "payments_consumer_lag"}
    assert {"payment_initiation", "gateway_commands", "payment_analytics"} <= lag
    assert ("payments_gateway_circuit_state", frozenset({("gateway", "stripe")})) in w
    assert ("payments_gateway_calls_in_flight", frozenset()) in w


def test_an_ingress_of_several_processes_reports_them_all(stack: DevStack) -> None:
    """`payments ingress --workers 2`: whichever process answers /metrics counts for both."""
    first = stack.child("ingress")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    twin = replace(
        first,
        name="ingress-multi",
        argv=[*first.argv, "--workers", "2"],
        log_path=first.log_path.with_name("ingress-multi.log"),
        env={**first.env, "PAYMENTS_INGRESS_PORT": str(port)},
        probe=lambda: http_ok(url + "/readyz"),
        proc=None,
    )
    twin.start()
    try:
        twin.wait_ready()
        n = 40
        with httpx.Client(base_url=url, timeout=15) as client:
            for _ in range(n):  # new connections: spread over both processes
                forged = httpx.post(
                    f"{url}/v1/webhooks/stripe", content=b"{}", headers={"stripe-signature": "x"}
                )
                assert forged.status_code == 400
            counts = set()
            for _ in range(6):
                found = samples(url)
                counts.add(
                    sum(
                        v
                        for (name, labels), v in found.items()
                        if name == "payments_webhook_verifications_total"
                        and dict(labels)["result"] == "failed"
                    )
                )
            assert client.get("/readyz").status_code == 200
        assert counts == {n}
    finally:
        twin.stop()
