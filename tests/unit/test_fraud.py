"""Fraud rules: the pure rules, and a screened payment's path through `decide`."""

from __future__ import annotations

import dataclasses

import pytest

from domain.fraud import (
    AmountLimit,
    FraudRules,
    Limit,
    Outcome,
    Screen,
    Stage,
    card_hits,
    combine,
    outcome_of,
    parse_amounts,
    parse_limits,
    remember,
    stateless_hits,
    user_hits,
)
from domain.janitor import Schedule, due_at
from domain.payment import FraudVerdict, GatewayOutcome, Operation, Payment, ReviewDecided, decide
from domain.status import PaymentStatus
from tests.unit.test_payment_decide import request

S = PaymentStatus
MIN = 60_000
# A rule with history on: a new payment goes through the stages and waits for their verdict.
STAGED = FraudRules(user_velocity=(Limit(10, 10 * MIN, Outcome.REVIEW),))


def screen(**kw: object) -> Screen:
    base: dict[str, object] = dict(
        payment_id="pay_9", user_id="u-1", card="fp_1", amount=1000, currency="USD", at_ms=10 * MIN
    )
    return Screen(**(base | kw))  # type: ignore[arg-type]


# --- the rules ---------------------------------------------------------------------------


def test_velocity_counts_distinct_payments_in_the_window() -> None:
    rules = FraudRules(user_velocity=(Limit(2, 5 * MIN, Outcome.REVIEW),))
    history: list[list[object]] = []
    for i, at in enumerate((1 * MIN, 6 * MIN, 7 * MIN)):
        history = remember(history, f"pay_{i}", at, 5 * MIN, now_ms=at)
    history = remember(history, "pay_9", 10 * MIN, 5 * MIN, now_ms=10 * MIN)
    assert [p for p, _ in history] == ["pay_1", "pay_2", "pay_9"]  # pay_0 fell out
    (hit,) = user_hits(rules, screen(), history)
    assert (hit.rule, hit.outcome) == ("user_velocity", Outcome.REVIEW)
    again = remember(history, "pay_9", 10 * MIN, 5 * MIN, now_ms=10 * MIN)  # a redelivery
    assert again == history


def test_amount_threshold_is_per_currency_and_inclusive() -> None:
    rules = FraudRules(amounts=(AmountLimit("USD", 1000, Outcome.BLOCK),))
    assert [h.rule for h in stateless_hits(rules, screen(amount=1000))] == ["amount"]
    assert stateless_hits(rules, screen(amount=999)) == []
    assert stateless_hits(rules, screen(amount=10**9, currency="JPY")) == []


def test_country_mismatch_only_when_both_are_given() -> None:
    rules = FraudRules(country_mismatch=Outcome.REVIEW)
    assert stateless_hits(rules, screen(billing_country="US", ip_country="us")) == []
    assert stateless_hits(rules, screen(billing_country="US")) == []
    (hit,) = stateless_hits(rules, screen(billing_country="US", ip_country="RU"))
    assert hit.label() == "country_mismatch:review:US!=RU"


def test_the_user_stage_checks_the_stateless_rules_again_and_they_count_once() -> None:
    """A screen from before the stateless rules moved into the payment's decision carries no
    hits for them: the user stage finds them. A newer screen carries them: kept once."""
    rules = FraudRules(amounts=(AmountLimit("USD", 1000, Outcome.REVIEW),))
    old = screen(amount=1000)
    assert combine(old.hits, user_hits(rules, old, [])) == ("amount:review:>=1000 USD",)
    new = screen(amount=1000, hits=("amount:review:>=1000 USD",))
    assert combine(new.hits, user_hits(rules, new, [])) == ("amount:review:>=1000 USD",)


def test_only_the_stages_with_a_rule_on_are_gone_through() -> None:
    lim = (Limit(1, MIN, Outcome.REVIEW),)
    assert FraudRules(amounts=(AmountLimit("USD", 1, Outcome.REVIEW),)).stages == ()
    assert FraudRules(user_velocity=lim).stages == (Stage.USER,)
    assert FraudRules(card_velocity=lim).stages == (Stage.CARD,)
    assert FraudRules(declines=lim).stages == (Stage.CARD,)
    assert FraudRules(user_velocity=lim, declines=lim).stages == (Stage.USER, Stage.CARD)
    # a screen goes to the first of them, or (when none: an old one) to the user stage
    assert FraudRules(card_velocity=lim).first_stage is Stage.CARD
    assert FraudRules(user_velocity=lim, card_velocity=lim).first_stage is Stage.USER
    assert FraudRules().first_stage is Stage.USER


def test_a_burst_of_declines_on_the_card_blocks_it() -> None:
    rules = FraudRules(declines=(Limit(3, 10 * MIN, Outcome.BLOCK),))
    declines = [["pay_a", 5 * MIN], ["pay_b", 6 * MIN]]
    assert card_hits(rules, screen(), [["pay_9", 10 * MIN]], declines) == []
    declines.append(["pay_c", 9 * MIN])
    (hit,) = card_hits(rules, screen(), [["pay_9", 10 * MIN]], declines)
    assert (hit.rule, hit.outcome) == ("declines", Outcome.BLOCK)


def test_the_most_severe_outcome_wins() -> None:
    assert outcome_of([]) is Outcome.ALLOW
    assert outcome_of(["amount:review:x", "declines:block:y"]) is Outcome.BLOCK


