"""Fraud rules: what a payment request looks like against its user's and its card's recent
history. Pure: the payment agent and the fraud agents (`agents/fraud.py`) call these.

The rules that need no history (amount threshold per currency, billing country against IP
country) are decided in the payment's own decision (`domain.payment.decide`): a topic hop
buys them neither ordering nor state, only latency. The rules that need history are screened
in stages, each keyed so that one worker sees all of a key's history: by user (velocity per
user), then by card fingerprint (velocity per card, and a burst of declines on the card). A
payment goes only through the stages that have a rule on (`FraudRules.stages`); with none,
nothing goes through a topic. Each rule that fires is a `Hit` with its outcome; the payment's
outcome is the most severe: `allow`, `review` (held for a person, with an `in_review` status
record) or `block` (`failed`, `fraud_suspected`).

History entries are (payment id, time): a redelivered screen finds its payment already
there and counts it once, so the verdict does not depend on redeliveries.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum


class Outcome(StrEnum):
    ALLOW = "allow"
    REVIEW = "review"
    BLOCK = "block"

    @property
    def severity(self) -> int:
        return _SEVERITY[self]


_SEVERITY = {Outcome.ALLOW: 0, Outcome.REVIEW: 1, Outcome.BLOCK: 2}


class Stage(StrEnum):
    """A stage of the rules that need history, by the key its topic is partitioned on."""

    USER = "user"  # fraud_checks, keyed by user id
    CARD = "card"  # fraud_card_checks, keyed by card fingerprint


@dataclass(frozen=True, slots=True)
class Limit:
    """More than `count` events within `window_ms` (this one included) gives `outcome`."""

    count: int
    window_ms: int
    outcome: Outcome


@dataclass(frozen=True, slots=True)
class AmountLimit:
    currency: str
    minor_units: int  # an amount at or above this gives `outcome`
    outcome: Outcome


@dataclass(frozen=True, slots=True)
class FraudRules:
    user_velocity: tuple[Limit, ...] = ()
    card_velocity: tuple[Limit, ...] = ()
    declines: tuple[Limit, ...] = ()  # declines on the card within the window, this one not
    amounts: tuple[AmountLimit, ...] = ()
    country_mismatch: Outcome = Outcome.ALLOW

    @property
    def stages(self) -> tuple[Stage, ...]:
        """The stages a payment goes through, in order: only those with a rule on. Empty
        when only the stateless rules are on: the payment agent then decides alone."""
        user = (Stage.USER,) if self.user_velocity else ()
        card = (Stage.CARD,) if self.card_velocity or self.declines else ()
        return (*user, *card)

    @property
    def first_stage(self) -> Stage:
        """Where a screen goes: the first stage with a rule on. The user stage when none is:
        it takes any screen (a payment left awaiting by an upgrade) and answers it."""
        return self.stages[0] if self.stages else Stage.USER

    @property
    def user_keep_ms(self) -> int:
        return max((lim.window_ms for lim in self.user_velocity), default=0)

    @property
    def card_keep_ms(self) -> int:
        return max((lim.window_ms for lim in (*self.card_velocity, *self.declines)), default=0)


@dataclass(frozen=True, slots=True)
class Hit:
    rule: str  # user_velocity, card_velocity, declines, amount, country_mismatch
    outcome: Outcome
    detail: str

    def label(self) -> str:
        return f"{self.rule}:{self.outcome.value}:{self.detail}"


@dataclass(frozen=True, slots=True)
class Screen:
    """One payment request as the rules see it."""

    payment_id: str
    user_id: str
    card: str  # the card's fingerprint (or its token when none was given)
    amount: int
    currency: str
    at_ms: int
    billing_country: str | None = None
    ip_country: str | None = None
    hits: tuple[str, ...] = field(default=())  # Hit.label()s decided before this stage


History = list[list[object]]  # [[payment id, at ms], ...], oldest first


def prune(history: Iterable[Sequence[object]], keep_ms: int, now_ms: int) -> History:
    """`history` without the entries older than `keep_ms`."""
    return [[str(p), int(str(t))] for p, t in history if now_ms - int(str(t)) < keep_ms]


def remember(history: Iterable[Sequence[object]], payment_id: str, at_ms: int, keep_ms: int,
             now_ms: int) -> History:  # fmt: skip
    """`history` with the payment added once and entries older than `keep_ms` dropped."""
    kept = prune(history, keep_ms, now_ms)
    if all(p != payment_id for p, _ in kept):
        kept.append([payment_id, at_ms])
    kept.sort(key=lambda entry: (entry[1], entry[0]))
    return kept


def _count_since(history: Iterable[Sequence[object]], since_ms: int, but: str = "") -> int:
    return sum(1 for p, t in history if int(str(t)) > since_ms and p != but)


def stateless_hits(rules: FraudRules, screen: Screen) -> list[Hit]:
    """The rules that need no history: decided when the payment is requested."""
    hits = [
        Hit("amount", lim.outcome, f">={lim.minor_units} {lim.currency}")
        for lim in rules.amounts
        if lim.currency == screen.currency and screen.amount >= lim.minor_units
    ]
    if (
        rules.country_mismatch is not Outcome.ALLOW
        and screen.billing_country
        and screen.ip_country
        and screen.billing_country.upper() != screen.ip_country.upper()
    ):
        detail = f"{screen.billing_country.upper()}!={screen.ip_country.upper()}"
        hits.append(Hit("country_mismatch", rules.country_mismatch, detail))
    return hits


def user_hits(rules: FraudRules, screen: Screen, history: History) -> list[Hit]:
    """The rules of the user stage; `history` already holds this payment.

    The stateless rules are checked again here: a screen sent before they moved into the
    payment's decision, and still in flight across an upgrade, does not carry their hits.
    For a newer screen they give the labels it already carries, and `combine` keeps one.
    """
    hits = [
        Hit("user_velocity", lim.outcome, f">{lim.count}/{lim.window_ms // 1000}s")
        for lim in rules.user_velocity
        if _count_since(history, screen.at_ms - lim.window_ms) > lim.count
    ]
    return hits + stateless_hits(rules, screen)


def card_hits(rules: FraudRules, screen: Screen, history: History, declines: History) -> list[Hit]:
    """The rules of the card stage; `history` already holds this payment."""
    hits = [
        Hit("card_velocity", lim.outcome, f">{lim.count}/{lim.window_ms // 1000}s")
        for lim in rules.card_velocity
        if _count_since(history, screen.at_ms - lim.window_ms) > lim.count
    ]
    hits += [
        Hit("declines", lim.outcome, f">={lim.count}/{lim.window_ms // 1000}s")
        for lim in rules.declines
        if _count_since(declines, screen.at_ms - lim.window_ms, but=screen.payment_id) >= lim.count
    ]
    return hits


def combine(earlier: tuple[str, ...], hits: Iterable[Hit]) -> tuple[str, ...]:
    """`earlier` labels, then those of `hits` not among them yet: a rule counts once."""
    labels = list(earlier)
    labels += [label for label in (hit.label() for hit in hits) if label not in labels]
    return tuple(labels)


def outcome_of(labels: Iterable[str]) -> Outcome:
    """The most severe outcome among `Hit.label()`s; allow when there are none."""
    outcomes = [Outcome(label.split(":")[1]) for label in labels]
    return max(outcomes, key=lambda o: o.severity, default=Outcome.ALLOW)


# --- settings ------------------------------------------------------------------------------


def parse_limits(value: str, name: str) -> tuple[Limit, ...]:
    """`<count>/<window s>:<outcome>,...`, e.g. `10/600:review,30/600:block`; empty: none."""
    limits = []
    for part in filter(None, (p.strip() for p in value.split(","))):
        try:
            rate, outcome = part.split(":")
            count, window = rate.split("/")
            limit = Limit(int(count), int(float(window) * 1000), Outcome(outcome))
        except ValueError:
            raise ValueError(f"{name}: <count>/<window s>:<review|block>, got {part!r}") from None
        if limit.count < 0 or limit.window_ms <= 0 or limit.outcome is Outcome.ALLOW:
            raise ValueError(f"{name}: {part!r}: count >= 0, window > 0, review or block")
        limits.append(limit)
    return tuple(limits)


def parse_amounts(value: str, name: str) -> tuple[AmountLimit, ...]:
    """`<currency>:<minor units>:<outcome>,...`, e.g. `USD:5000000:review`; empty: none."""
    limits = []
    for part in filter(None, (p.strip() for p in value.split(","))):
        try:
            currency, minor, outcome = part.split(":")
            limit = AmountLimit(currency.upper(), int(minor), Outcome(outcome))
        except ValueError:
            shape = "<currency>:<minor units>:<review|block>"
            raise ValueError(f"{name}: {shape}, got {part!r}") from None
        allowed = limit.outcome is Outcome.ALLOW
        if len(limit.currency) != 3 or limit.minor_units <= 0 or allowed:
            raise ValueError(f"{name}: {part!r}: ISO currency, amount > 0, review or block")
        limits.append(limit)
    return tuple(limits)
