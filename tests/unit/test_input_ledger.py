"""The payment agent's input ledger: marks, lazy persistence and the first mark."""

from __future__ import annotations

from streams.ledger import TRUST_COMMIT_AFTER, InputLedger


def test_a_new_partition_is_read_from_its_start() -> None:
    ledger = InputLedger({})
    assert ledger.last_applied("refund_request", 0, 7) == -1  # 0..6 to be read


def test_an_old_partition_without_a_mark_trusts_the_commit_once() -> None:
    ledger = InputLedger({})
    far = TRUST_COMMIT_AFTER + 5
    assert ledger.last_applied("refund_request", 0, far) == far - 1


def test_a_mark_is_persisted_only_once_a_flush_covered_it() -> None:
    table: dict[str, int] = {}
    ledger = InputLedger(table)
    assert ledger.last_applied("payment_initiation", 3, 0) == -1
    ledger.applied("payment_initiation", 3, 0)
    assert not ledger.due("payment_initiation", 3)  # its outputs may not be written yet
    before_flush = ledger.snapshot()
    ledger.applied("payment_initiation", 3, 1)  # applied while the flush ran
    ledger.flushed(before_flush)
    assert ledger.due("payment_initiation", 3)
    ledger.persist("payment_initiation", 3)
    assert table == {"payment_initiation:3": 0}  # not 1: the flush did not cover it
    assert not ledger.due("payment_initiation", 3)
    ledger.flushed(ledger.snapshot())
    ledger.persist("payment_initiation", 3)
    assert table == {"payment_initiation:3": 1}
    ledger.forget()  # revoked: the next owner (or this one) starts from the persisted mark
    assert ledger.last_applied("payment_initiation", 3, 5) == 1


def test_one_flush_covers_every_partition() -> None:
    ledger = InputLedger({})
    for partition in range(8):
        ledger.last_applied("gateway_results", partition, 0)
        ledger.applied("gateway_results", partition, 4)
    ledger.flushed(ledger.snapshot())
    assert all(ledger.due("gateway_results", p) for p in range(8))


def test_a_flush_that_spans_a_revocation_counts_for_nothing() -> None:
    ledger = InputLedger({})
    ledger.last_applied("refund_request", 2, 0)
    ledger.applied("refund_request", 2, 3)
    snapshot = ledger.snapshot()
    ledger.forget()
    ledger.flushed(snapshot)
    assert not ledger.due("refund_request", 2)


def test_a_seek_back_does_not_move_the_mark_backwards() -> None:
    ledger = InputLedger({})
    ledger.last_applied("gateway_results", 1, 0)
    ledger.applied("gateway_results", 1, 9)
    ledger.applied("gateway_results", 1, 4)  # redelivered after a seek to the commit
    assert ledger.last_applied("gateway_results", 1, 5) == 9


def test_a_record_a_repair_applied_ahead_of_the_stream_is_not_applied_again() -> None:
    ledger = InputLedger({})
    ledger.last_applied("t", 0, 0)
    for offset in range(3, 8):  # a catch-up read ahead of the stream
        ledger.repaired("t", 0, offset)
    assert ledger.last_applied("t", 0, 8) == 7
    assert [o for o in range(10) if ledger.was_repaired("t", 0, o)] == list(range(8))
    assert not ledger.was_repaired("t", 1, 0)  # another partition
    ledger.applied("t", 0, 9)  # the stream's own records say nothing about repairs
    assert not ledger.was_repaired("t", 0, 9)


def test_what_a_repair_applied_is_forgotten_with_the_partition() -> None:
    ledger = InputLedger({})
    ledger.repaired("t", 0, 5)
    ledger.forget()  # revoked: a new owner may have applied more since, from the log
    assert not ledger.was_repaired("t", 0, 5)
