"""The gateway sandbox's Square emulation, driven over HTTP by the real `squareup` SDK.

Using the official SDK (`AsyncSquare`, not hand-written requests) is the point: it proves the
sandbox speaks Square's wire format closely enough that the SDK parses every answer, raises its
own `ApiError` with parsed errors where Square would, and cannot tell the difference. A few
tests use raw HTTP for what the SDK never sends (a float amount, a bad Square-Version).

`serve_app` and `running_sandbox` are shared with test_square_adapter.py.
"""

from __future__ import annotations

import asyncio
import re
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from typing import Any, TypeVar

import httpx
import pytest
from square import AsyncSquare
from square.core.api_error import ApiError
from square.core.request_options import RequestOptions
from starlette.types import ASGIApp

from gateways.sandbox.app import SandboxConfig, create_app
from tests.servers import serve_asgi

T = TypeVar("T")
NO_RETRIES: RequestOptions = {"max_retries": 0}  # a retry would hide what the sandbox answered
USD_10 = {"amount": 1000, "currency": "USD"}
AUTH = {"Authorization": "Bearer sandbox-token", "Square-Version": "2026-09-16"}


# --- serving ------------------------------------------------------------------------------


@contextmanager
def serve_app(app: ASGIApp) -> Iterator[str]:
    with serve_asgi(lambda _url: app) as url:
        yield url


@dataclass
class RunningSandbox:
    base_url: str
    control: httpx.Client

    @property
    def square_base(self) -> str:
        return f"{self.base_url}/square"

    def summary(self) -> dict[str, dict[str, int]]:
        summary: dict[str, dict[str, int]] = (
            self.control.get("/_sandbox/ledger/summary").raise_for_status().json()
        )
        return summary

    def entries(self, **query: str) -> list[dict[str, Any]]:
        response = self.control.get("/_sandbox/ledger", params={"gateway": "square", **query})
        entries: list[dict[str, Any]] = response.raise_for_status().json()["entries"]
        return entries

    def faults(self, **changes: Any) -> None:
        self.control.post("/_sandbox/faults/square", json=changes).raise_for_status()

    def settle(self, payment_id: str, outcome: str, *, as_json: bool = False) -> httpx.Response:
        url = f"/_sandbox/square/payments/{payment_id}/settle"
        if as_json:
            return self.control.post(url, json={"outcome": outcome})
        return self.control.post(url, data={"outcome": outcome})

    def dispute(self, payment_id: str) -> httpx.Response:
        return self.control.post(f"/_sandbox/square/payments/{payment_id}/dispute")

    def reset(self) -> None:
        self.control.post("/_sandbox/reset").raise_for_status()


@contextmanager
def running_sandbox(config: SandboxConfig) -> Iterator[RunningSandbox]:
    with (
        serve_app(create_app(config)) as base_url,
        httpx.Client(base_url=base_url, timeout=5) as control,
    ):
        yield RunningSandbox(base_url=base_url, control=control)


async def eventually(probe: Callable[[], Awaitable[T]], ok: Callable[[T], bool]) -> T:
    """Poll `probe` until `ok` holds (for what the sandbox finishes after answering)."""
    deadline = time.monotonic() + 3
    while True:
        value = await probe()
        if ok(value) or time.monotonic() > deadline:
            return value
        await asyncio.sleep(0.02)


# --- fixtures -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def server() -> Iterator[RunningSandbox]:
    with running_sandbox(SandboxConfig()) as running:
        yield running


@pytest.fixture
def sandbox(server: RunningSandbox) -> RunningSandbox:
    server.reset()  # every test starts from an empty account, ledger, key store and faults
    return server


@pytest.fixture
async def client(sandbox: RunningSandbox) -> AsyncIterator[AsyncSquare]:
    async with httpx.AsyncClient(timeout=5) as http:
        yield AsyncSquare(base_url=sandbox.square_base, token="sandbox-token", httpx_client=http)


def key() -> str:
    return str(uuid.uuid4())


