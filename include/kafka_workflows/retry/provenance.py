"""Headers a retry, a dead letter or a replay carries (the `kw-` contract of DESIGN.md).

A message moved to a retry or dead-letter topic keeps every header it had and gains its
provenance: where it was first read (`kw-original-*`), by which group,
the last error (`kw-error-type`, `kw-error-message`), and when it first failed. A retry also
gets its next attempt number and when it is due (`kw-retry-at`, epoch ms). Headers other
producers wrote are kept byte for byte. A replay starts over: the provenance and error headers are
dropped, `kw-attempt` is 1 and `kw-replayed-from` names the dead letter.

Where a record was first read is an `Origin` the caller decides (the worker, from the topic it
consumed): never a `kw-original-*` or `kw-first-failed-at` header a producer wrote. Without one,
the record's own position is its origin; such headers on the incoming record are overwritten.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass

from confluent_kafka import Message as KafkaMessage

from kafka_workflows import headers as h

SKIPPED_BY, SKIP_REASON, SKIPPED_AT = "kw-skipped-by", "kw-skip-reason", "kw-skipped-at"
MAX_ERROR_MESSAGE = 1000

DROPPED_ON_REPLAY = frozenset({h.RETRY_AT, h.ORIGINAL_TOPIC, h.ORIGINAL_PARTITION, h.ORIGINAL_OFFSET,
                               h.CONSUMER_GROUP, h.ERROR_TYPE, h.ERROR_MESSAGE, h.FIRST_FAILED_AT,
                               h.REPLAYED_FROM, h.ATTEMPT, SKIPPED_BY, SKIP_REASON, SKIPPED_AT})


@dataclass(frozen=True, slots=True)
class Origin:
    """Where a record was first read, and when it first failed (epoch ms; None: now)."""

    topic: str
    partition: int
    offset: int
    first_failed_at: int | None = None


def error_type(exc: BaseException) -> str:
    """The error's name; an operator's skip keeps the name of the error it skipped."""
    return getattr(exc, "error_type", type(exc).__name__)


def provenance(msg: KafkaMessage, headers: Mapping[str, str], group: str, exc: BaseException,
               now: float | None = None, origin: Origin | None = None) -> dict[str, object]:
    """The record's own wire headers (bytes, kept exactly), our `kw-` view of them, and provenance
    (`origin`, decided by the caller; the record's own position when None)."""
    now_ms = int((time.time() if now is None else now) * 1000)
    if origin is None:
        origin = Origin(msg.topic(), msg.partition(), msg.offset())
    wire = h.wire(msg.headers())
    return {
        **wire,
        **changed_kw_headers(headers, wire),
        h.ORIGINAL_TOPIC: origin.topic,
        h.ORIGINAL_PARTITION: origin.partition,
        h.ORIGINAL_OFFSET: origin.offset,
        h.CONSUMER_GROUP: group,
        h.ERROR_TYPE: error_type(exc),
        h.ERROR_MESSAGE: str(exc)[:MAX_ERROR_MESSAGE],
        h.FIRST_FAILED_AT: now_ms if origin.first_failed_at is None else origin.first_failed_at,
    }


def changed_kw_headers(headers: Mapping[str, str], wire: Mapping[str, bytes]) -> dict[str, str]:
    """The `kw-` headers our view changed (e.g. the attempt of an in-place retry); the others stay
    as the wire has them, byte for byte."""
    return {name: value for name, value in headers.items() if name.startswith("kw-")
            and (name not in wire or wire[name].decode("utf-8", "replace") != value)}


def retry_headers(msg: KafkaMessage, headers: Mapping[str, str], group: str, exc: BaseException,
                  delay: float, now: float | None = None, origin: Origin | None = None) -> dict[str, object]:
    now = time.time() if now is None else now
    out = provenance(msg, headers, group, exc, now, origin)
    out[h.ATTEMPT] = h.attempt_of(headers) + 1  # HeaderError when it cannot be trusted
    out[h.RETRY_AT] = int((now + delay) * 1000)
    return out


def dead_letter_headers(msg: KafkaMessage, headers: Mapping[str, str], group: str, exc: BaseException,
                        extra: Mapping[str, object] | None = None, origin: Origin | None = None) -> dict[str, object]:
    out = {**provenance(msg, headers, group, exc, origin=origin), **(extra or {})}
    out.pop(h.RETRY_AT, None)
    return out


def replay_headers(headers: Mapping[str, str | bytes], dead_letter_id: str) -> dict[str, object]:
    """From a dead letter's wire headers: every header but the provenance, kept exactly."""
    out: dict[str, object] = {k: v for k, v in headers.items() if k not in DROPPED_ON_REPLAY}
    out[h.ATTEMPT] = "1"
    out[h.REPLAYED_FROM] = dead_letter_id
    return out
