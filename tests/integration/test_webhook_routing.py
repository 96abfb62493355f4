"""Webhooks that carry no id of ours: routed by the gateway's payment id, or parked in
dead_letter with the reason. Real Square refunds and disputes, and Stripe disputes, are
like this."""

from __future__ import annotations

import asyncio
import uuid

import httpx
import pytest

from payments.devstack import DevStack
from streams import names
from tests.integration.helpers import (
    api_client,
    payment_body,
    post_payment,
    scan_topic,
    square_dispute,
    wait_settled,
    wait_status,
)

pytestmark = pytest.mark.stack


@pytest.fixture(scope="module")
def client(stack: DevStack) -> httpx.Client:
    return api_client(stack, timeout=15)


def test_a_square_dispute_is_routed_by_square_payment_id(client: httpx.Client) -> None:
    pid = post_payment(client, payment_body("cnon:card-nonce-ok", gateway="square")).json()[
        "payment_id"
    ]
    doc = wait_settled(client, pid)
    assert doc["status"] == "succeeded"
    r = square_dispute(client, doc["gateway_reference"])
    assert r.status_code == 200, r.text
    assert r.json() == {"received": True, "routed": True}
    assert wait_status(client, pid, {"disputed"})["status"] == "disputed"


def test_an_event_about_no_payment_of_ours_is_parked_in_dead_letter(
    stack: DevStack, client: httpx.Client
) -> None:
    stranger = f"sq_{uuid.uuid4().hex}"
    r = square_dispute(client, stranger)
    assert r.status_code == 200 and r.json() == {"received": True, "routed": False}
    records = asyncio.run(scan_topic(stack.endpoints["kafka_bootstrap"], names.DEAD_LETTER))
    mine = [rec for rec in records if rec.key == stranger.encode()]
    assert len(mine) == 1
    headers = dict(mine[0].headers)
    assert headers[names.DLQ_ERROR_TYPE] == b"Unroutable"
    assert headers[names.DLQ_SOURCE_TOPIC] == names.GATEWAY_EVENTS.encode()
    assert stranger.encode() in headers[names.DLQ_ERROR_MESSAGE]
