"""Operations on running workers through Kafka, so they reach every worker process of a group.

Commands go to the control topic (`kafka-workflows.control`); each worker follows it from the
moment it starts and acts on the commands for partitions it holds, then appends an `applied`
record. The topic is therefore also the audit log: who asked, when, why, and what happened.
Workers publish their state (assigned, blocked and waiting partitions, paused) to the compacted
status topic (`kafka-workflows.status`), which `blocked_partitions()` reads.
"""

from __future__ import annotations

import getpass
import json
import socket
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from confluent_kafka import OFFSET_END, Consumer, TopicPartition

from kafka_workflows.config import client_config
from kafka_workflows.errors import ConfigError
from kafka_workflows.producer import RequestProducer
from kafka_workflows.topics import REPLICATED, TopicSpec, ensure_topics

CONTROL_TOPIC = "kafka-workflows.control"
STATUS_TOPIC = "kafka-workflows.status"
Op = Literal["skip", "unblock", "pause", "resume"]
OPS: tuple[str, ...] = ("skip", "unblock", "pause", "resume")


def ensure_control_topics(config: Mapping[str, Any]) -> None:
    ensure_topics(config, [
        TopicSpec(CONTROL_TOPIC, partitions=1, replication_factor=REPLICATED,
                  config={"retention.ms": str(30 * 24 * 3600 * 1000)}),
        TopicSpec(STATUS_TOPIC, partitions=1, replication_factor=REPLICATED,
                  config={"cleanup.policy": "compact", "segment.ms": "600000"}),
    ])


def operator_name() -> str:
    return f"{getpass.getuser()}@{socket.gethostname()}"


@dataclass(frozen=True)
class Command:
    id: str
    op: str
    group: str
    topic: str | None
    partition: int | None
    offset: int | None
    by: str
    reason: str
    at: float

    def to_json(self) -> dict[str, Any]:
        return {"kind": "command", **self.__dict__}


def send_command(config: Mapping[str, Any], op: str, group: str, *, topic: str | None = None,
                 partition: int | None = None, offset: int | None = None, reason: str = "",
                 by: str | None = None, wait: float = 30.0) -> tuple[Command, list[dict[str, Any]]]:
    """Send an operation and wait up to `wait` seconds for the workers' `applied` records."""
    if op not in OPS:
        raise ConfigError(f"unknown operation {op!r}; expected one of {', '.join(OPS)}")
    if op in ("skip", "unblock") and (topic is None or partition is None):
        raise ConfigError(f"{op} needs --topic and --partition (see `kafka-workflows blocked`)")
    ensure_control_topics(config)
    command = Command(uuid.uuid4().hex, op, group, topic, partition, offset, by or operator_name(), reason,
                      time.time())
    follower = ControlFollower(config)  # start following before sending, so no reply is missed
    try:
        producer = RequestProducer(config)
        producer.send(CONTROL_TOPIC, command.to_json(), key=group)
        producer.flush()
        applied: list[dict[str, Any]] = []
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            for record in follower.poll(0.2):
                if record.get("kind") == "applied" and record.get("command") == command.id:
                    applied.append(record)
            # skip/unblock act on one partition: one owner answers. pause/resume: every member may.
            if applied and (op in ("skip", "unblock") or time.monotonic() > deadline - wait + 3):
                break
        return command, applied
    finally:
        follower.close()


class ControlFollower:
    """Reads control records produced after it was created (the past is history, not orders)."""

    def __init__(self, config: Mapping[str, Any]) -> None:
        ensure_control_topics(config)
        self._consumer = Consumer(client_config(config, **{
            "group.id": f"kw-control-{uuid.uuid4().hex}", "enable.auto.commit": False,
            "isolation.level": "read_committed"}))
        self._consumer.assign([TopicPartition(CONTROL_TOPIC, 0, OFFSET_END)])

    def poll(self, timeout: float = 0.0) -> list[dict[str, Any]]:
        records = []
        for msg in self._consumer.consume(50, timeout=timeout):
            if msg.error() or msg.value() is None:
                continue
            try:
                records.append(json.loads(msg.value()))
            except ValueError:
                continue
        return records

    def close(self) -> None:
        self._consumer.close()


def read_statuses(config: Mapping[str, Any], max_age: float = 30.0) -> list[dict[str, Any]]:
    """The latest status of every live worker (those that reported within `max_age` seconds)."""
    ensure_control_topics(config)
    consumer = Consumer(client_config(config, **{
        "group.id": f"kw-status-{uuid.uuid4().hex}", "enable.auto.commit": False,
        "auto.offset.reset": "earliest", "enable.partition.eof": True}))
    try:
        low, high = consumer.get_watermark_offsets(TopicPartition(STATUS_TOPIC, 0), timeout=10)
        latest: dict[str, dict[str, Any] | None] = {}
        if high > low:
            consumer.assign([TopicPartition(STATUS_TOPIC, 0, low)])
            while True:
                msg = consumer.poll(5)
                if msg is None:
                    break
                if msg.error():
                    if msg.offset() >= high - 1 or msg.error().code() == -191:  # _PARTITION_EOF
                        break
                    continue
                latest[msg.key().decode()] = json.loads(msg.value()) if msg.value() else None
                if msg.offset() >= high - 1:
                    break
    finally:
        consumer.close()
    now = time.time()
    return [s for s in latest.values() if s is not None and now - s.get("at", 0) <= max_age]


def blocked_partitions(config: Mapping[str, Any], group: str | None = None) -> list[dict[str, Any]]:
    """Every partition a live worker holds blocked, with its worker, offset, failures and error."""
    rows = []
    for status in read_statuses(config):
        if group is not None and status["group"] != group:
            continue
        for held in status.get("held", []):
            if held["kind"] == "blocked":
                rows.append({"group": status["group"], "worker": status["worker"], **held})
    return sorted(rows, key=lambda r: (r["group"], r["topic"], r["partition"]))
