"""The fraud rules, screened in the stream before any gateway call (`domain/fraud.py`).

A new payment waits in `pending` while two stages look at it, each keyed so that one worker
holds all of a key's history in a changelog-backed table:

1. `fraud-users` reads `fraud_checks` (keyed by user id): velocity per user, the amount
   threshold per currency and billing against IP country; it passes the payment on with its
   hits to `fraud_card_checks`, keyed by the card's fingerprint.
2. `fraud-cards` reads `fraud_card_checks`: velocity per card and a burst of declines on the
   card (the payment agent reports each decline here); it sends the verdict, keyed by payment
   id, to `fraud_verdicts`, which the payment agent reads: allow sends the authorize command,
   review holds the payment `in_review`, block fails it `fraud_suspected`.

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
from domain.fraud import FraudRules, Screen, card_hits, outcome_of, prune, remember, user_hits
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


def register(app: faust.App, topics: Topics, tables: Tables, rules: FraudRules) -> list[Any]:
    users, cards = tables.fraud_users, tables.fraud_cards

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
            hits = tuple(hit.label() for hit in user_hits(rules, screen, history))
            passed = dataclasses.replace(screen, hits=screen.hits + hits)
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
            hits = screen.hits + tuple(
                h.label() for h in card_hits(rules, screen, payments, declines)
            )
            outcome = outcome_of(hits)
            VERDICTS.labels(outcome.value).inc()
            for label in hits:
                rule, rule_outcome, _ = label.split(":", 2)
                RULE_HITS.labels(rule, rule_outcome).inc()
            if hits:
                log.info(
                    "fraud rules on %s: %s (%s)", screen.payment_id, outcome.value, ", ".join(hits)
                )
            await topics.fraud_verdicts.send(
                key=screen.payment_id.encode(),
                value=_VERDICT.encode(verdict_to_record(screen.payment_id, hits, now_ms)),
                headers=_VERDICT.headers,
            )

    return [by_user, by_card]
