"""A real Apache Kafka for the dev stack, tests, bench and chaos: assembled from Maven Central.

No Docker engine and no tarball download are possible on the project's machines, but Maven
Central is reachable, and Apache publishes there the same jars its release tarball ships.
`pom.xml` beside this file names them; Maven (the registry's own client) copies them, with
their runtime dependencies, into a per-machine cache once (`fetch`). `BrokerLayout` then runs
one KRaft node (broker and controller in one JVM) on loopback, with its data in a directory
of the stack's, so a restart resumes where it stopped.

Nothing here imports the pipeline: it is dev tooling, like the Tansu binary it sits beside.
"""

from __future__ import annotations

import base64
import fcntl
import os
import re
import shutil
import subprocess
import uuid
from dataclasses import dataclass
from pathlib import Path

KAFKA_VERSION = "3.9.1"  # = kafka.version in pom.xml and the image in docker-compose.yml
POM = Path(__file__).with_name("pom.xml")
_COMPLETE = ".complete"  # written last: a cache without it is refetched, never half-used
MIN_JAVA = 17

# From the 3.9 branch's bin/kafka-run-class.sh (KAFKA_JVM_PERFORMANCE_OPTS), minus the GC log.
JVM_OPTS = (
    "-server",
    "-XX:+UseG1GC",
    "-XX:MaxGCPauseMillis=20",
    "-XX:InitiatingHeapOccupancyPercent=35",
    "-XX:+ExplicitGCInvokesConcurrent",
    "-Djava.awt.headless=true",
)
BROKER_HEAP = ("-Xmx512M", "-Xms512M")
TOOL_HEAP = ("-Xmx256M",)


class KafkaSetupError(RuntimeError):
    """Apache Kafka cannot be assembled or started here; the message says what to do."""


def default_cache_dir() -> Path:
    """Where the jars live on this machine: `$XDG_CACHE_HOME/kafka-payments/kafka-<version>`."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "kafka-payments" / f"kafka-{KAFKA_VERSION}"


def java_major(java: str = "java") -> int | None:
    """The major version of `java`, or None when there is none."""
    path = shutil.which(java)
    if path is None:
        return None
    try:
        out = subprocess.run(
            [path, "-version"], capture_output=True, text=True, timeout=30, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return parse_java_major(out.stderr + out.stdout)


def parse_java_major(banner: str) -> int | None:
    """The major version in `java -version`'s banner: `version "17.0.15"` is 17, and the old
    scheme's `version "1.8.0_392"` is 8."""
    match = re.search(r'version "(\d+)(?:\.(\d+))?', banner)
    if match is None:
        return None
    major = int(match.group(1))
    return int(match.group(2) or 0) if major == 1 else major


def missing_tools(*, need_maven: bool = True) -> list[str]:
    """What must be installed before Apache Kafka can run here, each said exactly."""
    missing = []
    major = java_major()
    if major is None:
        missing.append(f"Java {MIN_JAVA} or newer: apt-get install openjdk-{MIN_JAVA}-jre-headless")
    elif major < MIN_JAVA:
        missing.append(
            f"Java {MIN_JAVA} or newer (found Java {major}): "
            f"apt-get install openjdk-{MIN_JAVA}-jre-headless"
        )
    if need_maven and shutil.which("mvn") is None:
        missing.append(
            "Maven 3.6 or newer (fetches Kafka from Maven Central): apt-get install maven"
        )
    return missing


def is_fetched(cache_dir: Path) -> bool:
    return (cache_dir / _COMPLETE).exists()


