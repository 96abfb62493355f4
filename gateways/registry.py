"""Gateways by name: adapter lookup, and each gateway's webhook interpreter.

Adapter modules are imported on first use, so a gateway that is not enabled never loads
its SDK.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from functools import cache
from typing import Any

from domain.errors import NotSupported
from gateways.base import Gateway, WebhookEffect

KNOWN = ("stripe", "paypal", "square")

Interpreter = Callable[[str, Mapping[str, Any]], WebhookEffect | None]


def lookup(gateways: Mapping[str, Gateway], name: str) -> Gateway:
    try:
        return gateways[name]
    except KeyError:
        raise NotSupported(f"gateway {name!r} is not configured") from None


@cache
def _interpreter(gateway: str) -> Interpreter | None:
    if gateway not in KNOWN:
        return None
    module = importlib.import_module(f"gateways.{gateway}")
    interpreter: Interpreter = module.interpret_event
    return interpreter


def interpret(gateway: str, event_type: str, payload: Mapping[str, Any]) -> WebhookEffect | None:
    """Our reading of a verified webhook; None when we do not act on its type."""
    interpreter = _interpreter(gateway)
    return interpreter(event_type, payload) if interpreter else None
