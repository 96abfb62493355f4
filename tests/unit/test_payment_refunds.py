from dataclasses import replace

from hypothesis import given
from hypothesis import strategies as st

from domain.payment import (
    CancelRequested,
    CaptureMode,
    CaptureRequested,
    GatewayNotice,
    GatewayOutcome,
    NoticeKind,
    Operation,
    Payment,
    decide,
)
from domain.refunds import RefundOutcome, RefundRequested, RefundState, reserved
from domain.status import PaymentStatus
from tests.unit.test_payment_decide import outcome, request

S = PaymentStatus


def captured(amount: int = 1000) -> Payment:
    state = decide(None, request()).state
    state = decide(state, outcome(S.SUCCEEDED)).state
    assert state is not None and state.captured_amount == amount
    return state


def refund(rid: str, amount: int | None, fingerprint: str = "f") -> RefundRequested:
    return RefundRequested("pay_1", rid, amount, fingerprint, 10, reason="requested_by_customer")


def refund_done(rid: str, state: RefundState = RefundState.PROCESSED) -> RefundOutcome:
    return RefundOutcome("pay_1", rid, f"{rid}:refund", state, 20, gateway_reference=f"re_{rid}")


def test_partial_then_full_refund() -> None:
    state = captured()
    d = decide(state, refund("r1", 300))
    assert [c.state for c in d.refund_changes] == [RefundState.INITIATED]
    (cmd,) = d.commands
    assert cmd.operation is Operation.REFUND and cmd.idempotency_key == "r1:refund"
    assert cmd.amount.amount == 300 and cmd.gateway_reference == "pi_1"
    d = decide(d.state, refund_done("r1"))
    assert d.state is not None and d.state.status is S.PARTIALLY_REFUNDED
    assert d.state.refunded_amount == 300 and d.changes[0].previous_status is S.SUCCEEDED
    d = decide(d.state, refund("r2", None))  # the rest
    assert d.commands[0].amount.amount == 700
    d = decide(d.state, refund_done("r2"))
    assert d.state is not None and d.state.status is S.REFUNDED and d.state.refunded_amount == 1000


def test_second_partial_refund_is_a_transition_too() -> None:
    state = captured()
    for rid in ("r1", "r2"):
        state = decide(state, refund(rid, 100)).state
        d = decide(state, refund_done(rid))
        assert d.changes and d.changes[0].status is S.PARTIALLY_REFUNDED
        state = d.state
    assert state is not None and state.refunded_amount == 200


def test_concurrent_refunds_beyond_the_capture_are_partly_refused() -> None:
    state = captured()
    a = decide(state, refund("r1", 600))
    b = decide(a.state, refund("r2", 600))  # both in flight: the second must not pass
    assert b.refund_changes[0].state is RefundState.FAILED
    assert b.refund_changes[0].error_code == "amount_exceeds_refundable" and not b.commands


def test_failed_refund_releases_its_reservation() -> None:
    state = decide(captured(), refund("r1", 1000)).state
    state = decide(state, refund_done("r1", RefundState.FAILED)).state
    d = decide(state, refund("r2", 1000))
    assert d.commands and d.refund_changes[0].state is RefundState.INITIATED


def test_refund_before_capture_is_refused() -> None:
    state = decide(None, request()).state
    d = decide(state, refund("r1", 100))
    assert d.refund_changes[0].error_code == "payment_not_refundable"


def test_same_refund_id_twice_is_one_refund() -> None:
    state = decide(captured(), refund("r1", 100)).state
    assert decide(state, refund("r1", 100)).ignored == "duplicate_request"
    assert decide(state, refund("r1", 200, "other")).ignored == "idempotency_conflict"


def test_refund_webhook_before_the_answer_settles_the_refund_once() -> None:
    state = decide(captured(), refund("r1", 400)).state
    news = GatewayNotice(
        "pay_1", "evt_r", "charge.refunded", NoticeKind.REFUND, None, 15,
        amount=400, refund_state=RefundState.PROCESSED, refund_reference="re_x",
    )  # fmt: skip
    d = decide(state, news)
    assert d.state is not None and d.state.refunded_amount == 400
    late = decide(d.state, refund_done("r1"))
    assert late.ignored == "duplicate_outcome"