def test_settings_parse_or_say_why_not() -> None:
    assert parse_limits("10/600:review, 30/600:block", "v") == (
        Limit(10, 600_000, Outcome.REVIEW), Limit(30, 600_000, Outcome.BLOCK),
    )  # fmt: skip
    assert parse_amounts("usd:5000000:review", "a") == (
        AmountLimit("USD", 5_000_000, Outcome.REVIEW),
    )
    for bad in ("10:review", "10/600:maybe", "10/0:block", "x/600:block"):
        with pytest.raises(ValueError, match="v:"):
            parse_limits(bad, "v")
    with pytest.raises(ValueError, match="a:"):
        parse_amounts("USD:-5:review", "a")


# --- decide ------------------------------------------------------------------------------


def screened() -> Payment:
    d = decide(None, dataclasses.replace(request(), card_fingerprint="fp_1"), fraud=STAGED)
    assert d.state is not None
    assert d.commands == () and d.state.pending_commands == ()  # nothing to the gateway yet
    assert d.state.status is S.PENDING and [c.status for c in d.changes] == [S.PENDING]
    (s,) = d.screens
    assert (s.payment_id, s.card) == (d.state.payment_id, "fp_1")
    return d.state


def verdict(state: Payment, outcome: Outcome, *hits: str) -> FraudVerdict:
    return FraudVerdict(state.payment_id, outcome, hits, occurred_at_ms=7)


def test_allowed_the_authorize_command_goes_out() -> None:
    state = screened()
    d = decide(state, verdict(state, Outcome.ALLOW), fraud=STAGED)
    assert d.state is not None and d.changes == ()
    (cmd,) = d.commands
    assert cmd.operation is Operation.AUTHORIZE and d.state.pending_commands == (cmd,)
    again = decide(d.state, verdict(state, Outcome.ALLOW), fraud=STAGED)
    # A redelivered verdict re-sends the outbox: a crash may have lost the command after the
    # state was saved (the gateway dedupes by the same idempotency key).
    assert again.ignored == "duplicate_verdict" and again.commands == (cmd,)


def test_blocked_the_payment_fails_and_nothing_is_sent() -> None:
    state = screened()
    d = decide(state, verdict(state, Outcome.BLOCK, "declines:block:>=3/600s"), fraud=STAGED)
    assert d.state is not None and d.commands == ()
    assert (d.state.status, d.state.error_code) == (S.FAILED, "fraud_suspected")
    assert [(c.status, c.source.value) for c in d.changes] == [(S.FAILED, "fraud")]
    assert d.state.fraud_hits == ("declines:block:>=3/600s",)


def test_held_for_review_then_approved_or_rejected() -> None:
    state = screened()
    d = decide(state, verdict(state, Outcome.REVIEW, "amount:review:>=1000 USD"), fraud=STAGED)
    held = d.state
    assert held is not None and held.status is S.IN_REVIEW and d.commands == ()
    assert due_at(held, Schedule(steps_ms=(60_000,))) is None  # no gateway to ask yet
    # while the verdict is awaited, the janitor is due to send the screen again
    assert due_at(state, Schedule(steps_ms=(60_000,))) == state.updated_at_ms + 60_000
    approve = ReviewDecided(held.payment_id, "r1", approve=True, requested_at_ms=9)
    ok = decide(held, approve)
    assert ok.state is not None and [c.operation for c in ok.commands] == [Operation.AUTHORIZE]
    assert decide(ok.state, approve).ignored == "duplicate_request"
    (cmd,) = ok.commands
    paid = decide(
        ok.state,
        GatewayOutcome(held.payment_id, cmd.command_id, Operation.AUTHORIZE, S.SUCCEEDED, 11),
    )
    assert paid.state is not None and paid.state.status is S.SUCCEEDED
    reject = decide(held, ReviewDecided(held.payment_id, "r2", approve=False, requested_at_ms=9))
    assert reject.state is not None and reject.commands == ()
    assert (reject.state.status, reject.state.error_code) == (S.FAILED, "fraud_rejected")
    assert decide(reject.state, approve).ignored is not None  # nothing to approve any more


def test_a_repeated_request_sends_the_screen_again_not_the_command() -> None:
    state = screened()
    d = decide(state, dataclasses.replace(request(), card_fingerprint="fp_1"), fraud=STAGED)
    assert d.ignored == "duplicate_request" and d.commands == () and len(d.screens) == 1


def test_a_decline_is_reported_to_the_card_rules() -> None:
    state = screened()
    allowed = decide(state, verdict(state, Outcome.ALLOW), fraud=STAGED).state
    assert allowed is not None
    (cmd,) = allowed.pending_commands
    out = GatewayOutcome(
        allowed.payment_id, cmd.command_id, Operation.AUTHORIZE, S.FAILED, 12,
        decline_code="generic_decline",
    )  # fmt: skip
    declines = FraudRules(declines=(Limit(3, 10 * MIN, Outcome.BLOCK),))
    d = decide(allowed, out, fraud=declines)
    assert [s.card for s in d.declines] == ["fp_1"]
    assert decide(allowed, out, fraud=STAGED).declines == ()  # no rule counts them
    assert decide(allowed, out).declines == ()  # screening off: nothing to report