async def create(
    client: AsyncSquare,
    *,
    source_id: str = "cnon:card-nonce-ok",
    amount: int = 1000,
    reference_id: str | None = "pay_1",
    idempotency_key: str | None = None,
    **extra: Any,
) -> dict[str, Any]:
    response = await client.payments.create(
        source_id=source_id,
        idempotency_key=idempotency_key or key(),
        amount_money={"amount": amount, "currency": "USD"},
        reference_id=reference_id,
        request_options=NO_RETRIES,
        **extra,
    )
    assert response.errors is None and response.payment is not None
    return dump(response.payment)


def dump(model: Any) -> dict[str, Any]:
    dumped: dict[str, Any] = model.model_dump(by_alias=True, exclude_none=True, mode="json")
    return dumped


async def api_error(awaitable: Awaitable[Any]) -> ApiError:
    with pytest.raises(ApiError) as caught:
        await awaitable
    return caught.value


def first_error(exc: ApiError) -> tuple[str, str]:
    return str(exc.errors[0].category), str(exc.errors[0].code)


# --- creating payments --------------------------------------------------------------------


async def test_create_payment_completes_and_charges_once(
    client: AsyncSquare, sandbox: RunningSandbox
) -> None:
    payment = await create(client, note="order o-1")

    assert payment["status"] == "COMPLETED"
    assert len(payment["id"]) == 29
    for money in ("amount_money", "total_money", "approved_money"):
        assert payment[money] == USD_10
    assert "refunded_money" not in payment
    assert (payment["reference_id"], payment["note"]) == ("pay_1", "order o-1")
    assert payment["source_type"] == "CARD"
    assert payment["location_id"] == "SANDBOX_LOCATION"
    assert payment["version_token"] and payment["receipt_url"]
    details = payment["card_details"]
    assert details["status"] == "CAPTURED"
    card = details["card"]
    assert (card["card_brand"], card["last_4"], card["exp_month"]) == ("VISA", "1111", 12)
    assert isinstance(card["exp_year"], int) and card["fingerprint"].startswith("sq-1-")
    assert set(details["card_payment_timeline"]) == {"authorized_at", "captured_at"}
    for stamp in (payment["created_at"], payment["updated_at"]):
        assert stamp.endswith("Z") and datetime.fromisoformat(stamp).tzinfo is not None
    assert not re.search(r"\d{12,}", str(payment))  # never anything like a card number
    assert sandbox.summary() == {
        "pay_1": {"captured": 1000, "refunded": 0, "captures": 1, "refunds": 0}
    }
    [entry] = sandbox.entries()
    assert (entry["kind"], entry["object_id"], entry["payment_id"]) == (
        "capture",
        payment["id"],
        "pay_1",
    )


async def test_create_with_autocomplete_false_only_authorizes(
    client: AsyncSquare, sandbox: RunningSandbox
) -> None:
    payment = await create(client, autocomplete=False, location_id="L2")

    assert (payment["status"], payment["card_details"]["status"]) == ("APPROVED", "AUTHORIZED")
    assert payment["approved_money"] == USD_10
    assert (payment["delay_action"], payment["delay_duration"]) == ("CANCEL", "PT168H")
    assert payment["location_id"] == "L2"
    assert [e["kind"] for e in sandbox.entries()] == ["authorization"]
    assert sandbox.summary()["pay_1"]["captures"] == 0


@pytest.mark.parametrize(
    ("nonce", "code"),
    [
        ("cnon:card-nonce-declined", "GENERIC_DECLINE"),
        ("cnon:card-nonce-rejected-cvv", "CVV_FAILURE"),
        ("cnon:card-nonce-rejected-postalcode", "ADDRESS_VERIFICATION_FAILURE"),
        ("cnon:card-nonce-rejected-expiration", "INVALID_EXPIRATION"),
        ("cnon:card-nonce-insufficient-funds", "INSUFFICIENT_FUNDS"),
        ("cnon:card-nonce-requires-verification", "CARD_DECLINED_VERIFICATION_REQUIRED"),
    ],
)
async def test_declined_nonce_is_402_with_the_failed_payment_in_the_body(
    client: AsyncSquare, sandbox: RunningSandbox, nonce: str, code: str
) -> None:
    exc = await api_error(create(client, source_id=nonce))

    assert exc.status_code == 402
    assert first_error(exc) == ("PAYMENT_METHOD_ERROR", code)
    failed = exc.body["payment"]
    assert (failed["status"], failed["card_details"]["status"]) == ("FAILED", "FAILED")
    assert failed["card_details"]["errors"][0]["code"] == code
    assert failed["approved_money"]["amount"] == 0
    fetched = await client.payments.get(payment_id=failed["id"], request_options=NO_RETRIES)
    assert fetched.payment is not None and fetched.payment.status == "FAILED"
    assert sandbox.entries() == []


