import itertools

from hypothesis import given
from hypothesis import strategies as st

from domain.money import Money
from domain.payment import (
    CaptureMode,
    GatewayOutcome,
    Operation,
    PaymentRequested,
    Source,
    command_id,
    decide,
)
from domain.status import ALLOWED, SETTLED, TERMINAL, PaymentStatus, can_move

S = PaymentStatus


def request(pid: str = "pay_1", fingerprint: str = "f1") -> PaymentRequested:
    return PaymentRequested(
        payment_id=pid,
        order_id="o-1",
        user_id="u-1",
        amount=Money(1000, "USD"),
        gateway="stripe",
        method_token="pm_card_visa",
        capture=CaptureMode.AUTOMATIC,
        fingerprint=fingerprint,
        requested_at_ms=1,
    )


def outcome(status: PaymentStatus, at: int = 2, pid: str = "pay_1") -> GatewayOutcome:
    return GatewayOutcome(
        payment_id=pid,
        command_id=command_id(pid, Operation.AUTHORIZE),
        operation=Operation.AUTHORIZE,
        status=status,
        occurred_at_ms=at,
        gateway_reference="pi_1",
        captured_amount=1000 if status is S.SUCCEEDED else 0,
        decline_code="generic_decline" if status is S.FAILED else None,
    )


def test_request_creates_pending_and_one_authorize_command() -> None:
    d = decide(None, request())
    assert d.state is not None and d.state.status is S.PENDING and d.state.seq == 1
    assert [c.status for c in d.changes] == [S.PENDING]
    assert d.changes[0].source is Source.REQUEST
    (cmd,) = d.commands
    assert cmd.idempotency_key == "pay_1:authorize:1"
    assert cmd.amount == Money(1000, "USD")


def test_duplicate_request_changes_nothing_and_re_emits_the_same_outbox() -> None:
    """A redelivery after a crash may find its outputs lost: it re-emits the very same ones
    (same command id and idempotency key, same seq), which the gateway and consumers dedupe."""
    first = decide(None, request())
    d = decide(first.state, request())
    assert d.ignored == "duplicate_request" and d.state == first.state
    assert d.commands == first.commands and d.changes == first.changes


def test_answered_commands_leave_the_outbox() -> None:
    state = decide(decide(None, request()).state, outcome(S.SUCCEEDED)).state
    assert state is not None and state.pending_commands == ()
    assert state.last_change is not None and state.last_change.status is S.SUCCEEDED


def test_same_id_different_body_is_an_idempotency_conflict() -> None:
    state = decide(None, request()).state
    assert decide(state, request(fingerprint="other")).ignored == "idempotency_conflict"


def test_success_outcome_ends_succeeded_with_capture() -> None:
    state = decide(None, request()).state
    d = decide(state, outcome(S.SUCCEEDED))
    assert d.state is not None and d.state.status is S.SUCCEEDED
    assert d.state.captured_amount == 1000 and d.state.seq == 2
    assert d.changes[0].previous_status is S.PENDING


def test_decline_ends_failed_with_decline_code() -> None:
    state = decide(None, request()).state
    d = decide(state, outcome(S.FAILED))
    assert d.state is not None and d.state.status is S.FAILED
    assert d.state.decline_code == "generic_decline"


def test_late_processing_after_succeeded_is_ignored() -> None:
    state = decide(None, request()).state
    state = decide(state, outcome(S.SUCCEEDED)).state
    d = decide(state, outcome(S.PROCESSING, at=1))
    assert d.ignored is not None and d.ignored.startswith("regressive")
    assert d.state == state


def test_outcome_for_unknown_payment_is_ignored() -> None:
    assert decide(None, outcome(S.SUCCEEDED)).ignored == "unknown_payment"


def test_terminal_statuses_have_no_way_out() -> None:
    assert all(not ALLOWED[s] for s in TERMINAL)
    assert TERMINAL <= SETTLED
    assert set(ALLOWED) == set(PaymentStatus)


def test_no_status_can_return_to_pending() -> None:
    assert not any(can_move(s, S.PENDING) for s in PaymentStatus)


def test_transition_graph_has_no_two_way_moves() -> None:
    for a, b in itertools.permutations(PaymentStatus, 2):
        assert not (can_move(a, b) and can_move(b, a)), (a, b)


# In the order a clean run would report them.
OUTCOMES = [S.UNKNOWN, S.REQUIRES_ACTION, S.PROCESSING, S.AUTHORIZED, S.SUCCEEDED]


@given(st.lists(st.sampled_from(OUTCOMES), max_size=8), st.randoms())
def test_any_order_and_duplication_of_forward_outcomes_reaches_the_furthest(
    seq: list[PaymentStatus], rnd: object
) -> None:
    """Shuffled, duplicated gateway news ends where the furthest-along piece of news says."""
    events = seq + seq
    rnd.shuffle(events)  # type: ignore[attr-defined]
    state = decide(None, request()).state
    seen_seq = state.seq if state else 0
    for status in events:
        d = decide(state, outcome(status))
        if d.state is not None:
            assert d.state.seq >= seen_seq
            seen_seq = d.state.seq
        state = d.state
    clean = decide(None, request()).state
    for status in sorted(set(seq), key=OUTCOMES.index):
        clean = decide(clean, outcome(status)).state
    assert state is not None and clean is not None

    # seq counts the transitions actually taken, so skipped intermediate news may lower it.
    def final(p):  # type: ignore[no-untyped-def]
        return (p.status, p.captured_amount, p.refunded_amount, p.decline_code, p.gateway_reference)

    assert final(state) == final(clean)