def fetch(cache_dir: Path | None = None, *, quiet: bool = True) -> Path:
    """The jars of Apache Kafka KAFKA_VERSION in `cache_dir/libs`, fetched once per machine.

    Maven resolves them from Maven Central into `~/.m2` and copies them here; a second call,
    from any process, finds the `.complete` mark and asks nobody. A lock keeps two stacks
    starting at once from fetching side by side.
    """
    cache_dir = cache_dir or default_cache_dir()
    if is_fetched(cache_dir):
        return cache_dir
    missing = missing_tools(need_maven=True)
    if missing:
        raise KafkaSetupError("Apache Kafka needs " + "; and ".join(missing))
    cache_dir.mkdir(parents=True, exist_ok=True)
    with (cache_dir.parent / f".{cache_dir.name}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if is_fetched(cache_dir):
            return cache_dir
        staging = cache_dir / "libs.partial"
        shutil.rmtree(staging, ignore_errors=True)
        argv = ["mvn", "-B", "-f", str(POM)]
        argv += ["-q"] if quiet else []
        argv += [
            "org.apache.maven.plugins:maven-dependency-plugin:3.6.1:copy-dependencies",
            "-DincludeScope=runtime",
            f"-DoutputDirectory={staging}",
        ]
        done = subprocess.run(argv, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            tail = "\n".join((done.stdout + done.stderr).strip().splitlines()[-15:])
            raise KafkaSetupError(
                f"Maven could not fetch Apache Kafka {KAFKA_VERSION} "
                f"(exit {done.returncode}):\n{tail}"
            )
        if not list(staging.glob(f"kafka_2.13-{KAFKA_VERSION}.jar")):
            raise KafkaSetupError(f"Maven finished but {staging} holds no kafka_2.13 jar")
        libs = cache_dir / "libs"
        shutil.rmtree(libs, ignore_errors=True)
        staging.rename(libs)
        (cache_dir / _COMPLETE).write_text(KAFKA_VERSION + "\n")
    return cache_dir


LOG4J = """\
log4j.rootLogger=INFO, stdout
log4j.appender.stdout=org.apache.log4j.ConsoleAppender
log4j.appender.stdout.layout=org.apache.log4j.PatternLayout
log4j.appender.stdout.layout.ConversionPattern=[%d] %p %m (%c)%n
log4j.logger.kafka=INFO
log4j.logger.org.apache.kafka=INFO
log4j.logger.kafka.request.logger=WARN
log4j.logger.state.change.logger=WARN
log4j.logger.kafka.log.LogCleaner=WARN
"""


@dataclass(frozen=True)
class BrokerLayout:
    """One single-node KRaft cluster in `root`: its config, its data and how to run it."""

    root: Path
    port: int
    controller_port: int
    cache_dir: Path

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def server_properties(self) -> str:
        props = {
            "process.roles": "broker,controller",
            "node.id": "1",
            "controller.quorum.voters": f"1@127.0.0.1:{self.controller_port}",
            "listeners": (
                f"PLAINTEXT://127.0.0.1:{self.port},CONTROLLER://127.0.0.1:{self.controller_port}"
            ),
            "advertised.listeners": f"PLAINTEXT://127.0.0.1:{self.port}",
            "inter.broker.listener.name": "PLAINTEXT",
            "controller.listener.names": "CONTROLLER",
            "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
            "log.dirs": str(self.data_dir),
            "num.partitions": "1",
            "offsets.topic.replication.factor": "1",
            "offsets.topic.num.partitions": "8",  # 50 by default: slow first start for nothing
            "transaction.state.log.replication.factor": "1",
            "transaction.state.log.min.isr": "1",
            "transaction.state.log.num.partitions": "4",
            # A single dev node: no reason to hold the first join for 3 s.
            "group.initial.rebalance.delay.ms": "0",
            # The pipeline creates every topic it uses, with its own partitions and policy.
            "auto.create.topics.enable": "false",
        }
        return "".join(f"{k}={v}\n" for k, v in props.items())

    def _java(self, heap: tuple[str, ...], main: str, *args: str) -> list[str]:
        libs = self.cache_dir / "libs"
        return [
            "java",
            *heap,
            *JVM_OPTS,
            f"-Dlog4j.configuration=file:{self.root / 'log4j.properties'}",
            f"-Dkafka.logs.dir={self.root / 'logs'}",
            f"-Djava.io.tmpdir={self.root / 'tmp'}",  # zstd/snappy unpack native code here
            "-cp",
            f"{libs}/*",
            main,
            *args,
        ]

    def prepare(self) -> bool:
        """Write the config; format the storage if this data directory is new. True if new."""
        for sub in ("logs", "tmp"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        (self.root / "server.properties").write_text(self.server_properties())
        (self.root / "log4j.properties").write_text(LOG4J)
        if (self.data_dir / "meta.properties").exists():
            return False
        cluster = self._cluster_id()
        argv = self._java(TOOL_HEAP, "kafka.tools.StorageTool", "format")
        argv += ["-t", cluster, "-c", str(self.root / "server.properties"), "--ignore-formatted"]
        done = subprocess.run(argv, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise KafkaSetupError(
                f"formatting {self.data_dir} failed (exit {done.returncode}): "
                + (done.stdout + done.stderr).strip()[-2000:]
            )
        return True

    def _cluster_id(self) -> str:
        """A KRaft cluster id: 16 random bytes, URL-safe base64 without padding (what
        `StorageTool random-uuid` prints), kept so a re-format after a wipe is obvious."""
        cid = "-"
        while cid.startswith("-"):  # as Kafka's own: a leading '-' would read as an option
            cid = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
        (self.root / "cluster.id").write_text(cid + "\n")
        return cid

    def broker_argv(self) -> list[str]:
        return self._java(BROKER_HEAP, "kafka.Kafka", str(self.root / "server.properties"))