async def test_verification_token_lets_the_verification_nonce_through(
    client: AsyncSquare,
) -> None:
    payment = await create(
        client, source_id="cnon:card-nonce-requires-verification", verification_token="verf:1"
    )

    assert payment["status"] == "COMPLETED"


@pytest.mark.parametrize(
    ("nonce", "code"),
    [
        ("cnon:card-nonce-nope", "INVALID_CARD_DATA"),
        ("cnon:card-nonce-already-used", "CARD_TOKEN_USED"),
    ],
)
async def test_rejected_nonce_creates_nothing_and_does_not_burn_the_key(
    client: AsyncSquare, sandbox: RunningSandbox, nonce: str, code: str
) -> None:
    k = key()
    exc = await api_error(create(client, source_id=nonce, idempotency_key=k))

    assert exc.status_code == 400
    assert first_error(exc) == ("INVALID_REQUEST_ERROR", code)
    assert exc.errors[0].field == "source_id"
    assert (await create(client, idempotency_key=k))["status"] == "COMPLETED"


async def test_pending_nonce_settles_through_the_control_route(
    client: AsyncSquare, sandbox: RunningSandbox
) -> None:
    pending = await create(client, source_id="cnon:card-nonce-pending")
    assert pending["status"] == "PENDING"
    assert sandbox.entries() == []

    settled = sandbox.settle(pending["id"], "completed")

    assert settled.status_code == 200
    assert settled.json()["payment"]["status"] == "COMPLETED"
    assert sandbox.summary()["pay_1"]["captured"] == 1000
    again = sandbox.settle(pending["id"], "failed", as_json=True)
    assert again.status_code == 400
    assert again.json()["errors"][0]["code"] == "BAD_REQUEST"


async def test_pending_payment_can_settle_as_failed(
    client: AsyncSquare, sandbox: RunningSandbox
) -> None:
    pending = await create(client, source_id="cnon:card-nonce-pending", autocomplete=False)

    settled = sandbox.settle(pending["id"], "failed", as_json=True).json()["payment"]

    assert settled["status"] == "FAILED"
    assert settled["card_details"]["errors"][0]["code"] == "GENERIC_DECLINE"
    assert sandbox.settle(pending["id"], "maybe").json()["errors"][0]["field"] == "outcome"
    assert sandbox.settle("nope", "completed").status_code == 404


# --- request validation, auth, versions ---------------------------------------------------


async def test_wrong_token_is_401_unauthorized(sandbox: RunningSandbox) -> None:
    async with httpx.AsyncClient(timeout=5) as http:
        client = AsyncSquare(base_url=sandbox.square_base, token="wrong-token", httpx_client=http)
        exc = await api_error(create(client))

    assert exc.status_code == 401
    assert first_error(exc) == ("AUTHENTICATION_ERROR", "UNAUTHORIZED")
    assert sandbox.control.get("/square/v2/payments/x").status_code == 401  # no header at all


def test_square_version_is_accepted_and_checked(sandbox: RunningSandbox) -> None:
    body = {"source_id": "cnon:card-nonce-ok", "idempotency_key": key(), "amount_money": USD_10}

    ok = sandbox.control.post("/square/v2/payments", json=body, headers=AUTH)
    bad = sandbox.control.post(
        "/square/v2/payments", json=body, headers={**AUTH, "Square-Version": "latest"}
    )

    assert ok.status_code == 200
    assert bad.status_code == 400
    assert bad.json()["errors"][0]["code"] == "INVALID_SQUARE_VERSION_FORMAT"


