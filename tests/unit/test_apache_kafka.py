"""The pure parts of the Apache Kafka tooling: its config, Java detection, broker choice."""

from __future__ import annotations

from pathlib import Path

import pytest

from payments import apache_kafka
from payments.apache_kafka import BrokerLayout, parse_java_major
from payments.devstack import Broker, choose_broker
from payments.procs import StartupError


def _props(layout: BrokerLayout) -> dict[str, str]:
    lines = layout.server_properties().splitlines()
    return dict(line.split("=", 1) for line in lines)


def test_one_kraft_node_on_loopback_with_its_data_in_the_stack(tmp_path: Path) -> None:
    layout = BrokerLayout(root=tmp_path, port=29092, controller_port=29093, cache_dir=tmp_path)
    props = _props(layout)
    assert props["process.roles"] == "broker,controller"
    assert props["controller.quorum.voters"] == "1@127.0.0.1:29093"
    assert props["listeners"] == "PLAINTEXT://127.0.0.1:29092,CONTROLLER://127.0.0.1:29093"
    assert props["advertised.listeners"] == "PLAINTEXT://127.0.0.1:29092"
    assert props["log.dirs"] == str(tmp_path / "data")
    assert props["auto.create.topics.enable"] == "false"  # the pipeline creates its topics
    assert props["offsets.topic.replication.factor"] == "1"
    assert layout.bootstrap == "127.0.0.1:29092"


def test_the_broker_runs_as_java_with_the_cached_jars(tmp_path: Path) -> None:
    layout = BrokerLayout(root=tmp_path, port=1, controller_port=2, cache_dir=tmp_path / "c")
    argv = layout.broker_argv()
    assert argv[0] == "java"  # no shell in between: SIGTERM reaches the JVM itself
    assert argv[argv.index("-cp") + 1] == f"{tmp_path / 'c' / 'libs'}/*"
    assert argv[-2:] == ["kafka.Kafka", str(tmp_path / "server.properties")]


@pytest.mark.parametrize(
    ("banner", "major"),
    [
        ('openjdk version "17.0.15" 2025-04-15', 17),
        ('openjdk version "21" 2023-09-19', 21),
        ('java version "1.8.0_392"', 8),
        ("no java here", None),
    ],
)
def test_java_version_banner(banner: str, major: int | None) -> None:
    assert parse_java_major(banner) == major


def test_tansu_when_asked_or_when_kafka_cannot_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert choose_broker(Broker.TANSU, tmp_path)[0] is Broker.TANSU
    need = "Java 17 or newer: apt-get install openjdk-17-jre-headless"
    monkeypatch.setattr(apache_kafka, "missing_tools", lambda need_maven: [need])
    broker, why = choose_broker(Broker.AUTO, tmp_path)
    assert broker is Broker.TANSU and need in why
    with pytest.raises(StartupError, match="apt-get install openjdk-17"):
        choose_broker(Broker.KAFKA, tmp_path)


def test_kafka_when_java_and_maven_are_here(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(apache_kafka, "missing_tools", lambda need_maven: [])
    monkeypatch.setattr(apache_kafka, "java_major", lambda: 17)
    broker, why = choose_broker(Broker.AUTO, tmp_path)
    assert broker is Broker.KAFKA and why == "auto: Java 17 and Maven found"
    assert choose_broker("kafka", tmp_path)[0] is Broker.KAFKA


def test_fetch_asks_nobody_once_the_jars_are_cached(tmp_path: Path) -> None:
    (tmp_path / ".complete").write_text(apache_kafka.KAFKA_VERSION)
    assert apache_kafka.fetch(tmp_path) == tmp_path  # no mvn run: it would fail here


def test_the_pom_pins_the_same_version_as_the_code() -> None:
    pom = apache_kafka.POM.read_text()
    assert f"<kafka.version>{apache_kafka.KAFKA_VERSION}</kafka.version>" in pom
    compose = (Path(__file__).parents[2] / "docker-compose.yml").read_text()
    assert f"image: apache/kafka:{apache_kafka.KAFKA_VERSION}" in compose


def test_a_cluster_id_never_reads_as_an_option(tmp_path: Path) -> None:
    layout = BrokerLayout(root=tmp_path, port=1, controller_port=2, cache_dir=tmp_path)
    ids = {layout._cluster_id() for _ in range(2000)}  # ~1 in 64 would start with '-'
    assert len(ids) == 2000
    assert not any(cid.startswith("-") for cid in ids)
    assert all(len(cid) == 22 for cid in ids)  # 16 bytes, base64 without padding
