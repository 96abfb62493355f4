"""`payments audit`'s comparison: pure, over a read model, a status stream and a ledger."""

from __future__ import annotations

from typing import Any

from payments.audit import compare


def doc(status: str, captured: int = 0, refunded: int = 0) -> dict[str, Any]:
    return {"status": status, "captured_amount": captured, "refunded_amount": refunded}


def gw(captured: int = 0, refunded: int = 0, captures: int = 0, refunds: int = 0) -> dict:
    return {"captured": captured, "refunded": refunded, "captures": captures, "refunds": refunds}


def kinds(findings: list) -> list[tuple[str, str]]:
    return [(f.kind, f.payment_id) for f in findings]


def test_agreeing_views_have_no_findings() -> None:
    documents = {
        "p1": doc("succeeded", 1000),
        "p2": doc("partially_refunded", 1000, 300),
        "p3": doc("failed"),
        "p4": doc("authorized"),
    }
    ledger = {"p1": gw(1000, captures=1), "p2": gw(1000, 300, 1, 1)}
    statuses = [
        {"payment_id": "p1", "seq": 1, "status": "pending"},
        {"payment_id": "p1", "seq": 2, "status": "succeeded"},
        {"payment_id": "p1", "seq": 2, "status": "succeeded"},  # a redelivery
        {"payment_id": "p2", "seq": 3, "status": "partially_refunded"},
        {"payment_id": "p2", "seq": 4, "status": "partially_refunded"},  # a second refund
    ]
    assert compare(documents, ledger, statuses) == []


def test_each_kind_of_mismatch_is_named() -> None:
    documents = {
        "charged": doc("failed"),
        "phantom": doc("succeeded", 1000),
        "short": doc("succeeded", 900),
        "twice": doc("succeeded", 1000),
        "over": doc("refunded", 1000, 1000),
    }
    ledger = {
        "charged": gw(1000, captures=1),
        "short": gw(1000, captures=1),
        "twice": gw(2000, captures=2),
        "over": gw(1000, 1500, 1, 2),
        "unknown_here": gw(500, captures=1),
    }
    statuses = [
        {"payment_id": "back", "seq": 2, "status": "succeeded"},
        {"payment_id": "back", "seq": 3, "status": "processing"},
    ]
    found = kinds(compare(documents, ledger, statuses))
    assert ("charged_not_succeeded", "charged") in found
    assert ("charged_not_succeeded", "unknown_here") in found
    assert ("succeeded_not_charged", "phantom") in found
    assert ("amount_mismatch", "short") in found
    assert ("double_capture", "twice") in found
    assert ("refund_over_capture", "over") in found
    assert ("status_regressed", "back") in found


def test_only_limits_the_audit_to_some_payments() -> None:
    found = compare(
        {"a": doc("failed"), "b": doc("failed")},
        {"a": gw(10, captures=1), "b": gw(10, captures=1)},
        [],
        only={"b"},
    )
    assert {pid for _, pid in kinds(found)} == {"b"}
    assert ("charged_not_succeeded", "b") in kinds(found)


def test_a_view_without_refunds_compares_captures_only() -> None:
    """The gateways' list APIs give captures, not refunds (`--against gateways`)."""
    documents = {"p1": doc("partially_refunded", 1000, 300), "p2": doc("succeeded", 1000)}
    ledger = {
        "p1": {"captured": 1000, "refunded": None, "captures": 1, "refunds": None},
        "p2": {"captured": 700, "refunded": None, "captures": 2, "refunds": None},
    }
    assert kinds(compare(documents, ledger, [])) == [
        ("amount_mismatch", "p2"),
        ("double_capture", "p2"),
    ]
