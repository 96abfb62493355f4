"""Build one verifier per enabled gateway from settings (importing only those)."""

from __future__ import annotations

from collections.abc import Callable

import httpx

from ingress.webhooks.base import WebhookVerifier
from payments.settings import Settings


def _stripe(settings: Settings, http: httpx.AsyncClient) -> WebhookVerifier:
    from ingress.webhooks.stripe import StripeVerifier

    return StripeVerifier(
        secret=settings.stripe_webhook_secret.get_secret_value(),
        tolerance_s=settings.stripe_webhook_tolerance_s,
    )


def _paypal(settings: Settings, http: httpx.AsyncClient) -> WebhookVerifier:
    from ingress.webhooks.paypal import PayPalVerifier

    return PayPalVerifier(
        webhook_id=settings.paypal_webhook_id,
        allowed_cert_hosts=settings.paypal_cert_host_set,
        tolerance_s=settings.paypal_webhook_tolerance_s,
        http=http,
    )


def _square(settings: Settings, http: httpx.AsyncClient) -> WebhookVerifier:
    from ingress.webhooks.square import SquareVerifier

    return SquareVerifier(
        signature_key=settings.square_signature_key.get_secret_value(),
        notification_url=settings.square_webhook_url,
    )


BUILDERS: dict[str, Callable[[Settings, httpx.AsyncClient], WebhookVerifier]] = {
    "stripe": _stripe,
    "paypal": _paypal,
    "square": _square,
}


def build_verifiers(settings: Settings, http: httpx.AsyncClient) -> dict[str, WebhookVerifier]:
    return {
        name: build(settings, http) for name, build in BUILDERS.items() if name in settings.gateways
    }
