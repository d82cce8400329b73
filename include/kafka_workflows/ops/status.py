"""Worker status: each worker publishes its state to the compacted status topic; anyone reads it.

`kafka-workflows.status` is keyed `<group>/<worker>`: assigned partitions, holds (blocked or
waiting, with the held message's key, offset, failures and error), pause state and counters. A
worker that stops writes a tombstone. Status is advisory: it is not flushed before offsets.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Mapping
from typing import Any

from confluent_kafka import Consumer, TopicPartition

from kafka_workflows.kafka.config import client_config
from kafka_workflows.kafka.producer import RequestProducer
from kafka_workflows.ops.control import STATUS_TOPIC, ensure_control_topics


class StatusPublisher:
    """Publishes one worker's status at most every `interval` seconds, or at once after `soon()`."""

    def __init__(self, producer: Callable[[], RequestProducer], group: str, member: str, interval: float) -> None:
        self._producer = producer
        self.key = f"{group}/{member}"
        self.interval = interval
        self._due = 0.0

    def soon(self) -> None:
        """Something changed (a hold, an assignment, an operation): publish at the next chance."""
        self._due = 0.0

    def publish(self, status: Callable[[], Mapping[str, Any]], final: bool = False) -> None:
        now = time.monotonic()
        if not final and now < self._due:
            return
        self._due = now + self.interval
        if final:
            self._producer().tombstone(STATUS_TOPIC, self.key)  # a stopped worker leaves the status list
        else:
            self._producer().send(STATUS_TOPIC, dict(status()), key=self.key)


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