def test_partial_capture_then_cancel_rules() -> None:
    manual = replace(request(), capture=CaptureMode.MANUAL)
    state = decide(None, manual).state
    state = decide(state, outcome(S.AUTHORIZED)).state
    d = decide(state, CaptureRequested("pay_1", "k1", 5, amount=600))
    (cmd,) = d.commands
    assert cmd.operation is Operation.CAPTURE and cmd.amount.amount == 600
    assert decide(d.state, CaptureRequested("pay_1", "k1", 6, 600)).ignored == "duplicate_request"
    assert decide(d.state, CancelRequested("pay_1", "k2", 6)).ignored == "command_in_progress"
    done = GatewayOutcome(
        "pay_1", cmd.command_id, Operation.CAPTURE, S.SUCCEEDED, 7, "pi_1", captured_amount=600
    )
    state = decide(d.state, done).state
    assert state is not None and state.status is S.SUCCEEDED and state.captured_amount == 600
    assert decide(state, CancelRequested("pay_1", "k3", 8)).ignored == "not_cancelable:succeeded"


def test_failed_capture_leaves_the_authorization() -> None:
    manual = replace(request(), capture=CaptureMode.MANUAL)
    state = decide(decide(None, manual).state, outcome(S.AUTHORIZED)).state
    d = decide(state, CaptureRequested("pay_1", "k1", 5))
    failed = GatewayOutcome(
        "pay_1", d.commands[0].command_id, Operation.CAPTURE, S.FAILED, 6, error_code="x"
    )
    after = decide(d.state, failed)
    assert after.state is not None and after.state.status is S.AUTHORIZED
    assert after.state.outstanding_command is None and after.ignored == "capture_failed:x"


refund_steps = st.lists(
    st.one_of(
        st.tuples(st.just("request"), st.integers(0, 5), st.none() | st.integers(1, 1200)),
        st.tuples(st.just("answer"), st.integers(0, 5), st.sampled_from(list(RefundState))),
    ),
    max_size=25,
)


@given(refund_steps)
def test_no_sequence_of_refund_requests_and_answers_over_refunds(steps: list) -> None:
    state = captured()
    for kind, n, arg in steps:
        event = refund(f"r{n}", arg) if kind == "request" else refund_done(f"r{n}", arg)
        new = decide(state, event).state
        assert new is not None
        state = new
        assert reserved(state.refunds) <= state.captured_amount
        assert state.refunded_amount <= state.captured_amount


def test_the_answer_after_a_faster_webhook_still_frees_the_next_command() -> None:
    manual = replace(request(), capture=CaptureMode.MANUAL)
    state = decide(None, manual).state
    news = GatewayNotice("pay_1", "evt_a", "x", NoticeKind.PAYMENT, S.AUTHORIZED, 3)
    state = decide(state, news).state  # the webhook first
    state = decide(state, outcome(S.AUTHORIZED)).state  # then the call's own answer
    assert state is not None and state.outstanding_command is None
    assert decide(state, CaptureRequested("pay_1", "k1", 5)).commands


def test_table_rows_round_trip_every_field() -> None:
    from tables.rows import payment_from_row, payment_to_row

    state = decide(captured(), refund("r1", 300)).state
    assert state is not None and state.pending_commands and state.last_change
    assert payment_from_row(payment_to_row(state)) == state


def test_a_repeated_refund_request_re_emits_every_refund_status() -> None:
    """A crash can lose a refund's record after its state was saved, a refused refund's
    `failed` included: the redelivered request sends each refund's last change again."""
    state = decide(captured(), refund("r1", 600)).state
    refused = decide(state, refund("r2", 600))  # more than what is left: refused at once
    assert refused.state is not None
    assert [c.state for c in refused.refund_changes] == [RefundState.FAILED]
    again = decide(refused.state, refund("r2", 600))
    assert again.ignored == "duplicate_request" and again.state == refused.state
    replayed = {(c.refund_id, c.seq, c.state) for c in again.refund_changes}
    assert replayed == {("r1", 1, RefundState.INITIATED), ("r2", 1, RefundState.FAILED)}
