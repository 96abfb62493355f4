"""Routing rules: which gateways may take a payment, in which order. Pure.

A rule names a currency (or `*`), a payment method type (or `*`) and gateways in priority
order. The first rule matching the payment decides; gateways that are not enabled, or for
which the client gave no token, are skipped. The first gateway left is asked first; the
others are fallbacks, used only when the one before provably did not charge (its circuit
refused the call before anything was sent). A client that names a gateway gets that gateway
alone.

Written as `PAYMENTS_ROUTING_RULES`, `;`-separated: `<currency>:<method>=<gw>><gw>...`, e.g.
`JPY:card=square>stripe;*:card=stripe>square>paypal`.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from dataclasses import dataclass

__all__ = ["DEFAULT_RULES", "Rule", "parse_rules", "route"]

DEFAULT_RULES = "*:card=stripe>square>paypal"


@dataclass(frozen=True, slots=True)
class Rule:
    currency: str  # ISO 4217, or "*"
    method: str  # "card", or "*"
    gateways: tuple[str, ...]

    def matches(self, currency: str, method: str) -> bool:
        return self.currency in ("*", currency) and self.method in ("*", method)


def parse_rules(text: str, known: Collection[str]) -> tuple[Rule, ...]:
    """Rules from their written form; a malformed rule or an unknown gateway is an error."""
    rules = []
    for written in filter(None, (part.strip() for part in text.split(";"))):
        where, sep, order = written.partition("=")
        currency, colon, method = where.partition(":")
        gateways = tuple(g.strip() for g in order.split(">") if g.strip())
        if not (sep and colon and currency.strip() and method.strip() and gateways):
            raise ValueError(f"routing rule {written!r}: want <currency>:<method>=<gw>><gw>")
        unknown = sorted(set(gateways) - set(known))
        if unknown:
            raise ValueError(f"routing rule {written!r}: unknown gateways {unknown}")
        if len(set(gateways)) != len(gateways):
            raise ValueError(f"routing rule {written!r}: a gateway is named twice")
        rules.append(Rule(currency.strip().upper(), method.strip(), gateways))
    if not rules:
        raise ValueError("no routing rules")
    return tuple(rules)


def route(
    rules: Iterable[Rule],
    *,
    currency: str,
    method: str,
    enabled: Collection[str],
    tokens: Collection[str] | None,
) -> tuple[str, ...]:
    """The gateways to try, in order; empty when no rule routes the payment anywhere.

    `tokens`: the gateways the client gave a token for, or None for a token every gateway
    takes (a network token or a vault id shared by them)."""
    for rule in rules:
        if rule.matches(currency, method):
            return tuple(
                g for g in rule.gateways if g in enabled and (tokens is None or g in tokens)
            )
    return ()
