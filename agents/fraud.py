"""The fraud rules that need history, screened in the stream before any gateway call
(`domain/fraud.py`).

The stateless rules (amount threshold per currency, billing against IP country) are decided
by the payment agent itself, in the payment's decision. Only when a rule with history is on
does a new payment wait in `pending` for the stages that have one (`FraudRules.stages`),
each keyed so that one worker holds all of a key's history in a changelog-backed table:

1. `fraud-users` reads `fraud_checks` (keyed by user id): velocity per user. It passes the
   payment on with its hits to `fraud_card_checks`, keyed by the card's fingerprint, when a
   card rule is on, and otherwise sends the verdict itself.
2. `fraud-cards` reads `fraud_card_checks`: velocity per card and a burst of declines on the
   card (the payment agent reports each decline here while the declines rule is on).

The last stage sends the verdict, keyed by payment id, to `fraud_verdicts`, which the payment
agent reads: allow sends the authorize command, review holds the payment `in_review`, block
fails it `fraud_suspected`. Both agents run whenever fraud screening is on, even with none of
their rules on: a screen sent before an upgrade, or sent again by the janitor (always to
`fraud_checks`), is still answered, so no payment waits forever for a verdict.

Histories hold (payment id, time) pairs, so a redelivered check counts its payment once.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from typing import Any

import faust
from prometheus_client import Counter

from agents.dead_letter import send_to_dead_letter
from domain.errors import SerializationError
from domain.fraud import (
    FraudRules,
    Outcome,
    Screen,
    Stage,
    card_hits,
    combine,
    outcome_of,
    prune,
    remember,
    user_hits,
)
from schemas import codec, decode
from schemas.records import screen_from_record, screen_to_record, verdict_to_record
from streams.app import Topics
from tables.payments import Tables

log = logging.getLogger(__name__)

_CHECK = codec("fraud_check")
_VERDICT = codec("fraud_verdict")

RULE_HITS = Counter(
    "payments_fraud_rule_hits_total",
    "Fraud rules that fired, by rule and the outcome it asked for.",
    ["rule", "outcome"],
)
VERDICTS = Counter("payments_fraud_verdicts_total", "Fraud verdicts, by outcome.", ["outcome"])


def observe(payment_id: str, hits: tuple[str, ...]) -> Outcome:
    """Count and log a verdict and the rules that fired for it, wherever it was reached: in
    the last fraud stage, or in the payment agent when the stateless rules decided alone."""
    outcome = outcome_of(hits)
    VERDICTS.labels(outcome.value).inc()
    for label in hits:
        rule, rule_outcome, _ = label.split(":", 2)
        RULE_HITS.labels(rule, rule_outcome).inc()
    if hits:
        log.info("fraud rules on %s: %s (%s)", payment_id, outcome.value, ", ".join(hits))
    return outcome


def register(app: faust.App, topics: Topics, tables: Tables, rules: FraudRules) -> list[Any]:
    users, cards = tables.fraud_users, tables.fraud_cards
    to_cards = Stage.CARD in rules.stages

    async def send_verdict(payment_id: str, hits: tuple[str, ...], now_ms: int) -> None:
        observe(payment_id, hits)
        await topics.fraud_verdicts.send(
            key=payment_id.encode(),
            value=_VERDICT.encode(verdict_to_record(payment_id, hits, now_ms)),
            headers=_VERDICT.headers,
        )

    async def screened(event: Any) -> tuple[str, Screen] | None:
        try:
            return screen_from_record(decode("fraud_check", event.value, dict(event.headers or {})))
        except SerializationError as exc:
            await send_to_dead_letter(topics.dead_letter, event, exc)
            return None

    @app.agent(topics.fraud_checks, name="fraud-users")
    async def by_user(stream: Any) -> Any:
        async for event in stream.events():
            found = await screened(event)
            if found is None:
                continue
            _, screen = found
            now_ms = int(time.time() * 1000)
            row = users.get(screen.user_id) or {}
            history = remember(
                row.get("payments", ()), screen.payment_id, screen.at_ms, rules.user_keep_ms,
                now_ms,
            )  # fmt: skip
            if rules.user_velocity:
                users[screen.user_id] = {"payments": history}
            hits = combine(screen.hits, user_hits(rules, screen, history))
            if not to_cards:  # no card rule on: that stage would add a hop and nothing else
                await send_verdict(screen.payment_id, hits, now_ms)
                continue
            passed = dataclasses.replace(screen, hits=hits)
            await topics.fraud_card_checks.send(
                key=screen.card.encode(),
                value=_CHECK.encode(screen_to_record(passed, kind="screen")),
                headers=_CHECK.headers,
            )

    @app.agent(topics.fraud_card_checks, name="fraud-cards")
    async def by_card(stream: Any) -> Any:
        async for event in stream.events():
            found = await screened(event)
            if found is None:
                continue
            kind, screen = found
            now_ms = int(time.time() * 1000)
            row = cards.get(screen.card) or {}
            payments, declines = row.get("payments", ()), row.get("declines", ())
            keep = rules.card_keep_ms
            if kind == "decline":
                if rules.declines:
                    declines = remember(declines, screen.payment_id, now_ms, keep, now_ms)
                    cards[screen.card] = {"payments": list(payments), "declines": declines}
                continue
            payments = remember(payments, screen.payment_id, screen.at_ms, keep, now_ms)
            declines = prune(declines, keep, now_ms)
            if rules.card_velocity or rules.declines:
                cards[screen.card] = {"payments": payments, "declines": declines}
            hits = combine(screen.hits, card_hits(rules, screen, payments, declines))
            await send_verdict(screen.payment_id, hits, now_ms)

    return [by_user, by_card]