@pytest.mark.parametrize(
    ("change", "code", "field"),
    [
        ({"amount_money": {"amount": 10.5, "currency": "USD"}}, "EXPECTED_INTEGER", None),
        ({"amount_money": {"amount": 0, "currency": "USD"}}, "VALUE_TOO_LOW", None),
        ({"amount_money": {"amount": 100, "currency": "usd"}}, "INVALID_ENUM_VALUE", None),
        ({"amount_money": None}, "MISSING_REQUIRED_PARAMETER", "amount_money"),
        ({"idempotency_key": None}, "MISSING_REQUIRED_PARAMETER", "idempotency_key"),
        ({"idempotency_key": "k" * 46}, "VALUE_TOO_LONG", "idempotency_key"),
        ({"reference_id": "r" * 41}, "VALUE_TOO_LONG", "reference_id"),
        ({"autocomplete": "yes"}, "EXPECTED_BOOLEAN", "autocomplete"),
        ({"tip_money": USD_10}, "UNKNOWN_BODY_PARAMETER", "tip_money"),
    ],
)
def test_malformed_create_is_rejected_like_square(
    sandbox: RunningSandbox, change: dict[str, Any], code: str, field: str | None
) -> None:
    body = {"source_id": "cnon:card-nonce-ok", "idempotency_key": key(), "amount_money": USD_10}
    body = {k: v for k, v in (body | change).items() if v is not None}

    response = sandbox.control.post("/square/v2/payments", json=body, headers=AUTH)

    assert response.status_code == 400
    [error] = response.json()["errors"]
    assert (error["category"], error["code"]) == ("INVALID_REQUEST_ERROR", code)
    if field is not None:
        assert error["field"] == field
    assert sandbox.entries() == []


def test_unknown_routes_and_objects_answer_square_json_404(sandbox: RunningSandbox) -> None:
    route = sandbox.control.get("/square/v2/orders", headers=AUTH)
    payment = sandbox.control.get("/square/v2/payments/nope", headers=AUTH)
    refund = sandbox.control.get("/square/v2/refunds/nope", headers=AUTH)

    for response in (route, payment, refund):
        assert response.status_code == 404
        assert response.json()["errors"][0]["code"] == "NOT_FOUND"


# --- idempotency --------------------------------------------------------------------------


async def test_same_key_same_body_replays_the_first_answer(
    client: AsyncSquare, sandbox: RunningSandbox
) -> None:
    k = key()
    first = await create(client, idempotency_key=k)
    raw = await client.payments.with_raw_response.create(
        source_id="cnon:card-nonce-ok",
        idempotency_key=k,
        amount_money={"amount": 1000, "currency": "USD"},
        reference_id="pay_1",
        request_options=NO_RETRIES,
    )

    assert raw.data.payment is not None
    assert dump(raw.data.payment) == first
    assert raw.headers["x-sandbox-idempotent-replayed"] == "true"
    assert sandbox.summary()["pay_1"]["captures"] == 1


async def test_same_key_different_body_is_idempotency_key_reused(
    client: AsyncSquare, sandbox: RunningSandbox
) -> None:
    k = key()
    await create(client, idempotency_key=k)

    exc = await api_error(create(client, idempotency_key=k, amount=2000))

    assert exc.status_code == 400
    assert first_error(exc) == ("INVALID_REQUEST_ERROR", "IDEMPOTENCY_KEY_REUSED")
    assert sandbox.summary()["pay_1"]["captures"] == 1


async def test_declined_answer_is_replayed_for_the_same_key(client: AsyncSquare) -> None:
    k = key()
    first = await api_error(create(client, source_id="cnon:card-nonce-declined", idempotency_key=k))
    second = await api_error(
        create(client, source_id="cnon:card-nonce-declined", idempotency_key=k)
    )

    assert second.body["payment"]["id"] == first.body["payment"]["id"]


