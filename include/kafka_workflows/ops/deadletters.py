"""Dead letters: list and inspect them with filters, and replay a selection to its source topic.

Replay goes only where the operator chose: a dead letter of `<topic>.<group>.dlq` goes back to
`topic` (`source_topic`), which the caller may check against the topics the group's spec declares.
Never to a topic a header names: `kw-original-topic` is whatever the producer of the failed
record wrote, so a record carrying `kw-original-topic: kafka-workflows.control` must not become an
operator command by being replayed. The control and status topics are refused as targets.

A replayed message starts over (kw-attempt 1, no error headers) and carries kw-replayed-from =
`<dlq topic>:<partition>:<offset>`, so if it fails again it lands in the dead-letter topic once
more, visibly a replay, and is never replayed automatically. Its key and the headers other
producers wrote are sent back byte for byte.

`replay_once` is the one replay the CLI and the UI share. It is idempotent: a replay is recorded
in the control topic (`kind: replayed`, with who, when, the ids and the target), and a later
replay leaves out what was replayed already unless asked `again`. Replays of one dead-letter
topic within one process are serialized, so two simultaneous clicks cannot both send.

Listing reads up to the end offsets taken when it starts.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from confluent_kafka import Message as KafkaMessage

from kafka_workflows import headers as h
from kafka_workflows.errors import ConfigError
from kafka_workflows.kafka.producer import Delivered, RequestProducer
from kafka_workflows.kafka.reader import TopicMissingError, read_topic
from kafka_workflows.ops.control import (
    CONTROL_TOPIC,
    STATUS_TOPIC,
    control_history,
    control_secret,
    record_replay,
    signature_problem,
)
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


def source_topic(dead_letter_topic_name: str, group: str) -> str:
    """The topic a dead-letter topic of `group` belongs to: `<topic>.<group>.dlq` -> `topic`."""
    suffix = f".{group}.dlq"
    if not group or not dead_letter_topic_name.endswith(suffix) or len(dead_letter_topic_name) == len(suffix):
        raise ConfigError(f"{dead_letter_topic_name!r} is not a dead-letter topic of group {group!r} "
                          "(expected <topic>.<group>.dlq)")
    return dead_letter_topic_name[:-len(suffix)]


def check_target(topic: str, group: str, declared: Collection[str] | None = None) -> None:
    """Refuse a replay target that is not a topic the group reads: never the control or status topic,
    and, where the caller knows the group's spec, only one of the topics it declares."""
    if topic in (CONTROL_TOPIC, STATUS_TOPIC):
        raise ConfigError(f"{topic!r} holds operator commands and state: dead letters are never replayed to it")
    if declared is not None and topic not in declared:
        raise ConfigError(f"{topic!r} is not a topic group {group!r} reads in its spec: nowhere to replay to")


def replayed_ids(config: Mapping[str, Any], dead_letter_topic_name: str, secret: str | None = None) -> set[str]:
    """Ids of the dead letters of this topic that a replay already sent back (from the control topic).

    With a control secret (`secret`, else the env variable) only signed `replayed` records count,
    so a forged one cannot keep letters from being replayed.
    """
    key = control_secret(secret)
    ids: set[str] = set()
    for record in control_history(config, kinds=("replayed",)):
        if (record.get("dead_letter_topic") == dead_letter_topic_name and isinstance(record.get("ids"), list)
                and (key is None or signature_problem(record, key) is None)):
            ids.update(str(i) for i in record["ids"])
    return ids


@dataclass(frozen=True)
class Replayed:
    """What a replay sent (or, dry, would send) to `to`, and the ids it left out as replayed already."""

    to: str
    dead_letter_topic: str
    letters: list[DeadLetter]
    already: list[str]
    delivered: list[Delivered] = field(default_factory=list)  # where each letter landed in `to`, in order


_locks: dict[str, threading.Lock] = {}
_locks_guard = threading.Lock()


def _replay_lock(dead_letter_topic_name: str) -> threading.Lock:
    with _locks_guard:
        return _locks.setdefault(dead_letter_topic_name, threading.Lock())


def replay_once(config: Mapping[str, Any], topic: str, group: str,
                select: Callable[[set[str]], list[DeadLetter]], *, by: str | None = None, reason: str = "",
                again: bool = False, dry_run: bool = False, declared: Collection[str] | None = None,
                secret: str | None = None) -> Replayed:
    """Replay dead letters of `<topic>.<group>.dlq` back to `topic`, once: the one replay of CLI and UI.

    `select(done)` returns the candidate letters given the ids an earlier replay already sent back
    (it may leave those out without reading them); they are left out here in any case unless
    `again`. Every letter must lie in the group's dead-letter topic. Runs under the topic's lock:
    the next replay of it in this process sees this one's `replayed` record, signed when a control
    secret is configured (`secret`, else the env variable).
    """
    check_target(topic, group, declared)
    dlq = dead_letter_topic(topic, group)
    with _replay_lock(dlq):
        done = set() if again else replayed_ids(config, dlq, secret)
        letters, already = [], []
        for letter in select(done):
            if letter.topic != dlq:
                raise ConfigError(f"dead letter {letter.id} is not in {dlq!r}")
            (already if letter.id in done else letters).append(letter)
        result = Replayed(topic, dlq, letters, [letter.id for letter in already])
        if dry_run or not letters:
            return result
        delivered = replay_letters(config, letters, topic)
        record_replay(config, group, dlq, [letter.id for letter in letters], by, reason, to=topic, secret=secret)
        return Replayed(topic, dlq, letters, result.already, delivered)


def replay(config: Mapping[str, Any], topic: str, group: str, where: Filter | None = None,
           dry_run: bool = False, again: bool = False, by: str | None = None, reason: str = "",
           declared: Collection[str] | None = None) -> list[DeadLetter]:
    """Send the matching dead letters of `<topic>.<group>.dlq` back to `topic`; returns what moved (or would).

    Dead letters a replay already sent back are left out unless `again`; `by` (default: the OS
    user) is recorded with the replay in the control topic.
    """
    return replay_once(config, topic, group, lambda done: list_dead_letters(config, topic, group, where),
                       by=by, reason=reason, again=again, dry_run=dry_run, declared=declared).letters


def replay_letters(config: Mapping[str, Any], letters: list[DeadLetter], topic: str) -> list[Delivered]:
    """Send `letters` to `topic` (their source topic, chosen by the caller, never by a header), flushed;
    where each landed, in order (one producer, one flush: delivery reports come in send order per
    partition)."""
    producer = RequestProducer(config)
    for letter in letters:
        producer.send(topic, letter.value, key=letter.raw_key, headers=replay_headers(letter.wire_headers, letter.id),
                      raw=True)
    return producer.flush()
