import random

from hypothesis import given
from hypothesis import strategies as st

from domain.payment import GatewayNotice, NoticeKind, Source, decide
from domain.status import PaymentStatus
from tests.unit.test_payment_decide import outcome, request

S = PaymentStatus


def notice(status: PaymentStatus | None, event_id: str, kind: NoticeKind = NoticeKind.PAYMENT):
    return GatewayNotice(
        payment_id="pay_1",
        event_id=event_id,
        event_type="x",
        kind=kind,
        status=status,
        occurred_at_ms=5,
        gateway_reference="pi_1",
        amount=1000 if status is S.SUCCEEDED else None,
    )


def test_webhook_settles_a_processing_payment() -> None:
    state = decide(None, request()).state
    state = decide(state, outcome(S.PROCESSING)).state
    d = decide(state, notice(S.SUCCEEDED, "evt_1"))
    assert d.state is not None and d.state.status is S.SUCCEEDED
    assert d.changes[0].source is Source.WEBHOOK and d.state.captured_amount == 1000


def test_same_event_twice_is_a_duplicate() -> None:
    state = decide(None, request()).state
    state = decide(state, notice(S.PROCESSING, "evt_1")).state
    assert decide(state, notice(S.PROCESSING, "evt_1")).ignored == "duplicate_event"


def test_late_webhook_after_success_is_recorded_as_ignored() -> None:
    state = decide(None, request()).state
    state = decide(state, outcome(S.SUCCEEDED)).state
    d = decide(state, notice(S.PROCESSING, "evt_late"))
    assert d.ignored == "regressive:succeeded->processing" and d.state == state


def test_dispute_after_capture_moves_to_disputed() -> None:
    state = decide(None, request()).state
    state = decide(state, outcome(S.SUCCEEDED)).state
    d = decide(state, notice(S.DISPUTED, "evt_dp", NoticeKind.DISPUTE))
    assert d.state is not None and d.state.status is S.DISPUTED


def test_refund_news_about_no_refund_of_ours_is_ignored() -> None:
    state = decide(None, request()).state
    d = decide(state, notice(None, "evt_re", NoticeKind.REFUND))
    assert d.ignored == "unknown_refund" and not d.changes


CLEAN = [
    notice(S.PROCESSING, "evt_a"),
    notice(S.AUTHORIZED, "evt_b"),
    notice(S.SUCCEEDED, "evt_c"),
    notice(S.DISPUTED, "evt_d", NoticeKind.DISPUTE),
]


@given(st.integers(min_value=0, max_value=2**32), st.integers(min_value=1, max_value=3))
def test_webhooks_delivered_n_times_in_any_order_end_like_one_clean_delivery(
    seed: int, times: int
) -> None:
    clean = decide(None, request()).state
    for n in CLEAN:
        clean = decide(clean, n).state
    deliveries = CLEAN * times
    random.Random(seed).shuffle(deliveries)
    state = decide(None, request()).state
    for n in deliveries:
        state = decide(state, n).state
    assert state is not None and clean is not None
    assert (state.status, state.captured_amount) == (clean.status, clean.captured_amount)


def test_a_late_answer_still_fills_in_the_card() -> None:
    from dataclasses import replace

    from domain.payment import CardSummary

    state = decide(None, request()).state
    state = decide(state, notice(S.SUCCEEDED, "evt_1")).state  # the webhook won the race
    assert state is not None and state.card is None
    late = replace(outcome(S.SUCCEEDED), card=CardSummary("visa", "4242", 12, 2034))
    d = decide(state, late)
    assert d.ignored == "no_change" and not d.changes  # no second status record
    assert d.state is not None and d.state.card == CardSummary("visa", "4242", 12, 2034)


def test_approval_that_waits_for_our_capture_issues_one_capture() -> None:
    from dataclasses import replace

    from domain.payment import Operation

    state = decide(None, request()).state
    state = decide(state, outcome(S.REQUIRES_ACTION)).state
    approved = replace(notice(S.PROCESSING, "evt_ok"), capture_needed=True)
    d = decide(state, approved)
    (cmd,) = d.commands
    assert cmd.operation is Operation.CAPTURE and cmd.idempotency_key == "pay_1:capture:approved"
    assert [c.command_id for c in d.state.pending_commands] == [cmd.command_id]
    again = decide(d.state, replace(approved, event_id="evt_ok2"))
    assert not again.commands  # a second approval does not capture twice


def test_a_decline_by_webhook_leaves_no_command_outstanding() -> None:
    """Terminal by webhook before the gateway call's own answer: nothing can change the
    payment any more, so no command is outstanding, and the late answer changes nothing."""
    state = decide(None, request()).state
    assert state is not None and state.outstanding_command is not None
    failed = decide(state, notice(S.FAILED, "evt_fail")).state
    assert failed is not None and failed.status is S.FAILED
    assert failed.outstanding_command is None
    late = decide(failed, outcome(S.FAILED))
    assert late.state is not None and late.state.status is S.FAILED and late.changes == ()
