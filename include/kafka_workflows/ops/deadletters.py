"""Dead letters: list and inspect them with filters, and replay a selection to the original topic.

A replayed message starts over (kw-attempt 1, no error headers) and carries kw-replayed-from =
`<dlq topic>:<partition>:<offset>`, so if it fails again it lands in the dead-letter topic once
more, visibly a replay, and is never replayed automatically. Its key and the headers other
producers wrote are sent back byte for byte.

Listing reads up to the end offsets taken when it starts. A replay is recorded in the control
topic (`kind: replayed`, with who, when and the ids), and a later replay of the same selection
leaves out what was replayed already unless asked `again`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from confluent_kafka import Message as KafkaMessage

from kafka_workflows import headers as h
from kafka_workflows.errors import ConfigError
from kafka_workflows.kafka.producer import RequestProducer
from kafka_workflows.kafka.reader import TopicMissingError, read_topic
from kafka_workflows.ops.control import control_history, record_replay
from kafka_workflows.retry.provenance import SKIPPED_BY, replay_headers
from kafka_workflows.retry.topics import dead_letter_topic


@dataclass(frozen=True)
class DeadLetter:
    topic: str
    partition: int
    offset: int
    key: str | None
    value: bytes
    headers: dict[str, str] = field(default_factory=dict)
    dead_lettered_at: datetime | None = None
    raw_key: bytes | None = None  # the key as it is on the wire
    wire_headers: dict[str, bytes] = field(default_factory=dict)  # the headers as they are on the wire

    @property
    def id(self) -> str:
        return f"{self.topic}:{self.partition}:{self.offset}"

    @property
    def error_type(self) -> str:
        return self.headers.get(h.ERROR_TYPE, "")

    @property
    def original_topic(self) -> str:
        return self.headers[h.ORIGINAL_TOPIC]

    def summary(self) -> dict[str, Any]:
        return {"id": self.id, "key": self.key, "error_type": self.error_type,
                "error": self.headers.get(h.ERROR_MESSAGE, ""), "attempt": self.headers.get(h.ATTEMPT),
                "original": f"{self.headers.get(h.ORIGINAL_TOPIC)}[{self.headers.get(h.ORIGINAL_PARTITION)}]"
                            f"@{self.headers.get(h.ORIGINAL_OFFSET)}",
                "dead_lettered_at": self.dead_lettered_at.isoformat() if self.dead_lettered_at else None,
                "replayed_from": self.headers.get(h.REPLAYED_FROM), "skipped_by": self.headers.get(SKIPPED_BY),
                "value": self.value[:200].decode("utf-8", "replace")}


@dataclass(frozen=True)
class Filter:
    key: str | None = None
    error_type: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    ids: frozenset[str] = frozenset()

    def __post_init__(self) -> None:
        if self.since and self.until and self.since > self.until:
            raise ConfigError(f"--since {self.since.isoformat()} is after --until {self.until.isoformat()}")

    def matches(self, letter: DeadLetter) -> bool:
        at = letter.dead_lettered_at
        return ((self.key is None or letter.key == self.key)
                and (self.error_type is None or letter.error_type == self.error_type)
                and (self.since is None or (at is not None and at >= self.since))
                and (self.until is None or (at is not None and at <= self.until))
                and (not self.ids or letter.id in self.ids))


def parse_time(text: str, option: str) -> datetime:
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError as exc:
        raise ConfigError(f"{option}: {text!r} is not an ISO date-time (e.g. 2026-11-27T10:00:00Z)") from exc
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def list_dead_letters(config: Mapping[str, Any], topic: str, group: str,
                      where: Filter | None = None, timeout: float = 60.0) -> list[DeadLetter]:
    """Every dead letter of (topic, group) that matches, read to the end the topic had when this started."""
    where = where or Filter()
    name = dead_letter_topic(topic, group)
    found: list[DeadLetter] = []

    def keep(msg: KafkaMessage) -> None:
        kind, ts = msg.timestamp()
        raw_key = msg.key()
        letter = DeadLetter(name, msg.partition(), msg.offset(),
                            raw_key.decode("utf-8", "replace") if raw_key is not None else None,
                            msg.value() or b"", h.decode(msg.headers()),
                            datetime.fromtimestamp(ts / 1000, UTC) if kind else None,
                            raw_key, h.wire(msg.headers()))
        if where.matches(letter):
            found.append(letter)

    try:
        read_topic(config, name, keep, timeout=timeout)
    except TopicMissingError as exc:
        raise ConfigError(f"dead-letter topic {name!r} does not exist (topic {topic!r}, group {group!r})") from exc
    return sorted(found, key=lambda d: (d.partition, d.offset))


def replayed_ids(config: Mapping[str, Any], dead_letter_topic_name: str) -> set[str]:
    """Ids of the dead letters of this topic that a replay already sent back (from the control topic)."""
    ids: set[str] = set()
    for record in control_history(config, kinds=("replayed",)):
        if record.get("dead_letter_topic") == dead_letter_topic_name and isinstance(record.get("ids"), list):
            ids.update(str(i) for i in record["ids"])
    return ids


def replay(config: Mapping[str, Any], topic: str, group: str, where: Filter | None = None,
           dry_run: bool = False, again: bool = False, by: str | None = None) -> list[DeadLetter]:
    """Send the matching dead letters back to their original topic; returns what moved (or would).

    Dead letters a replay already sent back are left out unless `again`; `by` (default: the OS
    user) is recorded with the replay in the control topic.
    """
    letters = list_dead_letters(config, topic, group, where)
    if not again and letters:
        done = replayed_ids(config, dead_letter_topic(topic, group))
        letters = [letter for letter in letters if letter.id not in done]
    if dry_run or not letters:
        return letters
    replay_letters(config, letters, topic)
    record_replay(config, group, dead_letter_topic(topic, group), [letter.id for letter in letters], by)
    return letters


def replay_letters(config: Mapping[str, Any], letters: list[DeadLetter], topic: str | None = None) -> None:
    """Send `letters` back to their original topic (`topic` when a letter does not name it), flushed."""
    producer = RequestProducer(config)
    for letter in letters:
        target = letter.headers.get(h.ORIGINAL_TOPIC, topic)
        if target is None:
            raise ConfigError(f"dead letter {letter.id} has no {h.ORIGINAL_TOPIC} header: nowhere to replay it")
        producer.send(target, letter.value, key=letter.raw_key, headers=replay_headers(letter.wire_headers, letter.id),
                      raw=True)
    producer.flush()
