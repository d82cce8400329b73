"""A real Apache Kafka KRaft node (broker+controller) run from Maven-resolved jars.

`ensure_jars()` asks Maven (stack/kafka/pom.xml) for kafka_2.13 and a log4j2 backend once and
caches them in `.state/kafka/libs`; `Broker` formats a data folder and runs `kafka.Kafka` with
`java` on loopback, waits until it answers, and stops it with SIGTERM (controlled shutdown) or
kills it with SIGKILL. Alone it is a single-node cluster; `stack.cluster.Cluster` runs three of
them as one quorum. Standard library only, so tests, the stack and CI all share it.
"""

from __future__ import annotations

import argparse
import base64
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

from stack import reaper

REPO = Path(__file__).resolve().parent.parent
POM = REPO / "stack" / "kafka" / "pom.xml"
LIBS = REPO / ".state" / "kafka" / "libs"
_STAMP = LIBS / ".pom-stamp"

LOG4J2 = """\
status = warn
appender.file.type = File
appender.file.name = file
appender.file.fileName = {log}
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = {level}
rootLogger.appenderRef.file.ref = file
"""


# The local broker shares its machine with Airflow, the workers and the tests (2 cores in CI), so it runs
# with the JVM's small-machine settings: the serial collector (no concurrent GC threads or G1 barriers
# for a 512 MB heap) and only the C1 compiler. C2 spent 1-2 s of CPU compiling during each 1M-row import
# even on a warm broker, more than its faster code saves a broker this busy (bench/import_e2e.py, README).
# KW_BROKER_JVM_OPTIONS replaces them, e.g. with Kafka's own "-XX:+UseG1GC" for a long soak.
JVM_OPTIONS = ("-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1")
JVM_OPTIONS_VAR = "KW_BROKER_JVM_OPTIONS"


class BrokerError(RuntimeError):
    pass


def jvm_options(env: dict[str, str] | None = None) -> list[str]:
    """The broker JVM's GC and compiler options: JVM_OPTIONS, or KW_BROKER_JVM_OPTIONS split on spaces."""
    value = (os.environ if env is None else env).get(JVM_OPTIONS_VAR, "").strip()
    return value.split() if value else list(JVM_OPTIONS)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def ensure_jars() -> Path:
    """Resolve the broker jars with Maven unless the cached copy matches the POM."""
    stamp = POM.read_bytes()
    if _STAMP.exists() and _STAMP.read_bytes() == stamp and any(LIBS.glob("kafka_2.13-*.jar")):
        return LIBS
    if shutil.which("mvn") is None or shutil.which("java") is None:
        raise BrokerError("Java 17+ and Maven are needed to run the local Kafka broker (mvn/java not on PATH)")
    if LIBS.exists():
        shutil.rmtree(LIBS)
    cmd = [
        "mvn", "-B", "-q", "-f", str(POM), "dependency:copy-dependencies",
        f"-DoutputDirectory={LIBS}", "-DincludeScope=runtime",
    ]
    result = subprocess.run(cmd, capture_output=True, text=True)
    if result.returncode != 0:
        raise BrokerError(f"Maven could not resolve the Kafka jars:\n{result.stdout[-4000:]}{result.stderr[-4000:]}")
    _STAMP.write_bytes(stamp)
    return LIBS


def _cluster_id() -> str:
    """Kafka's form of a cluster id. One in 64 starts with '-', so pass it as --cluster-id=<id>."""
    return base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")


