"""Dead letters: list and inspect them with filters, and replay a selection to the original topic.

A replayed message starts over (kw-attempt 1, no error headers) and carries kw-replayed-from =
`<dlq topic>:<partition>:<offset>`, so if it fails again it lands in the dead-letter topic once
more, visibly a replay, and is never replayed automatically.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from confluent_kafka import Consumer, TopicPartition

from kafka_workflows import headers as h
from kafka_workflows.config import client_config
from kafka_workflows.errors import ConfigError
from kafka_workflows.producer import RequestProducer
from kafka_workflows.topics import dead_letter_topic

_DROPPED_ON_REPLAY = {h.RETRY_AT, h.ORIGINAL_TOPIC, h.ORIGINAL_PARTITION, h.ORIGINAL_OFFSET, h.CONSUMER_GROUP,
                      h.ERROR_TYPE, h.ERROR_MESSAGE, h.FIRST_FAILED_AT, h.REPLAYED_FROM, h.ATTEMPT,
                      "kw-skipped-by", "kw-skip-reason", "kw-skipped-at"}


@dataclass(frozen=True)
class DeadLetter:
    topic: str
    partition: int
    offset: int
    key: str | None
    value: bytes
    headers: dict[str, str] = field(default_factory=dict)
    dead_lettered_at: datetime | None = None

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
                "replayed_from": self.headers.get(h.REPLAYED_FROM), "skipped_by": self.headers.get("kw-skipped-by"),
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
                      where: Filter | None = None) -> list[DeadLetter]:
    """Every dead letter of (topic, group) that matches, read to the current end of the topic."""
    where = where or Filter()
    name = dead_letter_topic(topic, group)
    consumer = Consumer(client_config(config, **{
        "group.id": f"kw-dlq-reader-{uuid.uuid4().hex}", "enable.auto.commit": False,
        "isolation.level": "read_committed"}))
    try:
        metadata = consumer.list_topics(name, timeout=10).topics.get(name)
        if metadata is None or metadata.error is not None:
            raise ConfigError(f"dead-letter topic {name!r} does not exist (topic {topic!r}, group {group!r})")
        ends = {}
        for p in metadata.partitions:
            low, high = consumer.get_watermark_offsets(TopicPartition(name, p), timeout=10)
            if high > low:
                ends[p] = high
        consumer.assign([TopicPartition(name, p, 0) for p in ends])
        found: list[DeadLetter] = []
        while ends:
            msg = consumer.poll(5)
            if msg is None:
                break
            if msg.error():
                continue
            if msg.offset() >= ends.get(msg.partition(), 0) - 1:
                ends.pop(msg.partition(), None)
            kind, ts = msg.timestamp()
            letter = DeadLetter(name, msg.partition(), msg.offset(),
                                msg.key().decode("utf-8", "replace") if msg.key() is not None else None,
                                msg.value() or b"", h.decode(msg.headers()),
                                datetime.fromtimestamp(ts / 1000, UTC) if kind else None)
            if where.matches(letter):
                found.append(letter)
    finally:
        consumer.close()
    return sorted(found, key=lambda d: (d.partition, d.offset))


def replay(config: Mapping[str, Any], topic: str, group: str, where: Filter | None = None,
           dry_run: bool = False) -> list[DeadLetter]:
    """Send the matching dead letters back to their original topic; returns what moved (or would)."""
    letters = list_dead_letters(config, topic, group, where)
    if dry_run or not letters:
        return letters
    replay_letters(config, letters, topic)
    return letters


def replay_letters(config: Mapping[str, Any], letters: list[DeadLetter], topic: str | None = None) -> None:
    """Send `letters` back to their original topic (`topic` when a letter does not name it), flushed."""
    producer = RequestProducer(config)
    for letter in letters:
        headers = {k: v for k, v in letter.headers.items() if k not in _DROPPED_ON_REPLAY}
        headers[h.ATTEMPT] = "1"
        headers[h.REPLAYED_FROM] = letter.id
        target = letter.headers.get(h.ORIGINAL_TOPIC, topic)
        if target is None:
            raise ConfigError(f"dead letter {letter.id} has no {h.ORIGINAL_TOPIC} header: nowhere to replay it")
        producer.send(target, letter.value, key=letter.key, headers=headers, raw=True)
    producer.flush()
