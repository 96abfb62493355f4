"""The stateless fraud rules decided in the payment's own decision, and the stages that are
gone through only when a rule with history is on (the throughput regression of screening
every payment through two topic hops)."""

from __future__ import annotations

import asyncio
import dataclasses
import types
from collections.abc import AsyncIterator
from typing import Any

from prometheus_client import REGISTRY

from agents import fraud as fraud_agents
from domain.fraud import AmountLimit, FraudRules, Limit, Outcome, Screen, Stage
from domain.money import Money
from domain.payment import (
    Decision,
    FraudVerdict,
    GatewayOutcome,
    Operation,
    PaymentRequested,
    ReviewDecided,
    Source,
    decide,
)
from domain.status import PaymentStatus
from payments.settings import Settings
from schemas import codec, decode
from schemas.records import screen_from_record, screen_to_record
from tests.unit.test_payment_decide import request

S = PaymentStatus
MIN = 60_000
LIMIT = (Limit(10, 10 * MIN, Outcome.REVIEW),)


def shipped() -> FraudRules:
    """The rules as shipped (environment aside): only the stateless ones are on."""
    defaults = {n: f.default for n, f in Settings.model_fields.items() if n.startswith("fraud_")}
    return Settings.model_construct(**defaults).fraud_rules


def big(amount: int = 5_000_000, **kw: Any) -> PaymentRequested:
    return dataclasses.replace(
        request(), amount=Money(amount, "USD"), card_fingerprint="fp_1", **kw
    )


# --- decided in the payment's decision -----------------------------------------------------


def test_shipped_rules_need_no_stage() -> None:
    rules = shipped()
    assert rules.amounts and rules.country_mismatch is Outcome.REVIEW
    assert rules.stages == ()


def test_allowed_by_the_shipped_rules_the_command_goes_out_in_the_same_decision() -> None:
    d = decide(None, big(amount=1000), fraud=shipped())
    assert d.state is not None and d.screens == ()  # no topic hop at all
    (cmd,) = d.commands
    assert cmd.operation is Operation.AUTHORIZE and d.state.pending_commands == (cmd,)
    assert d.commands == decide(None, big(amount=1000)).commands  # as if screening were off
    assert [c.status for c in d.changes] == [S.PENDING]
    assert (d.state.screening, d.state.held_commands, d.state.fraud_hits) == (None, (), ())
    assert d.verdict is not None and d.verdict.outcome is Outcome.ALLOW  # for the metrics
    again = decide(d.state, big(amount=1000), fraud=shipped())
    assert again.ignored == "duplicate_request" and again.commands == (cmd,)
    assert again.screens == () and again.verdict is None


def test_an_amount_over_the_threshold_is_held_in_review_in_the_same_decision() -> None:
    d = decide(None, big(), fraud=shipped())
    held = d.state
    assert held is not None and d.commands == () and d.screens == ()
    assert [(c.status, c.source) for c in d.changes] == [
        (S.PENDING, Source.REQUEST),
        (S.IN_REVIEW, Source.FRAUD),
    ]
    assert held.status is S.IN_REVIEW and held.fraud_hits == ("amount:review:>=5000000 USD",)
    assert held.pending_commands == () and len(held.held_commands) == 1  # nothing sent
    assert decide(held, FraudVerdict(held.payment_id, Outcome.ALLOW, (), 5)).commands == ()
    ok = decide(held, ReviewDecided(held.payment_id, "r1", approve=True, requested_at_ms=9))
    assert [c.operation for c in ok.commands] == [Operation.AUTHORIZE]


def test_a_country_mismatch_is_held_in_review_in_the_same_decision() -> None:
    d = decide(None, big(amount=1000, billing_country="US", ip_country="BR"), fraud=shipped())
    assert d.state is not None and d.state.status is S.IN_REVIEW and d.commands == ()
    assert d.state.fraud_hits == ("country_mismatch:review:US!=BR",)


def test_a_block_fails_the_payment_at_once_even_with_stages_on() -> None:
    amounts = (AmountLimit("USD", 5_000_000, Outcome.BLOCK),)
    for rules in (FraudRules(amounts=amounts), FraudRules(amounts=amounts, user_velocity=LIMIT)):
        d = decide(None, big(), fraud=rules)
        assert d.state is not None and d.commands == () and d.screens == ()
        assert (d.state.status, d.state.error_code) == (S.FAILED, "fraud_suspected")
        assert d.state.held_commands == () and d.state.pending_commands == ()
        assert d.verdict is not None and d.verdict.outcome is Outcome.BLOCK


# --- the stages, only when a rule with history is on ----------------------------------------


def _waits(d: Decision) -> Screen:
    assert d.state is not None and d.state.awaiting_verdict
    assert d.commands == () and d.state.pending_commands == () and d.verdict is None
    (screen,) = d.screens
    return screen


def test_user_velocity_on_the_payment_waits_for_the_user_stage() -> None:
    rules = dataclasses.replace(shipped(), user_velocity=LIMIT)
    assert rules.first_stage is Stage.USER
    _waits(decide(None, big(amount=1000), fraud=rules))


def test_only_card_velocity_on_the_screen_goes_straight_to_the_card_stage() -> None:
    rules = dataclasses.replace(shipped(), card_velocity=LIMIT)
    assert rules.stages == (Stage.CARD,) and rules.first_stage is Stage.CARD
    _waits(decide(None, big(amount=1000), fraud=rules))


