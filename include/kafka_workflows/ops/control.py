"""Operations on running workers through Kafka, so they reach every worker process of a group.

Commands go to the control topic (`kafka-workflows.control`); each worker follows it from the
moment it starts and acts on the commands for partitions it holds (ops/apply.py), then appends an
`applied` record. The topic is therefore also the audit log: who asked, when, why, and what
happened. Worker state goes to the status topic (ops/status.py).
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

from kafka_workflows.errors import ConfigError
from kafka_workflows.kafka.admin import TopicSpec, ensure_topics
from kafka_workflows.kafka.config import client_config
from kafka_workflows.kafka.producer import RequestProducer

CONTROL_TOPIC = "kafka-workflows.control"
STATUS_TOPIC = "kafka-workflows.status"
Op = Literal["skip", "unblock", "pause", "resume"]
OPS: tuple[str, ...] = ("skip", "unblock", "pause", "resume")


def ensure_control_topics(config: Mapping[str, Any]) -> None:
    ensure_topics(config, [
        TopicSpec(CONTROL_TOPIC, partitions=1, config={"retention.ms": str(30 * 24 * 3600 * 1000)}),
        TopicSpec(STATUS_TOPIC, partitions=1, config={"cleanup.policy": "compact", "segment.ms": "600000"}),
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
    key: str | None = None  # skip/unblock on a worker with concurrency: the held key

    def to_json(self) -> dict[str, Any]:
        return {"kind": "command", **self.__dict__}


def send_command(config: Mapping[str, Any], op: str, group: str, *, topic: str | None = None,
                 partition: int | None = None, offset: int | None = None, reason: str = "",
                 by: str | None = None, wait: float = 30.0, key: str | None = None
                 ) -> tuple[Command, list[dict[str, Any]]]:
    """Send an operation and wait up to `wait` seconds for the workers' `applied` records."""
    if op not in OPS:
        raise ConfigError(f"unknown operation {op!r}; expected one of {', '.join(OPS)}")
    if op in ("skip", "unblock") and (topic is None or partition is None):
        raise ConfigError(f"{op} needs --topic and --partition (see `kafka-workflows blocked`)")
    ensure_control_topics(config)
    command = Command(uuid.uuid4().hex, op, group, topic, partition, offset, by or operator_name(), reason,
                      time.time(), key)
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