async def test_concurrent_creates_with_one_key_execute_once(
    client: AsyncSquare, sandbox: RunningSandbox
) -> None:
    sandbox.faults(latency_ms=50)
    k = key()

    payments = await asyncio.gather(*(create(client, idempotency_key=k) for _ in range(5)))

    assert len({p["id"] for p in payments}) == 1
    assert sandbox.summary()["pay_1"]["captures"] == 1


async def test_reset_forgets_payments_ledger_and_keys(
    client: AsyncSquare, sandbox: RunningSandbox
) -> None:
    k = key()
    payment = await create(client, idempotency_key=k)

    sandbox.reset()

    assert sandbox.entries() == [] and sandbox.summary() == {}
    exc = await api_error(client.payments.get(payment_id=payment["id"], request_options=NO_RETRIES))
    assert exc.status_code == 404
    assert (await create(client, idempotency_key=k, amount=5))["amount_money"]["amount"] == 5


# --- listing ------------------------------------------------------------------------------


async def created_apart(client: AsyncSquare, count: int) -> list[dict[str, Any]]:
    """`count` payments (references p0, p1, ...), each created at a later millisecond."""
    payments = []
    for i in range(count):
        payments.append(await create(client, reference_id=f"p{i}"))
        await asyncio.sleep(0.005)
    assert len({p["created_at"] for p in payments}) == count
    return payments


async def listed(client: AsyncSquare, **query: Any) -> list[str]:
    """The reference ids ListPayments answers, every page followed."""
    pager = await client.payments.list(request_options=NO_RETRIES, **query)
    return [payment.reference_id async for payment in pager]


async def test_list_payments_takes_begin_inclusive_and_end_exclusive(
    client: AsyncSquare,
) -> None:
    """Square's ListPayments: `created_at` in [begin_time, end_time)."""
    p = await created_apart(client, 3)
    at = [payment["created_at"] for payment in p]

    assert await listed(client, begin_time=at[1], end_time=at[2], sort_order="ASC") == ["p1"]
    assert await listed(client, begin_time=at[0], end_time=at[2], sort_order="ASC") == [
        "p0",
        "p1",
    ]
    assert await listed(client, end_time=at[0]) == []  # exclusive: p0 itself is not in it
    assert await listed(client, begin_time=at[2]) == ["p2"]  # inclusive
    assert await listed(client, begin_time=at[0], end_time=at[0]) == []


async def test_list_payments_defaults_to_the_last_year_until_now_newest_first(
    client: AsyncSquare,
) -> None:
    await created_apart(client, 3)

    assert await listed(client) == ["p2", "p1", "p0"]  # Square's default order is DESC
    assert await listed(client, sort_order="ASC") == ["p0", "p1", "p2"]
    a_year_and_a_day = datetime.now(UTC) - timedelta(days=366)
    assert await listed(client, end_time=a_year_and_a_day.isoformat()) == []
    future = (datetime.now(UTC) + timedelta(days=1)).isoformat()
    assert await listed(client, begin_time=future) == []


async def test_list_payments_compares_times_as_instants(client: AsyncSquare) -> None:
    """An offset, or more precision than Square writes, changes nothing about the instant."""
    p = await created_apart(client, 2)
    second = datetime.fromisoformat(p[1]["created_at"].replace("Z", "+00:00"))
    in_paris = second.astimezone(timezone(timedelta(hours=2))).isoformat()
    just_after = (second + timedelta(microseconds=1)).isoformat()

    assert await listed(client, end_time=in_paris, sort_order="ASC") == ["p0"]
    assert await listed(client, begin_time=in_paris) == ["p1"]
    assert await listed(client, begin_time=just_after) == []


async def test_list_payments_pages_within_the_range(client: AsyncSquare) -> None:
    p = await created_apart(client, 5)
    first = await client.payments.list(
        begin_time=p[1]["created_at"],
        end_time=p[4]["created_at"],
        sort_order="ASC",
        limit=2,
        request_options=NO_RETRIES,
    )

    assert [x.reference_id for x in first.items or []] == ["p1", "p2"]
    assert first.has_next and first.get_next is not None
    second = await first.get_next()
    assert second is not None and [x.reference_id for x in second.items or []] == ["p3"]
    assert not second.has_next


