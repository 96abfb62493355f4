"""Build the configured gateway adapters by name."""

from __future__ import annotations

from domain.errors import NotSupported
from gateways.base import Gateway
from gateways.stripe import StripeGateway

KNOWN = ("stripe", "paypal", "square")


def build_gateways(
    *, stripe_api_key: str, stripe_api_base: str, timeout_s: float
) -> dict[str, Gateway]:
    return {
        "stripe": StripeGateway(
            api_key=stripe_api_key, api_base=stripe_api_base, timeout_s=timeout_s
        ),
    }


def lookup(gateways: dict[str, Gateway], name: str) -> Gateway:
    try:
        return gateways[name]
    except KeyError:
        raise NotSupported(f"gateway {name!r} is not configured") from None
