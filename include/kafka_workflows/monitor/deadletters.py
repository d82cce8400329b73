"""Every dead letter of every `*.dlq` topic, indexed in memory: list with filters and paging, error
fingerprints, one letter's headers and value preview, and replay of a selection.

The index keeps a small summary per letter (no value), at most `limit` letters (the oldest are
dropped first and `dropped` counts them). A letter's value is read only when someone opens it or
replays it: a point read at its offset. A fingerprint groups letters whose error type and
normalised message (numbers, hex ids and quoted text blanked) are equal.
"""

from __future__ import annotations

import hashlib
import re
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from confluent_kafka import Consumer, TopicPartition
from confluent_kafka import Message as KafkaMessage

from kafka_workflows import headers as h
from kafka_workflows.errors import ConfigError
from kafka_workflows.kafka.config import client_config
from kafka_workflows.monitor.follower import TopicFollower
from kafka_workflows.observe import tracing
from kafka_workflows.ops.deadletters import DeadLetter, replay_once

PREVIEW_BYTES = 4096
MAX_SELECTION = 1000
_QUOTED = re.compile(r"'[^']*'|\"[^\"]*\"")
_HEX = re.compile(r"\b[0-9a-fA-F]{8}(?:-[0-9a-fA-F]{4}){3}-[0-9a-fA-F]{12}\b|\b(?=\w*\d)[0-9a-fA-F]{8,}\b")
_NUMBER = re.compile(r"\d+(?:\.\d+)?")


def normalise(message: str) -> str:
    return _NUMBER.sub("N", _HEX.sub("X", _QUOTED.sub("'…'", message)))[:300]


def fingerprint(error_type: str, message: str) -> str:
    return hashlib.sha1(f"{error_type}\0{normalise(message)}".encode()).hexdigest()[:12]


@dataclass(frozen=True)
class LetterQuery:
    """Filters of the dead-letter list; `groups` limits to the groups of one workflow."""

    groups: frozenset[str] | None = None
    group: str | None = None
    topic: str | None = None
    key: str | None = None
    error_type: str | None = None
    fingerprint: str | None = None
    since: datetime | None = None
    until: datetime | None = None

    def __post_init__(self) -> None:
        if self.since and self.until and self.since > self.until:
            raise ConfigError(f"since {self.since.isoformat()} is after until {self.until.isoformat()}")

    def matches(self, row: Mapping[str, Any]) -> bool:
        at = row["at"]
        return ((self.groups is None or row["group"] in self.groups)
                and (self.group is None or row["group"] == self.group)
                and (self.topic is None or row["original_topic"] == self.topic or row["topic"] == self.topic)
                and (self.key is None or row["key"] == self.key)
                and (self.error_type is None or row["error_type"] == self.error_type)
                and (self.fingerprint is None or row["fingerprint"] == self.fingerprint)
                and (self.since is None or (at is not None and at >= self.since.timestamp()))
                and (self.until is None or (at is not None and at <= self.until.timestamp())))


def _summary(msg: KafkaMessage) -> dict[str, Any]:
    headers = h.decode(msg.headers())
    kind, ts = msg.timestamp()
    error_type = headers.get(h.ERROR_TYPE, "")
    error = headers.get(h.ERROR_MESSAGE, "")
    key = msg.key().decode("utf-8", "replace")[:200] if msg.key() is not None else None
    return {
        "id": f"{msg.topic()}:{msg.partition()}:{msg.offset()}", "topic": msg.topic(), "partition": msg.partition(),
        "offset": msg.offset(), "key": key, "group": headers.get(h.CONSUMER_GROUP, ""),
        "original_topic": headers.get(h.ORIGINAL_TOPIC, ""),
        "original": f"{headers.get(h.ORIGINAL_TOPIC)}[{headers.get(h.ORIGINAL_PARTITION)}]"
                    f"@{headers.get(h.ORIGINAL_OFFSET)}",
        "error_type": error_type, "error": error[:300], "fingerprint": fingerprint(error_type, error),
        "attempt": headers.get(h.ATTEMPT), "request_id": headers.get(h.REQUEST_ID),
        "trace_id": tracing.trace_id_of(headers.get(h.TRACEPARENT)),  # None unless a valid W3C traceparent
        "at": ts / 1000 if kind else None, "replayed_from": headers.get(h.REPLAYED_FROM),
        "skipped_by": headers.get("kw-skipped-by"), "skip_reason": headers.get("kw-skip-reason"),
        "value_size": len(msg.value() or b""),
    }


