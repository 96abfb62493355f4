"""The janitor's schedule and how a status check's answer moves a payment. Pure."""

from __future__ import annotations

import dataclasses

import pytest

from domain.janitor import (
    LOOKUP_AFTER_MS,
    LOOKUP_BEFORE_MS,
    Schedule,
    due_at,
    last_authorize_at,
    lookup_window,
    not_charged_is_proof,
    source_for,
)
from domain.payment import Payment, Source, StatusChecked, Verdict, decide, duplicate
from domain.status import PaymentStatus
from tests.unit.test_payment_decide import outcome, request

S = PaymentStatus
SCHEDULE = Schedule(
    steps_ms=(60_000, 300_000, 3_600_000, 86_400_000),
    stale_after_ms=300_000,
    not_charged_after_ms=120_000,
)


def unknown() -> Payment:
    created = decide(None, request()).state
    state = decide(created, outcome(S.UNKNOWN, at=1_000)).state
    assert state is not None and state.status is S.UNKNOWN
    return state


def check(
    state: Payment, verdict: Verdict, status: PaymentStatus | None = None, at: int = 70_000
) -> StatusChecked:
    return StatusChecked(
        payment_id=state.payment_id,
        check=state.checks,
        source=source_for(state),
        verdict=verdict,
        occurred_at_ms=at,
        status=status,
        gateway_reference="pi_1" if status else None,
        captured_amount=1000 if status is S.SUCCEEDED else 0,
    )


def test_an_unknown_payment_is_checked_at_1_min_5_min_1_h_and_1_d_then_left_to_an_operator():
    state = unknown()
    dues = []
    for _ in range(5):
        due = due_at(state, SCHEDULE)
        if due is None:
            break
        dues.append(due - max(state.updated_at_ms, state.checked_at_ms))
        decision = decide(state, check(state, Verdict.NO_ANSWER, at=due))
        assert decision.state is not None and decision.ignored == "check_no_answer"
        state = decision.state
    assert dues == [60_000, 300_000, 3_600_000, 86_400_000]
    assert state.status is S.UNKNOWN and due_at(state, SCHEDULE) is None


def test_a_pending_payment_is_first_polled_once_stale() -> None:
    state = decide(None, request()).state
    assert state is not None
    assert due_at(state, SCHEDULE) == state.updated_at_ms + SCHEDULE.stale_after_ms
    assert source_for(state) is Source.POLL


def test_a_settled_payment_is_not_scheduled() -> None:
    state = decide(decide(None, request()).state, outcome(S.SUCCEEDED)).state
    assert state is not None and due_at(state, SCHEDULE) is None


def test_a_found_charge_resolves_unknown_with_a_janitor_status_record() -> None:
    state = unknown()
    d = decide(state, check(state, Verdict.FOUND, S.SUCCEEDED))
    assert d.state is not None and d.state.status is S.SUCCEEDED
    assert d.state.captured_amount == 1000 and d.state.gateway_reference == "pi_1"
    (change,) = d.changes
    assert (change.previous_status, change.status, change.source) == (
        S.UNKNOWN,
        S.SUCCEEDED,
        Source.JANITOR,
    )
    assert d.state.pending_commands == ()  # the authorize is answered
    assert due_at(d.state, SCHEDULE) is None


def test_a_confirmed_absence_fails_unknown_as_never_charged() -> None:
    state = unknown()
    d = decide(state, check(state, Verdict.NOT_CHARGED))
    assert d.state is not None and d.state.status is S.FAILED
    assert d.state.error_code == "gateway_not_charged"
    assert d.changes[0].source is Source.JANITOR
    assert d.state.pending_commands == () and d.state.outstanding_command is None


def test_absence_never_fails_a_pending_payment() -> None:
    """Its authorize may still be queued: "no such payment" proves nothing yet."""
    state = decide(None, request()).state
    assert state is not None
    d = decide(state, check(state, Verdict.NOT_CHARGED))
    assert d.state is not None and d.state.status is S.PENDING and d.changes == ()
    # ... but its authorize command, which never reached the gateway, is sent again with the
    # same idempotency key (a lost command would otherwise leave it pending for good).
    (cmd,) = d.commands
    assert cmd == state.pending_commands[0] and cmd.idempotency_key == "pay_1:authorize:1"
    assert d.ignored == "check_not_charged:command_resent"
    assert decide(d.state, check(d.state, Verdict.NO_ANSWER)).commands == ()


