"""Shared fixtures: the real stack (broker, Redis, sandbox, worker, ingress) on loopback.

`PAYMENTS_TEST_BROKER` picks the broker each stack starts: `kafka` (the default: Apache Kafka
assembled from Maven Central, the production broker), `tansu` (the embedded fallback; `make
test` reruns the tests marked `tansu` on it) or `auto`. `PAYMENTS_TEST_BACKEND=containers`
(with a Docker engine) runs Kafka and Redis in testcontainers instead; everything else is
the same.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import pytest

from payments.devstack import Broker, DevOptions, DevStack
from payments.settings import load_settings

BACKEND = os.environ.get("PAYMENTS_TEST_BACKEND", "embedded")
BROKER = Broker(os.environ.get("PAYMENTS_TEST_BROKER", Broker.KAFKA.value))


@pytest.fixture(scope="session")
def external_services() -> Iterator[tuple[str | None, str | None]]:
    if BACKEND != "containers":
        yield None, None
        return
    if shutil.which("docker") is None:
        pytest.exit("PAYMENTS_TEST_BACKEND=containers needs a Docker engine", returncode=2)
    from testcontainers.kafka import KafkaContainer
    from testcontainers.redis import RedisContainer

    with KafkaContainer().with_kraft() as kafka, RedisContainer() as redis:
        host = redis.get_container_host_ip()
        port = redis.get_exposed_port(6379)
        yield kafka.get_bootstrap_server(), f"redis://{host}:{port}/0"


@contextmanager
def running_stack(
    state_dir: Path,
    external: tuple[str | None, str | None],
    env: Mapping[str, str] | None = None,
) -> Iterator[DevStack]:
    """The whole stack on free loopback ports, stopped on the way out; `env` adds PAYMENTS_*
    settings for its processes."""
    kafka, redis = external
    opts = DevOptions.on_free_ports(
        state_dir,
        external_kafka=kafka,
        external_redis=redis,
        broker=BROKER,
        env=dict(env or {}),
    )
    stack = DevStack(load_settings(), opts)
    try:
        stack.start()
        yield stack
    finally:
        stack.stop()


@contextmanager
def chaos_stack(state_dir: Path, external: tuple[str | None, str | None]) -> Iterator[DevStack]:
    """A stack whose children inherit the chaos settings (`CHAOS_ENV`: a janitor on a
    schedule of seconds) on every restart, for a module of chaos tests."""
    from payments.chaos import CHAOS_ENV

    with pytest.MonkeyPatch.context() as env:
        for key, value in CHAOS_ENV.items():
            env.setenv(key, value)
        with running_stack(state_dir, external) as own:
            yield own


@pytest.fixture(scope="session")
def stack(
    tmp_path_factory: pytest.TempPathFactory, external_services: tuple[str | None, str | None]
) -> Iterator[DevStack]:
    with running_stack(tmp_path_factory.mktemp("stack"), external_services) as s:
        yield s