class DeadLetterIndex(TopicFollower):
    name = "dead-letters"

    def __init__(self, config: Mapping[str, Any], *, limit: int = 200_000, refresh: float = 5.0) -> None:
        super().__init__(config, refresh=refresh)
        self.limit = limit
        self.dropped = 0
        self._letters: OrderedDict[str, dict[str, Any]] = OrderedDict()

    def topics(self, names: set[str]) -> set[str]:
        return {n for n in names if n.endswith(".dlq")}

    def apply(self, msg: KafkaMessage) -> None:
        row = _summary(msg)
        with self.lock:
            self._letters[row["id"]] = row
            while len(self._letters) > self.limit:
                self._letters.popitem(last=False)
                self.dropped += 1

    # -- reading the index -----------------------------------------------------------------
    def get(self, letter_id: str) -> dict[str, Any] | None:
        with self.lock:
            row = self._letters.get(letter_id)
            return None if row is None else dict(row)

    def matching(self, query: LetterQuery) -> list[dict[str, Any]]:
        """Every matching summary, newest first."""
        with self.lock:
            rows = [r for r in self._letters.values() if query.matches(r)]
        rows.reverse()
        rows.sort(key=lambda r: r["at"] or 0.0, reverse=True)
        return rows

    def page(self, query: LetterQuery, offset: int = 0, limit: int = 50) -> dict[str, Any]:
        rows = self.matching(query)
        return {"total": len(rows), "offset": offset, "limit": limit,
                "items": [dict(r) for r in rows[offset:offset + limit]]}

    def fingerprints(self, query: LetterQuery, limit: int = 50) -> list[dict[str, Any]]:
        """Matching letters grouped by fingerprint, largest group first, with one example each."""
        found: dict[str, dict[str, Any]] = {}
        for row in self.matching(query):
            entry = found.get(row["fingerprint"])
            if entry is None:
                found[row["fingerprint"]] = {"fingerprint": row["fingerprint"], "error_type": row["error_type"],
                                             "example": normalise(row["error"]), "count": 1,
                                             "groups": {row["group"]}, "last_at": row["at"]}
            else:
                entry["count"] += 1
                entry["groups"].add(row["group"])
        rows = sorted(found.values(), key=lambda e: (-e["count"], e["fingerprint"]))[:limit]
        return [dict(e, groups=sorted(e["groups"])) for e in rows]

    def counts(self) -> dict[str, int]:
        """Number of letters per consumer group."""
        out: dict[str, int] = {}
        with self.lock:
            for row in self._letters.values():
                out[row["group"]] = out.get(row["group"], 0) + 1
        return out


# -- point reads -------------------------------------------------------------------------------
def read_letters(config: Mapping[str, Any], ids: Iterable[str], timeout: float = 10.0) -> dict[str, DeadLetter]:
    """The letters at `ids` ("topic:partition:offset"), read at their offsets (one range per partition)."""
    wanted: dict[tuple[str, int], set[int]] = {}
    for letter_id in ids:
        topic, partition, offset = letter_id.rsplit(":", 2)
        wanted.setdefault((topic, int(partition)), set()).add(int(offset))
    found: dict[str, DeadLetter] = {}
    if not wanted:
        return found
    consumer = Consumer(client_config(config, **{
        "group.id": f"kw-letter-reader-{uuid.uuid4().hex[:8]}", "enable.auto.commit": False,
        "isolation.level": "read_committed", "enable.partition.eof": True}))
    try:
        for (topic, partition), offsets in wanted.items():
            consumer.assign([TopicPartition(topic, partition, min(offsets))])
            last = max(offsets)
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                msg = consumer.poll(0.5)
                if msg is None:
                    continue
                if msg.error():
                    break  # end of the partition: the rest is gone (retention)
                if msg.offset() in offsets:
                    kind, ts = msg.timestamp()
                    letter = DeadLetter(topic, partition, msg.offset(),
                                        msg.key().decode("utf-8", "replace") if msg.key() is not None else None,
                                        msg.value() or b"", h.decode(msg.headers()),
                                        datetime.fromtimestamp(ts / 1000, UTC) if kind else None,
                                        msg.key(), h.wire(msg.headers()))
                    found[letter.id] = letter
                if msg.offset() >= last:
                    break
    finally:
        consumer.close()
    return found