def _wait_for_port(port: int, proc: subprocess.Popen[bytes], timeout: float, log: Path) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise BrokerError(f"Kafka exited with code {proc.returncode}; see {log}:\n{_tail(log)}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.2)
    raise BrokerError(f"Kafka did not accept connections on 127.0.0.1:{port} within {timeout:.0f}s; see {log}")


def _tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


class Broker:
    """One KRaft node on loopback. Its data lives in `data_dir`; reuse keeps topics across starts."""

    def __init__(self, data_dir: Path, port: int = 9092, controller_port: int | None = None,
                 heap: str = "512m", log_level: str = "WARN", *, node_id: int = 1,
                 voters: str | None = None, cluster_size: int = 1, cluster_id: str | None = None,
                 extra: dict[str, str] | None = None) -> None:
        self.data_dir = Path(data_dir)
        self.port = port
        self.controller_port = controller_port or free_port()
        self.heap = heap
        self.log_level = log_level
        self.node_id = node_id
        self.voters = voters  # controller.quorum.voters of a cluster; None: this node alone
        self.cluster_size = cluster_size
        self.cluster_id = cluster_id
        self.extra = dict(extra or {})  # server.properties over ours (e.g. a bench's session timeouts)
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap_servers(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def log_file(self) -> Path:
        return self.data_dir / "server.log"

    def _properties(self) -> str:
        # Replicas of every topic: 3 on a cluster of 3 or more, never more than the cluster has;
        # writes need 2 in sync (acks=all), so one node may be down without stopping anything.
        replicas = min(3, self.cluster_size)
        in_sync = min(2, self.cluster_size)
        settings = {
            "process.roles": "broker,controller",
            "node.id": str(self.node_id),
            "controller.quorum.voters": self.voters or f"{self.node_id}@127.0.0.1:{self.controller_port}",
            "listeners": f"PLAINTEXT://127.0.0.1:{self.port},CONTROLLER://127.0.0.1:{self.controller_port}",
            "advertised.listeners": f"PLAINTEXT://127.0.0.1:{self.port}",
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "PLAINTEXT",
            "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
            "log.dirs": str(self.data_dir / "logs"),
            "num.partitions": "3",
            "auto.create.topics.enable": "false",
            "offsets.topic.replication.factor": str(replicas),
            "offsets.topic.num.partitions": "10",
            "transaction.state.log.replication.factor": str(replicas),
            "transaction.state.log.min.isr": str(in_sync),
            "transaction.state.log.num.partitions": "10",
            "share.coordinator.state.topic.replication.factor": str(replicas),
            "share.coordinator.state.topic.min.isr": str(in_sync),
            "min.insync.replicas": str(in_sync),
            "default.replication.factor": str(replicas),
            "group.initial.rebalance.delay.ms": "0",
            # KIP-848 groups (group.protocol=consumer): the broker owns the session timeout. A
            # member that stops heartbeating loses its partitions after 4 s, not Kafka's 45 s
            # (bench/failover.py: p50 about 4 s from a SIGKILL to a survivor handling them).
            "group.consumer.min.session.timeout.ms": "3000",
            "group.consumer.session.timeout.ms": "4000",
            "group.consumer.min.heartbeat.interval.ms": "500",
            "group.consumer.heartbeat.interval.ms": "1000",
            # A restarted node rejoins the ISR soon after it caught up, and a killed one loses its
            # leaderships after 4 s without a heartbeat (Kafka's default: 9 s).
            "replica.lag.time.max.ms": "10000",
            "broker.heartbeat.interval.ms": "1000",
            "broker.session.timeout.ms": "4000",
            # Compaction visible within seconds in tests.
            "log.cleaner.backoff.ms": "500",
            "log.cleaner.min.compaction.lag.ms": "0",
            "log.retention.check.interval.ms": "5000",
            **self.extra,
        }
        return "".join(f"{k}={v}\n" for k, v in settings.items())

    def start(self, timeout: float = 90.0) -> Broker:
        self.launch()
        self.wait_ready(timeout)
        return self

    def launch(self) -> None:
        """Format the data folder (first time) and start the JVM; `wait_ready` waits for it."""
        libs = ensure_jars()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        props = self.data_dir / "server.properties"
        formatted = (self.data_dir / "logs" / "meta.properties").exists()
        if formatted and self.voters is None:
            # Keep the controller port the existing quorum was formatted with.
            old = dict(line.split("=", 1) for line in props.read_text().splitlines() if "=" in line)
            self.controller_port = int(old["controller.quorum.voters"].rsplit(":", 1)[1])
        props.write_text(self._properties())
        log4j = self.data_dir / "log4j2.properties"
        log4j.write_text(LOG4J2.format(log=self.log_file, level=self.log_level))
        java = [
            "java", f"-Xmx{self.heap}", "-Xms128m", *jvm_options(), "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={log4j}", f"-Dkafka.logs.dir={self.data_dir}",
            "-cp", f"{libs}/*",
        ]
        if not formatted:
            fmt = subprocess.run(
                [*java, "kafka.tools.StorageTool", "format", f"--cluster-id={self.cluster_id or _cluster_id()}",
                 "-c", str(props)],
                capture_output=True, text=True,
            )
            if fmt.returncode != 0:
                raise BrokerError(f"formatting Kafka storage failed:\n{fmt.stdout}{fmt.stderr}")
        out = open(self.data_dir / "stdout.log", "ab")  # noqa: SIM115 - lives as long as the process
        self.proc = subprocess.Popen([*java, "kafka.Kafka", str(props)], stdout=out, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        reaper.watch(self.proc.pid)  # stopped with whoever started it, however that ends
        out.close()

    def wait_ready(self, timeout: float = 90.0) -> None:
        assert self.proc is not None, "launch() first"
        _wait_for_port(self.port, self.proc, timeout, self.log_file)
        self._wait_until_ready(timeout)

    def _wait_until_ready(self, timeout: float) -> None:
        """The port opens before the broker has registered; ask for metadata until a broker answers."""
        try:
            from confluent_kafka.admin import AdminClient
        except ImportError:  # the stack runner may call this before the venv exists
            return
        admin = AdminClient({"bootstrap.servers": self.bootstrap_servers})
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if self.node_id in admin.list_topics(timeout=2).brokers:
                    return
            except Exception:  # noqa: BLE001 - not ready yet
                time.sleep(0.3)
        raise BrokerError(f"Kafka on {self.bootstrap_servers} never reported a broker; see {self.log_file}")

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        """SIGKILL: no controlled shutdown, no flush; the way a machine dies."""
        if self.running:
            assert self.proc is not None
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
            reaper.unwatch(self.proc.pid)

    def terminate(self) -> None:
        """SIGTERM without waiting: a controlled shutdown begins."""
        if self.running:
            assert self.proc is not None
            os.killpg(self.proc.pid, signal.SIGTERM)

    def stop(self, timeout: float = 30.0) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        reaper.stop_session(self.proc, timeout)

    def __enter__(self) -> Broker:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Run a single-node Kafka broker on loopback.")
    sub = parser.add_subparsers(dest="cmd", required=True)
    sub.add_parser("jars", help="resolve the Kafka jars with Maven (cached)")
    run = sub.add_parser("run", help="run a broker in the foreground until Ctrl-C")
    run.add_argument("--port", type=int, default=9092)
    run.add_argument("--dir", type=Path, default=REPO / ".state" / "kafka" / "data")
    args = parser.parse_args(argv)
    if args.cmd == "jars":
        print(ensure_jars())
        return 0
    broker = Broker(args.dir, port=args.port).start()
    print(f"Kafka is up on {broker.bootstrap_servers} (data: {args.dir}); Ctrl-C stops it", flush=True)
    try:
        signal.sigwait({signal.SIGINT, signal.SIGTERM})
    finally:
        broker.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
