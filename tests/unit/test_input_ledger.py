"""The payment agent's input ledger: marks, lazy persistence and the first mark."""

from __future__ import annotations

import time

from streams.ledger import TRUST_COMMIT_AFTER, InputLedger


def test_a_new_partition_is_read_from_its_start() -> None:
    ledger = InputLedger({})
    assert ledger.last_applied("refund_request", 0, 7) == -1  # 0..6 to be read


def test_an_old_partition_without_a_mark_trusts_the_commit_once() -> None:
    ledger = InputLedger({})
    far = TRUST_COMMIT_AFTER + 5
    assert ledger.last_applied("refund_request", 0, far) == far - 1


def test_marks_are_persisted_lazily_and_survive_a_revocation() -> None:
    table: dict[str, int] = {}
    ledger = InputLedger(table, persist_every_s=0.05)
    assert ledger.last_applied("payment_initiation", 3, 0) == -1
    ledger.applied("payment_initiation", 3, 0)
    assert ledger.due("payment_initiation", 3)  # the first mark is written at once
    ledger.persist("payment_initiation", 3)
    assert table == {"payment_initiation:3": 0}
    ledger.applied("payment_initiation", 3, 1)
    assert not ledger.due("payment_initiation", 3)  # too soon
    time.sleep(0.06)
    assert ledger.due("payment_initiation", 3)
    ledger.forget()  # revoked: the next owner (or this one) starts from the persisted mark
    assert ledger.last_applied("payment_initiation", 3, 5) == 0


def test_a_seek_back_does_not_move_the_mark_backwards() -> None:
    ledger = InputLedger({})
    ledger.last_applied("gateway_results", 1, 0)
    ledger.applied("gateway_results", 1, 9)
    ledger.applied("gateway_results", 1, 4)  # redelivered after a seek to the commit
    assert ledger.last_applied("gateway_results", 1, 5) == 9