def test_not_found_is_proof_only_for_unknown_and_only_once_old_enough() -> None:
    state = unknown()
    assert not not_charged_is_proof(state, state.updated_at_ms + 119_999, SCHEDULE)
    assert not_charged_is_proof(state, state.updated_at_ms + 120_000, SCHEDULE)
    pending = decide(None, request()).state
    assert pending is not None and not not_charged_is_proof(pending, 10**12, SCHEDULE)


def test_a_stale_or_repeated_check_is_ignored() -> None:
    state = unknown()
    answer = check(state, Verdict.FOUND, S.SUCCEEDED)
    first = decide(state, answer)
    assert first.state is not None
    again = decide(first.state, answer)
    assert again.ignored == "stale_check" and again.changes == ()


def test_a_check_never_moves_a_status_backwards() -> None:
    state = decide(None, request()).state
    state = decide(state, outcome(S.PROCESSING)).state
    assert state is not None and state.status is S.PROCESSING
    d = decide(state, check(state, Verdict.FOUND, S.PENDING))
    assert d.state is not None and d.state.status is S.PROCESSING
    assert d.ignored == "regressive:processing->pending" and d.state.checks == 1


@pytest.mark.parametrize("steps", ["", "0", "1,-5"])
def test_a_schedule_needs_positive_steps(steps: str) -> None:
    with pytest.raises(ValueError):
        Schedule(steps_ms=tuple(int(s) for s in steps.split(",") if s))


def test_a_redelivered_authorize_is_refused_once_the_payment_no_longer_waits() -> None:
    from agents.executor import stale_command
    from tables.rows import payment_to_row

    state = unknown()
    (cmd,) = state.pending_commands
    assert stale_command(None, cmd) is None  # no row yet: the agent is about to save it
    assert stale_command(payment_to_row(state), cmd) is None  # still waiting: send again
    failed = decide(state, check(state, Verdict.NOT_CHARGED)).state
    assert failed is not None
    assert stale_command(payment_to_row(failed), cmd) == "the payment is already failed"


def test_a_refund_the_gateway_never_answered_is_sent_again_on_the_schedule() -> None:
    from domain.janitor import stuck_refunds
    from domain.refunds import RefundOutcome, RefundState
    from tests.unit.test_payment_refunds import captured, refund, refund_done

    state = decide(captured(), refund("r1", 400)).state
    assert state is not None
    unanswered = RefundOutcome(
        "pay_1", "r1", "r1:refund", RefundState.INITIATED, 30, error_code="gateway_timeout"
    )
    state = decide(state, unanswered).state
    assert state is not None and [c.refund_id for c in stuck_refunds(state)] == ["r1"]
    # The line keeps "unanswered" for the janitor; a record of it re-emitted says no error.
    replayed = duplicate(state, "duplicate_request").refund_changes
    assert [(c.state, c.error_code) for c in replayed] == [(RefundState.INITIATED, None)]
    due = due_at(state, SCHEDULE)
    assert due == 10 + SCHEDULE.steps_ms[0]  # counted from the refund request
    resent = StatusChecked(
        payment_id="pay_1",
        check=state.checks,
        source=Source.JANITOR,
        verdict=Verdict.NO_ANSWER,
        occurred_at_ms=due,
        error_code="refund_resent",
    )
    d = decide(state, resent)
    assert d.state is not None and d.state.checks == 1 and d.changes == ()
    assert due_at(d.state, SCHEDULE) == due + SCHEDULE.steps_ms[1]
    settled = decide(d.state, refund_done("r1")).state
    assert settled is not None and stuck_refunds(settled) == ()
    assert due_at(settled, SCHEDULE) is None


# --- the window a gateway searched by creation time is searched over ----------------------


