"""Test helpers that talk to the real broker: read a topic to the end, committed offsets, worker processes."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from collections import defaultdict
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient

from stack import reaper
from stack.wait import wait_for as wait_for  # re-exported: the tests wait the way the stack does

REPO = Path(__file__).resolve().parents[2]


def read_all(config: Mapping[str, Any], topic: str, expected: int | None = None,
             timeout: float = 20.0, isolation: str = "read_committed") -> list[Any]:
    """Every message of `topic` (read_committed), waiting until `expected` arrived if given."""
    consumer = Consumer({**config, "group.id": f"reader-{uuid.uuid4().hex}", "auto.offset.reset": "earliest",
                         "enable.auto.commit": False, "isolation.level": isolation,
                         "enable.partition.eof": True})
    metadata = consumer.list_topics(topic, timeout=10).topics[topic]
    consumer.assign([TopicPartition(topic, p, 0) for p in metadata.partitions])
    messages: list[Any] = []
    eof: set[int] = set()
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            msg = consumer.poll(0.2)
            if msg is None:
                pass
            elif msg.error():
                eof.add(msg.partition())
            else:
                messages.append(msg)
                eof.discard(msg.partition())
            done = len(eof) == len(metadata.partitions)
            if done and (expected is None or len(messages) >= expected):
                break
    finally:
        consumer.close()
    return messages


def committed(config: Mapping[str, Any], group: str, topic: str) -> dict[int, int]:
    consumer = Consumer({**config, "group.id": group, "enable.auto.commit": False})
    try:
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        result = consumer.committed([TopicPartition(topic, p) for p in partitions], timeout=10)
        return {tp.partition: tp.offset for tp in result}
    finally:
        consumer.close()


def group_members(config: Mapping[str, Any], group: str) -> int:
    """Members of `group` that hold at least one partition; 0 while the group's coordinator is not
    ready yet (a fresh broker answers NOT_COORDINATOR until it has loaded __consumer_offsets)."""
    admin = AdminClient(dict(config))
    try:
        description = admin.describe_consumer_groups([group])[group].result()
    except KafkaException as exc:
        if exc.args[0].code() in (KafkaError.NOT_COORDINATOR, KafkaError.COORDINATOR_LOAD_IN_PROGRESS,
                                  KafkaError.COORDINATOR_NOT_AVAILABLE):
            return 0
        raise
    return sum(1 for m in description.members if m.assignment and m.assignment.topic_partitions)


def start_worker(config: Mapping[str, Any], topic: str, group: str, handler: str, record: Path,
                 *extra: str, log: Path | None = None, env: Mapping[str, str] | None = None
                 ) -> subprocess.Popen[bytes]:
    """Run `kafka-workflows worker` as a real process; the recording handler writes to `record`."""
    full_env = {**os.environ, "KAFKA_BOOTSTRAP_SERVERS": config["bootstrap.servers"],
                "KW_TEST_RECORD": str(record),
                "PYTHONPATH": os.pathsep.join([str(REPO / "include"), str(REPO)]), **(env or {})}
    out = open(log or record.with_suffix(f".{uuid.uuid4().hex[:6]}.log"), "ab")  # noqa: SIM115
    proc = reaper.popen([sys.executable, "-m", "kafka_workflows.cli", "worker", "--topic", topic,
                         "--group", group, "--handler", handler, *extra],
                        env=full_env, stdout=out, stderr=subprocess.STDOUT)
    out.close()
    return proc


def records(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


class Runner(Protocol):
    """A Worker or a processor: run until stop(), setting `ready` once consuming."""

    def run(self, ready: threading.Event | None = None) -> Any: ...

    def stop(self, *_: object) -> None: ...


def start_in_thread(runner: Runner) -> threading.Thread:
    ready = threading.Event()
    thread = threading.Thread(target=runner.run, kwargs={"ready": ready}, daemon=True)
    thread.start()
    assert ready.wait(30), f"{type(runner).__name__} did not start"
    return thread


def stop_thread(runner: Runner, thread: threading.Thread) -> None:
    runner.stop()
    thread.join(30)
    assert not thread.is_alive(), f"{type(runner).__name__} did not stop"


def scrape_metrics(port: int, topic: str) -> dict[str, float]:
    """A worker's /metrics, summed per sample name over the series labelled with `topic`."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    samples: dict[str, float] = defaultdict(float)
    for line in text.splitlines():
        if line and not line.startswith("#") and f'topic="{topic}"' in line:
            samples[line.split("{", 1)[0]] += float(line.rsplit(" ", 1)[1])
    return samples


def librdkafka_threads() -> int:
    """This process's librdkafka threads (named rdk:main, rdk:broker…): a client not destroyed keeps its own."""
    count = 0
    for task in Path("/proc/self/task").iterdir():
        with contextlib.suppress(OSError):  # the thread ended while we looked
            count += (task / "comm").read_text().startswith("rdk:")
    return count