def letter_detail(letter: DeadLetter, preview_bytes: int = PREVIEW_BYTES) -> dict[str, Any]:
    """One letter: all headers, and at most `preview_bytes` of its value as text."""
    return {"id": letter.id, "key": letter.key, "headers": dict(sorted(letter.headers.items())),
            "value_size": len(letter.value), "value_truncated": len(letter.value) > preview_bytes,
            "value_preview": letter.value[:preview_bytes].decode("utf-8", "replace"),
            "dead_lettered_at": letter.dead_lettered_at.isoformat() if letter.dead_lettered_at else None}


@dataclass(frozen=True)
class Source:
    """Where the letters of one dead-letter topic go back to: `topic`, read by `group`, whose spec
    declares `declared`."""

    group: str
    topic: str
    declared: tuple[str, ...]


def replay_selection(config: Mapping[str, Any], rows: list[dict[str, Any]], dry_run: bool,
                     sources: Mapping[str, Source], *, by: str, reason: str = "", secret: str | None = None
                     ) -> dict[str, Any]:
    """Replay the letters of `rows` (index summaries) with ops.deadletters.replay_once, each back to
    the source topic of its dead-letter topic (`sources`, from the spec); with `dry_run`, only say
    what would move where. Letters a replay already sent back are left out (`already_replayed`)."""
    if len(rows) > MAX_SELECTION:
        raise ConfigError(f"selection: {len(rows)} letters; replay at most {MAX_SELECTION} at a time")
    chosen: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        if row["topic"] not in sources:
            raise ConfigError(f"dead letter {row['id']} is not in a dead-letter topic of the workflow's spec")
        chosen.setdefault(row["topic"], []).append(row)
    moves: list[dict[str, Any]] = []
    already: list[str] = []
    for dlq, picked in chosen.items():
        source = sources[dlq]
        by_id = {r["id"]: r for r in picked}
        done = replay_once(config, source.topic, source.group, _selector(config, picked, dry_run), by=by,
                           reason=reason, dry_run=dry_run, declared=source.declared, secret=secret)
        moves += [{"id": letter.id, "key": by_id[letter.id]["key"], "to": done.to,
                   "error_type": by_id[letter.id]["error_type"]} for letter in done.letters]
        already += done.already
    return {"dry_run": dry_run, "count": len(moves), "moves": moves, "already_replayed": already}


def _selector(config: Mapping[str, Any], rows: list[dict[str, Any]], dry_run: bool
              ) -> Callable[[set[str]], list[DeadLetter]]:
    """The letters of `rows`: for a dry run their summaries, else read at their offsets (those not
    replayed already); a letter gone from its topic raises LookupError."""
    def select(done: set[str]) -> list[DeadLetter]:
        if dry_run:
            return [DeadLetter(r["topic"], r["partition"], r["offset"], r["key"], b"") for r in rows]
        wanted = [r["id"] for r in rows if r["id"] not in done]
        letters = read_letters(config, wanted)
        missing = [i for i in wanted if i not in letters]
        if missing:
            raise LookupError(f"dead letter(s) no longer in their topic: {', '.join(missing[:5])}")
        return [letters[i] for i in wanted] + [DeadLetter(r["topic"], r["partition"], r["offset"], r["key"], b"")
                                               for r in rows if r["id"] in done]
    return select
