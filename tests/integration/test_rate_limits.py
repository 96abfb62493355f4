"""Rate limits at the edge: token buckets in Redis per API key and per client IP, 429 with
Retry-After, and tokens coming back with time."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from payments.devstack import DevStack
from tests.conftest import running_stack
from tests.integration.helpers import auth

pytestmark = pytest.mark.stack
LIMITS = {"PAYMENTS_RATE_LIMIT_KEY": "3,1", "PAYMENTS_RATE_LIMIT_IP": "6,1"}


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, external_services: Any) -> Iterator[DevStack]:
    with running_stack(tmp_path_factory.mktemp("limits"), external_services, LIMITS) as s:
        yield s


def get(stack: DevStack, role: str) -> httpx.Response:
    url = f"{stack.endpoints['ingress_url']}/v1/payments/pay_nothing_here"
    return httpx.get(url, headers=auth(stack.endpoints, role), timeout=10)


def test_a_key_then_an_ip_runs_out_of_tokens_and_gets_them_back(stack: DevStack) -> None:
    answers = [get(stack, "merchant").status_code for _ in range(4)]
    assert answers == [404, 404, 404, 429]  # 3 tokens per key
    refused = get(stack, "merchant")
    assert refused.json()["error"]["code"] == "rate_limited"
    assert 1 <= int(refused.headers["Retry-After"]) <= 2
    # The IP's bucket (6) was drawn by all five; the admin key has its own tokens left, but
    # the IP has one more at most.
    admin = [get(stack, "admin").status_code for _ in range(3)]
    assert admin.count(429) >= 2 and admin[0] in (404, 429)
    time.sleep(3.2)  # 1 token a second comes back to each bucket
    assert get(stack, "merchant").status_code == 404
    webhooks = httpx.post(f"{stack.endpoints['ingress_url']}/v1/webhooks/stripe", content=b"{}")
    assert webhooks.status_code == 400  # webhooks are never rate limited, only verified
    metrics = httpx.get(f"{stack.endpoints['ingress_url']}/metrics", timeout=10).text
    assert 'payments_rate_limited_total{scope="key"}' in metrics
    assert 'payments_rate_limited_total{scope="ip"}' in metrics