def test_a_new_payment_is_searched_for_from_before_its_request_until_shortly_after() -> None:
    state = decide(None, request()).state  # requested at 1
    assert state is not None
    assert lookup_window(state, SCHEDULE) == (1 - LOOKUP_BEFORE_MS, 1 + LOOKUP_AFTER_MS)


def test_an_unknown_payment_is_searched_for_until_shortly_after_its_timed_out_answer() -> None:
    """The executor answers `unknown` once every attempt of the call gave up: all were sent
    before it, so the window reaches past that answer and not past a later check."""
    state = unknown()  # the answer came at 1_000
    begin, end = lookup_window(state, SCHEDULE)
    assert (begin, end) == (1 - LOOKUP_BEFORE_MS, 1_000 + LOOKUP_AFTER_MS)
    later = decide(state, check(state, Verdict.NO_ANSWER, at=3_600_000)).state
    assert later is not None and later.checked_at_ms == 3_600_000
    assert lookup_window(later, SCHEDULE) == (begin, end)  # a check sent nothing


def test_the_window_never_ends_before_the_janitor_counts_a_call_as_landed() -> None:
    slow = Schedule(not_charged_after_ms=LOOKUP_AFTER_MS * 3)
    state = unknown()
    assert lookup_window(state, slow)[1] == 1_000 + LOOKUP_AFTER_MS * 3


def test_a_pending_payments_window_covers_an_authorize_sent_again_by_a_check() -> None:
    state = decide(None, request()).state
    assert state is not None
    resent = decide(state, check(state, Verdict.NOT_CHARGED, at=400_000))
    assert resent.commands and resent.state is not None  # the lost authorize, sent again
    assert lookup_window(resent.state, SCHEDULE)[1] == 400_000 + LOOKUP_AFTER_MS


def test_a_failed_over_payments_window_covers_the_new_gateways_authorize() -> None:
    from tests.unit.test_failover import answer, routed

    state = routed()
    moved = decide(state, answer(state, S.FAILED, "gateway_circuit_open"))
    assert moved.state is not None and moved.state.gateway == "stripe"
    (cmd,) = moved.commands
    assert last_authorize_at(moved.state) == cmd.issued_at_ms == 5
    late = dataclasses.replace(
        moved.state,
        updated_at_ms=1,
        pending_commands=(dataclasses.replace(cmd, issued_at_ms=900_000),),
    )
    assert lookup_window(late, SCHEDULE)[1] == 900_000 + LOOKUP_AFTER_MS


def test_the_window_is_bounded_by_the_payment_never_by_the_clock_or_other_payments() -> None:
    """Its length depends only on this payment's own history: a check a day later searches
    the same stretch as one a minute later."""
    state = unknown()
    begin, end = lookup_window(state, SCHEDULE)
    for at in (70_000, 3_600_000, 86_400_000):
        checked = decide(state, check(state, Verdict.NO_ANSWER, at=at)).state
        assert checked is not None and lookup_window(checked, SCHEDULE) == (begin, end)
    assert end - begin == LOOKUP_BEFORE_MS + (1_000 - 1) + LOOKUP_AFTER_MS


def test_the_janitors_question_carries_the_window() -> None:
    from agents.janitor import lookup_request

    state = unknown()
    req = lookup_request(state, SCHEDULE)
    assert req.window == lookup_window(state, SCHEDULE)
    assert req.payment_id == "pay_1" and req.created_at_ms == state.created_at_ms
    assert req.authorize is not None and req.authorize.idempotency_key == "pay_1:authorize:1"


def test_a_refund_merely_in_flight_is_first_sent_again_once_stale() -> None:
    """No answer yet is not an unanswered call: with a backlog, every refund in flight for a
    step (1 s in the chaos runs) was sent again, a thousand times in one liveness run."""
    from domain.janitor import stuck_refunds
    from tests.unit.test_payment_refunds import captured, refund

    state = decide(captured(), refund("r1", 400)).state
    assert state is not None and [c.refund_id for c in stuck_refunds(state)] == ["r1"]
    assert due_at(state, SCHEDULE) == 10 + SCHEDULE.stale_after_ms
