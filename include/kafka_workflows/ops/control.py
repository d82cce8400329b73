"""Operations on running workers through Kafka, so they reach every worker process of a group.

Commands go to the control topic (`kafka-workflows.control`); each worker follows it from the
moment it starts and acts on the commands for partitions it holds (ops/apply.py), then appends an
`applied` record. The topic is therefore also the audit log: who asked, when, why, and what
happened. Worker state goes to the status topic (ops/status.py).

A topic holds whatever any producer wrote: a worker acts only on records that validate as
`CommandRecord` (strict types; skip and unblock name the partition, skip also the offset the
operator saw held); anything else is logged and counted, never raised. Pause and resume are also
kept as the group's state in the compacted status topic (key `paused/<group>`), so a worker that
starts or joins later starts paused. Dead-letter replays are recorded here too (`kind: replayed`).
"""

from __future__ import annotations

import getpass
import json
import socket
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from confluent_kafka import OFFSET_END, Consumer, TopicPartition
from confluent_kafka import Message as KafkaMessage
from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr, ValidationError, model_validator

from kafka_workflows.errors import ConfigError
from kafka_workflows.kafka.admin import REPLICATED, TopicSpec, ensure_topics
from kafka_workflows.kafka.config import client_config
from kafka_workflows.kafka.producer import RequestProducer
from kafka_workflows.kafka.reader import TopicMissingError, read_topic

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


def paused_key(group: str) -> str:
    """The status-topic key of a group's pause state."""
    return f"paused/{group}"


class CommandRecord(BaseModel):
    """A command as a worker accepts it from the control topic; anything else is ignored."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    kind: Literal["command"]
    id: StrictStr = Field(max_length=200)
    op: Literal["skip", "unblock", "pause", "resume"]
    group: StrictStr = Field(min_length=1, max_length=500)
    topic: StrictStr | None = Field(default=None, max_length=249)
    partition: StrictInt | None = Field(default=None, ge=0)
    offset: StrictInt | None = Field(default=None, ge=0)
    key: StrictStr | None = Field(default=None, max_length=100_000)  # a key's hold (a worker with concurrency)
    by: StrictStr | None = Field(default=None, max_length=500)
    reason: StrictStr = Field(default="", max_length=2000)
    at: float

    @model_validator(mode="after")
    def _names_what_it_acts_on(self) -> CommandRecord:
        if self.op in ("skip", "unblock") and (self.topic is None or self.partition is None):
            raise ValueError(f"{self.op} needs topic and partition")
        if self.op == "skip" and self.offset is None:
            raise ValueError("skip needs the offset the operator saw held")
        return self


def parse_command_record(record: Any, where: str) -> tuple[CommandRecord | None, str | None]:
    """(the command, None), or (None, why it is ignored: the fields named, never their values)."""
    try:
        return CommandRecord.model_validate(record), None
    except ValidationError as exc:
        fields = ", ".join(".".join(str(p) for p in err["loc"]) or "(record)" for err in exc.errors())
        return None, f"{where}: control record of the wrong shape ignored (fields: {fields})"


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
    if op == "skip" and offset is None:
        raise ConfigError("skip needs the offset you saw held (--offset; see `kafka-workflows blocked`): "
                          "it then skips that message and no other")
    ensure_control_topics(config)
    command = Command(uuid.uuid4().hex, op, group, topic, partition, offset, by or operator_name(), reason,
                      time.time(), key)
    follower = ControlFollower(config)  # start following before sending, so no reply is missed
    try:
        producer = RequestProducer(config)
        producer.send(CONTROL_TOPIC, command.to_json(), key=group)
        if op in ("pause", "resume"):  # the group's state, for workers that start later
            producer.send(STATUS_TOPIC, {"paused": op == "pause", "by": command.by, "reason": reason,
                                         "at": command.at, "command": command.id}, key=paused_key(group))
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
    """Reads control records produced after it was created (the past is history, not orders).

    A record that is not a JSON object is passed to `on_ignored` with where it is, and dropped.
    """

    def __init__(self, config: Mapping[str, Any], on_ignored: Callable[[str], None] | None = None) -> None:
        ensure_control_topics(config)
        self._on_ignored = on_ignored
        self._consumer = Consumer(client_config(config, **{
            "group.id": f"kw-control-{uuid.uuid4().hex}", "enable.auto.commit": False,
            "isolation.level": "read_committed"}))
        # The end as an offset, taken now: OFFSET_END would be resolved lazily, at the first fetch, and
        # a worker's quick `applied` answer produced before then would be missed (seen under load).
        _, end = self._consumer.get_watermark_offsets(TopicPartition(CONTROL_TOPIC, 0), timeout=30)
        self._consumer.assign([TopicPartition(CONTROL_TOPIC, 0, end if end >= 0 else OFFSET_END)])

    def poll(self, timeout: float = 0.0) -> list[dict[str, Any]]:
        records = []
        for msg in self._consumer.consume(50, timeout=timeout):
            if msg.error():
                continue
            record = _decode(msg)
            if record is None:
                if self._on_ignored is not None:
                    self._on_ignored(f"{CONTROL_TOPIC}[{msg.partition()}]@{msg.offset()}: not a JSON object; ignored")
                continue
            record["_where"] = f"{CONTROL_TOPIC}[{msg.partition()}]@{msg.offset()}"
            records.append(record)
        return records

    def close(self) -> None:
        self._consumer.close()


def _decode(msg: KafkaMessage) -> dict[str, Any] | None:
    try:
        record = json.loads(msg.value()) if msg.value() is not None else None
    except ValueError:
        return None
    return record if isinstance(record, dict) else None


def control_history(config: Mapping[str, Any], kinds: tuple[str, ...] = (), timeout: float = 60.0
                    ) -> list[dict[str, Any]]:
    """The control topic's records (of these kinds), oldest first, up to its end when this started."""
    found: list[dict[str, Any]] = []

    def keep(msg: KafkaMessage) -> None:
        record = _decode(msg)
        if record is not None and (not kinds or record.get("kind") in kinds):
            found.append(record)

    try:
        read_topic(config, CONTROL_TOPIC, keep, timeout=timeout)
    except TopicMissingError:
        return []
    return found


def record_replay(config: Mapping[str, Any], group: str, dead_letter_topic: str, ids: list[str],
                  by: str | None = None, reason: str = "", to: str | None = None) -> None:
    """Audit a dead-letter replay in the control topic; a later replay leaves these ids out."""
    ensure_control_topics(config)
    producer = RequestProducer(config)
    producer.send(CONTROL_TOPIC, {"kind": "replayed", "id": uuid.uuid4().hex, "op": "replay", "group": group,
                                  "dead_letter_topic": dead_letter_topic, "to": to, "ids": ids, "count": len(ids),
                                  "by": by or operator_name(), "reason": reason, "at": time.time()}, key=group)
    producer.flush()