def test_list_payments_refuses_a_time_that_is_not_rfc_3339(sandbox: RunningSandbox) -> None:
    for value in ("yesterday", "2026-01-01T00:00:00"):  # the second has no offset
        response = sandbox.control.get(
            "/square/v2/payments", params={"begin_time": value}, headers=AUTH
        )
        assert response.status_code == 400
        assert response.json()["errors"][0]["code"] == "INVALID_TIME"


# --- complete and cancel ------------------------------------------------------------------


async def test_complete_captures_an_approved_payment_once(
    client: AsyncSquare, sandbox: RunningSandbox
) -> None:
    approved = await create(client, autocomplete=False)

    response = await client.payments.complete(payment_id=approved["id"], request_options=NO_RETRIES)
    again = await api_error(
        client.payments.complete(payment_id=approved["id"], request_options=NO_RETRIES)
    )

    assert response.payment is not None and response.payment.status == "COMPLETED"
    assert response.payment.card_details is not None
    assert response.payment.card_details.status == "CAPTURED"
    assert (again.status_code, first_error(again)[1]) == (400, "BAD_REQUEST")
    assert [e["kind"] for e in sandbox.entries()] == ["authorization", "capture"]


async def test_complete_with_a_stale_version_token_is_version_mismatch(
    client: AsyncSquare,
) -> None:
    approved = await create(client, autocomplete=False)

    exc = await api_error(
        client.payments.complete(
            payment_id=approved["id"], version_token="stale", request_options=NO_RETRIES
        )
    )
    done = await client.payments.complete(
        payment_id=approved["id"],
        version_token=approved["version_token"],
        request_options=NO_RETRIES,
    )

    assert first_error(exc)[1] == "VERSION_MISMATCH"
    assert done.payment is not None and done.payment.status == "COMPLETED"


async def test_cancel_voids_an_approved_payment(
    client: AsyncSquare, sandbox: RunningSandbox
) -> None:
    approved = await create(client, autocomplete=False)

    response = await client.payments.cancel(payment_id=approved["id"], request_options=NO_RETRIES)
    complete = await api_error(
        client.payments.complete(payment_id=approved["id"], request_options=NO_RETRIES)
    )

    assert response.payment is not None and response.payment.status == "CANCELED"
    assert response.payment.card_details is not None
    assert response.payment.card_details.status == "VOIDED"
    assert complete.status_code == 400
    assert [(e["kind"], e["amount"]) for e in sandbox.entries()] == [
        ("authorization", 1000),
        ("void", 1000),
    ]
    assert sandbox.summary()["pay_1"]["captured"] == 0


async def test_completed_payment_cannot_be_canceled(client: AsyncSquare) -> None:
    payment = await create(client)

    exc = await api_error(
        client.payments.cancel(payment_id=payment["id"], request_options=NO_RETRIES)
    )

    assert (exc.status_code, first_error(exc)[1]) == (400, "BAD_REQUEST")


# --- refunds ------------------------------------------------------------------------------


async def refund(
    client: AsyncSquare, payment_id: str, amount: int, idempotency_key: str | None = None
) -> dict[str, Any]:
    response = await client.refunds.refund_payment(
        idempotency_key=idempotency_key or key(),
        amount_money={"amount": amount, "currency": "USD"},
        payment_id=payment_id,
        reason="requested by customer",
        request_options=NO_RETRIES,
    )
    assert response.refund is not None
    return dump(response.refund)