def test_a_stateless_review_waits_to_be_combined_with_the_stages() -> None:
    """A stage's block is stricter than the amount's review: the verdict combines both."""
    rules = dataclasses.replace(shipped(), user_velocity=LIMIT)
    d = decide(None, big(), fraud=rules)
    screen = _waits(d)
    assert screen.hits == ("amount:review:>=5000000 USD",)  # carried to the stages
    assert d.state is not None and d.state.screen().hits == screen.hits  # the janitor's too
    again = decide(d.state, big(), fraud=rules)
    assert again.ignored == "duplicate_request" and again.screens == (screen,)
    hits = (*screen.hits, "user_velocity:block:>10/600s")
    blocked = decide(d.state, FraudVerdict(screen.payment_id, Outcome.BLOCK, hits, 5), fraud=rules)
    assert blocked.state is not None and blocked.state.status is S.FAILED
    assert blocked.commands == () and blocked.state.fraud_hits == hits


def test_a_decline_is_reported_only_when_the_declines_rule_is_on() -> None:
    def declined(rules: FraudRules) -> tuple[Screen, ...]:
        d = decide(None, big(amount=1000), fraud=rules)
        if d.state is not None and d.state.awaiting_verdict:
            d = decide(d.state, FraudVerdict(d.state.payment_id, Outcome.ALLOW, (), 5))
        assert d.state is not None
        (cmd,) = d.state.pending_commands
        out = GatewayOutcome(
            "pay_1", cmd.command_id, Operation.AUTHORIZE, S.FAILED, 12, decline_code="do_not_honor"
        )
        return decide(d.state, out, fraud=rules).declines

    assert declined(shipped()) == ()
    assert declined(dataclasses.replace(shipped(), card_velocity=LIMIT)) == ()
    assert [s.card for s in declined(dataclasses.replace(shipped(), declines=LIMIT))] == ["fp_1"]


# --- the stage agents ----------------------------------------------------------------------

_CHECK = codec("fraud_check")


class _Topic:
    def __init__(self) -> None:
        self.sent: list[tuple[bytes, bytes]] = []

    async def send(self, *, key: bytes, value: bytes, headers: Any) -> None:
        self.sent.append((key, value))


class _App:
    def __init__(self) -> None:
        self.agents: dict[str, Any] = {}

    def agent(self, topic: Any, *, name: str) -> Any:
        def register(fn: Any) -> Any:
            self.agents[name] = fn
            return fn

        return register


class _Stream:
    def __init__(self, *screens: Screen) -> None:
        self.records = [_CHECK.encode(screen_to_record(s, kind="screen")) for s in screens]

    async def events(self) -> AsyncIterator[Any]:
        for value in self.records:
            yield types.SimpleNamespace(value=value, headers=dict(_CHECK.headers))


def _run_user_stage(rules: FraudRules, *screens: Screen) -> types.SimpleNamespace:
    topics = types.SimpleNamespace(
        fraud_checks=_Topic(), fraud_card_checks=_Topic(), fraud_verdicts=_Topic()
    )
    tables = types.SimpleNamespace(fraud_users={}, fraud_cards={})
    app = _App()
    fraud_agents.register(app, topics, tables, rules)  # type: ignore[arg-type]
    asyncio.run(app.agents["fraud-users"](_Stream(*screens)))
    return topics


def _screen(**kw: Any) -> Screen:
    base: dict[str, Any] = dict(
        payment_id="pay_1", user_id="u-1", card="fp_1", amount=1000, currency="USD", at_ms=MIN
    )
    return Screen(**(base | kw))


def _rule_hits(rule: str) -> float:
    labels = {"rule": rule, "outcome": "review"}
    return REGISTRY.get_sample_value("payments_fraud_rule_hits_total", labels) or 0.0


def test_with_no_card_rule_on_the_user_stage_sends_the_verdict_itself() -> None:
    rules = dataclasses.replace(shipped(), user_velocity=(Limit(0, MIN, Outcome.REVIEW),))
    counted = _rule_hits("user_velocity"), _rule_hits("country_mismatch")
    topics = _run_user_stage(rules, _screen(hits=("country_mismatch:review:US!=BR",)))
    assert (_rule_hits("user_velocity"), _rule_hits("country_mismatch")) == (
        counted[0] + 1, counted[1] + 1,
    )  # fmt: skip
    assert topics.fraud_card_checks.sent == []
    ((key, value),) = topics.fraud_verdicts.sent
    verdict = decode("fraud_verdict", value, dict(codec("fraud_verdict").headers))
    assert key == b"pay_1" and verdict["outcome"] == "review"
    assert verdict["hits"] == ["country_mismatch:review:US!=BR", "user_velocity:review:>0/60s"]


def test_with_a_card_rule_on_the_user_stage_passes_the_combined_hits_on() -> None:
    rules = FraudRules(user_velocity=LIMIT, declines=LIMIT)
    topics = _run_user_stage(rules, _screen(hits=("amount:review:>=1000 USD",)))
    assert topics.fraud_verdicts.sent == []
    ((key, value),) = topics.fraud_card_checks.sent
    _, passed = screen_from_record(decode("fraud_check", value, dict(_CHECK.headers)))
    assert key == b"fp_1" and passed.hits == ("amount:review:>=1000 USD",)


def test_a_screen_from_before_the_upgrade_is_still_answered_with_no_stage_on() -> None:
    """It was sent to the user stage without the stateless hits: they are found there."""
    topics = _run_user_stage(shipped(), _screen(amount=5_000_000))
    ((_, value),) = topics.fraud_verdicts.sent
    verdict = decode("fraud_verdict", value, dict(codec("fraud_verdict").headers))
    assert (verdict["outcome"], verdict["hits"]) == ("review", ["amount:review:>=5000000 USD"])
