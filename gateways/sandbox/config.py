"""The sandbox's settings: shared secrets with the ingress, where webhooks go, default faults."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class SandboxConfig:
    """How the sandbox behaves; the defaults are a fast gateway that never misbehaves."""

    latency_ms: int = 0  # default latency of every emulated gateway API request
    public_url: str = "http://127.0.0.1:8100"  # where clients reach the sandbox itself
    # Webhooks go to f"{webhook_base_url}/{gateway}"; None sends none.
    webhook_base_url: str | None = None
    stripe_webhook_secret: str = "whsec_sandbox"
    square_signature_key: str = "square_signature_key_sandbox"
    square_notification_url: str | None = None  # the URL Square signs; default: the target
    paypal_webhook_id: str = "WH-SANDBOX-0001"
    seed: int | None = None  # fault injection and reordering randomness, for reproducible runs

    def __post_init__(self) -> None:
        if self.latency_ms < 0:
            raise ValueError(f"latency_ms must be >= 0, got {self.latency_ms}")

    def webhook_url(self, gateway: str) -> str | None:
        if not self.webhook_base_url:
            return None
        return f"{self.webhook_base_url.rstrip('/')}/{gateway}"