async def test_refund_starts_pending_then_completes(
    client: AsyncSquare, sandbox: RunningSandbox
) -> None:
    payment = await create(client)

    created = await refund(client, payment["id"], 300)

    assert created["status"] == "PENDING"
    assert created["id"].startswith(f"{payment['id']}_")
    assert (created["payment_id"], created["amount_money"]) == (
        payment["id"],
        {"amount": 300, "currency": "USD"},
    )
    assert (created["reason"], created["reference_id"]) == ("requested by customer", "pay_1")

    async def get_refund() -> str | None:
        response = await client.refunds.get(refund_id=created["id"], request_options=NO_RETRIES)
        return response.refund.status if response.refund else None

    assert await eventually(get_refund, lambda status: status == "COMPLETED") == "COMPLETED"
    fetched = await client.payments.get(payment_id=payment["id"], request_options=NO_RETRIES)
    assert fetched.payment is not None and fetched.payment.status == "COMPLETED"
    assert fetched.payment.refunded_money is not None
    assert fetched.payment.refunded_money.amount == 300
    assert fetched.payment.refund_ids == [created["id"]]
    assert sandbox.summary()["pay_1"] == {
        "captured": 1000,
        "refunded": 300,
        "captures": 1,
        "refunds": 1,
    }


async def test_refunds_never_exceed_what_was_captured(
    client: AsyncSquare, sandbox: RunningSandbox
) -> None:
    payment = await create(client)
    await refund(client, payment["id"], 600)

    too_much = await api_error(refund(client, payment["id"], 401))
    await refund(client, payment["id"], 400)
    exhausted = await api_error(refund(client, payment["id"], 1))

    for exc in (too_much, exhausted):
        assert exc.status_code == 400
        assert first_error(exc) == ("INVALID_REQUEST_ERROR", "REFUND_AMOUNT_INVALID")
    assert sandbox.summary()["pay_1"]["refunded"] == 1000


async def test_refund_needs_a_completed_payment_in_its_currency(client: AsyncSquare) -> None:
    approved = await create(client, autocomplete=False)
    completed = await create(client)

    not_completed = await api_error(refund(client, approved["id"], 100))
    unknown = await api_error(refund(client, "nope", 100))
    wrong_currency = await api_error(
        client.refunds.refund_payment(
            idempotency_key=key(),
            amount_money={"amount": 100, "currency": "EUR"},
            payment_id=completed["id"],
            request_options=NO_RETRIES,
        )
    )

    assert first_error(not_completed)[1] == "REFUND_ERROR_PAYMENT_NEEDS_COMPLETION"
    assert unknown.status_code == 404
    assert first_error(wrong_currency)[1] == "CURRENCY_MISMATCH"


async def test_refund_retried_with_the_same_key_refunds_once(
    client: AsyncSquare, sandbox: RunningSandbox
) -> None:
    payment = await create(client)
    k = key()

    first = await refund(client, payment["id"], 250, idempotency_key=k)
    second = await refund(client, payment["id"], 250, idempotency_key=k)

    assert second["id"] == first["id"]
    assert sandbox.summary()["pay_1"]["refunds"] == 1


# --- disputes -----------------------------------------------------------------------------


async def test_dispute_control_route_disputes_a_completed_payment(
    client: AsyncSquare, sandbox: RunningSandbox
) -> None:
    approved = await create(client, autocomplete=False)
    payment = await create(client)

    refused = sandbox.dispute(approved["id"])
    response = sandbox.dispute(payment["id"])
    no_refund = await api_error(refund(client, payment["id"], 100))

    assert refused.status_code == 400
    dispute = response.json()["dispute"]
    assert dispute["disputed_payment"] == {"payment_id": payment["id"]}
    assert (dispute["reference_id"], dispute["state"]) == ("pay_1", "EVIDENCE_REQUIRED")
    assert dispute["amount_money"] == USD_10
    assert first_error(no_refund)[1] == "PAYMENT_NOT_REFUNDABLE_DUE_TO_DISPUTE"


# --- faults -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("changes", "status", "code"),
    [
        ({"unavailable": True}, 503, "SERVICE_UNAVAILABLE"),
        ({"error_rate": 1.0}, 500, "INTERNAL_SERVER_ERROR"),
    ],
)
async def test_injected_faults_answer_in_squares_envelope(
    client: AsyncSquare,
    sandbox: RunningSandbox,
    changes: dict[str, Any],
    status: int,
    code: str,
) -> None:
    sandbox.faults(**changes)

    exc = await api_error(create(client))

    assert exc.status_code == status
    assert first_error(exc) == ("API_ERROR", code)
    assert sandbox.entries() == []
