"""`/dashboard` in headless Chromium: the charts render with data from `payment_metrics`.

Debian's chromium (`make browser` installs it), driven by Playwright; 5 s windows so that a
few fill during the test. The screenshot is saved beside the stack's logs."""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from payments.devstack import DevStack
from tests.conftest import running_stack
from tests.integration.helpers import api_client, auth, payment_body, post_payment, wait_settled

pytestmark = pytest.mark.stack
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
# As the machine notes say: without the background-networking flags Chromium keeps trying
# to reach Google's hosts, which this closed network refuses.
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip
ENV = {
    "PAYMENTS_METRICS_WINDOWS_S": "5,60",
    "PAYMENTS_METRICS_GRACE_S": "1",
    "PAYMENTS_METRICS_EMIT_INTERVAL_S": "0.5",
}
TOKENS = [
    ("stripe", "pm_card_visa"),
    ("stripe", "pm_card_chargeDeclined"),
    ("square", "cnon:card-nonce-ok"),
    ("paypal", "paypal_vault_ok"),
    ("stripe", "pm_card_chargeDeclinedInsufficientFunds"),
]


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, external_services: Any) -> Iterator[DevStack]:
    with running_stack(tmp_path_factory.mktemp("dashboard"), external_services, ENV) as s:
        yield s


def _traffic(stack: DevStack, rounds: int = 3) -> None:
    with api_client(stack) as client:
        for round_ in range(rounds):
            ids = []
            for i, (gateway, token) in enumerate(TOKENS * 2):
                r = post_payment(client, payment_body(token, gateway=gateway, amount=500 + i))
                assert r.status_code == 202, r.text
                ids.append(r.json()["payment_id"])
            for pid in ids:
                wait_settled(client, pid)
            if round_ < rounds - 1:
                time.sleep(5)  # the next round lands in the next 5 s window


def _wait_for_windows(stack: DevStack, at_least: int) -> list[dict[str, Any]]:
    ingress = stack.endpoints["ingress_url"]
    deadline = time.monotonic() + 30
    windows: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        r = httpx.get(
            f"{ingress}/dashboard/data?window=5&minutes=10",
            timeout=10,
            headers=auth(stack.endpoints),
        )
        assert r.status_code == 200, r.text
        windows = r.json()["windows"]
        if len({w["window_start"] for w in windows}) >= at_least:
            return windows
        time.sleep(0.5)
    raise AssertionError(f"only {len(windows)} windows after 30 s")


def test_the_data_endpoint_refuses_bad_parameters(stack: DevStack) -> None:
    url = f"{stack.endpoints['ingress_url']}/dashboard/data"
    r = httpx.get(f"{url}?window=-3", timeout=10, headers=auth(stack.endpoints))
    assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_request"
    assert httpx.get(url, timeout=10).status_code == 401
    merchant = httpx.get(url, timeout=10, headers=auth(stack.endpoints, "merchant"))
    assert merchant.status_code == 403 and merchant.json()["error"]["code"] == "forbidden"


def test_the_dashboard_renders_live_charts(stack: DevStack) -> None:
    from playwright.sync_api import sync_playwright

    ingress = stack.endpoints["ingress_url"]
    _traffic(stack)
    windows = _wait_for_windows(stack, at_least=2)
    assert {w["gateway"] for w in windows} >= {"stripe", "square", "paypal"}

    shot = stack.opts.state_dir / "dashboard.png"
    errors: list[str] = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            key = stack.endpoints["admin_api_key"]
            page.goto(f"{ingress}/dashboard?window=5&minutes=10&refresh=1&key={key}")
            page.wait_for_selector("body[data-loaded=true]", timeout=15_000)
            for chart in ("throughput", "success", "latency"):
                page.wait_for_function(
                    f"Number(document.getElementById('{chart}').getAttribute('data-points')) > 1",
                    timeout=15_000,
                )
            drawn = page.eval_on_selector_all(
                "svg#throughput path.series", "ps => ps.map(p => p.dataset.series)"
            )
            failures = page.eval_on_selector_all(
                "#failures tbody tr td:nth-child(4)", "tds => tds.map(td => td.textContent)"
            )
            status = page.text_content("#status") or ""
            shot.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(shot), full_page=True)
        finally:
            browser.close()
    assert set(drawn) >= {"stripe", "square", "paypal"}
    assert {"generic_decline", "insufficient_funds"} <= set(failures)
    assert "windows, updated" in status
    assert errors == []
    assert shot.stat().st_size > 10_000
    print(f"dashboard screenshot: {shot}")
