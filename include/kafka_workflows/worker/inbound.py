"""The worker's one inbound boundary: every consumed record becomes an `Inbound` here, once.

Whatever the strategy (a message handler one at a time, a `@batch_handler`, `concurrency` > 1),
a record is read by `Boundary.read` before anything acts on it:

- its ORIGIN is decided by the worker from the topic it was consumed from (the worker's
  `retry_topics` map): a request topic is its own base; a retry topic names its base and round.
  A `kw-original-*` header on a request-topic record is never believed (anyone can write one);
  on a record of one of the group's own retry topics it was written by a worker of this group and
  is carried on (its partition and offset parsed and bounded like every other header).
- its `kw-` headers are parsed and bounded once: `kw-attempt` an integer in [1, int64],
  on a retry topic `kw-retry-at` and `kw-first-failed-at` int64, and, when the worker reports to a store,
  `kw-job-index` in [0, int64] and `kw-request-id` non-empty and at most MAX_REQUEST_ID bytes;
  every other `kw-` header at most MAX_KW_HEADER bytes.
- with tracing on (observe/tracing.py's ENABLED), its W3C `traceparent` and `tracestate` are parsed
  and bounded into `Inbound.trace`; a malformed or huge one is ignored (the handler's span starts a
  trace of its own), never dead-lettered for that and never echoed. With tracing off they are not
  looked at.

With a schema declared for its base topic (schemas/), its value is decoded here too, once:
`Inbound.value` is the decoded record the handler's `message.value` returns. A value that does not
decode (no wire format, an unknown schema id, a shape its schema cannot read) is refused like a bad
header, with a SchemaDecodeError naming the subject, the id and the reason.

A record that fails is not handed to anyone: `Inbound.error` says why (a HeaderError naming the
header and its size, never its content, or a SchemaDecodeError) and the strategy dead-letters it
(worker/outcomes.py).
The common record costs a scan of its header names: a message handler's hot path asks `plain`
(no object built) and reads the record in full only when it fails or is not plain.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from confluent_kafka import Message as KafkaMessage

from kafka_workflows import headers as h
from kafka_workflows.messages import NOT_DECODED, where
from kafka_workflows.observe import tracing
from kafka_workflows.retry.provenance import Origin

MAX_REQUEST_ID = h.MAX_REQUEST_ID_BYTES  # the store refuses longer ids too (store/limits.py)
MAX_KW_HEADER = h.MAX_KW_HEADER_BYTES
INT64_MAX = h.INT64_MAX

TP = tuple[str, int]


class Inbound:
    """One consumed record, its kw- headers parsed and its origin decided by the worker."""

    __slots__ = ("attempt", "base", "error", "first_failed_at", "job_index", "msg", "original", "request_id",
                 "retry_at", "round", "trace", "value")

    def __init__(self, msg: KafkaMessage, base: str, round: int | None) -> None:
        self.msg = msg
        self.base = base  # the request topic this record belongs to
        self.round = round  # the retry topic's number, None on the request topic
        self.attempt = 1  # kw-attempt
        self.retry_at = 0  # kw-retry-at, epoch ms (0: due now)
        self.job_index = -1  # kw-job-index (-1: not a job)
        self.request_id: str | None = None
        self.first_failed_at: int | None = None  # carried on from this group's own retry
        self.original: tuple[int, int] | None = None  # (partition, offset) of the first read, ditto
        self.error: Exception | None = None  # why the record cannot be trusted (HeaderError, SchemaDecodeError)
        self.value: Any = NOT_DECODED  # the value decoded with its topic's schema, when it has one
        self.trace: tracing.Carrier | None = None  # its trace context (tracing on, a valid traceparent)

    @property
    def origin(self) -> tuple[str, int] | None:
        """(base, round) when read from a retry topic."""
        return None if self.round is None else (self.base, self.round)

    def provenance(self) -> Origin:
        """Where this record was first read, as the worker knows it (never as a producer said)."""
        msg = self.msg
        if self.original is not None:
            return Origin(self.base, self.original[0], self.original[1], self.first_failed_at)
        return Origin(msg.topic(), msg.partition(), msg.offset(), self.first_failed_at)

    def attempt_after(self, failures: int) -> int:
        """kw-attempt of this record after `failures` failed attempts in place."""
        return self.attempt + failures


def _int(value: bytes, name: str, low: int = h.INT64_MIN) -> int:
    return h.parse_int64(value, name, low)


# The common values, read without a regex (the per-message path): b"1" .. b"1000".
_SMALL: dict[bytes, int] = {str(i).encode(): i for i in range(1, 1001)}
_ATTEMPT_NAME = h.ATTEMPT
# The kw- headers the boundary reads (any other kw- header is only bounded).
_ATTEMPT, _REQUEST_ID, _JOB_INDEX, _RETRY_AT, _PARTITION, _OFFSET, _FIRST_FAILED, _TRACE = range(8)
_READ = {h.ATTEMPT: _ATTEMPT, h.REQUEST_ID: _REQUEST_ID, h.JOB_INDEX: _JOB_INDEX, h.RETRY_AT: _RETRY_AT,
         h.ORIGINAL_PARTITION: _PARTITION, h.ORIGINAL_OFFSET: _OFFSET, h.FIRST_FAILED_AT: _FIRST_FAILED,
         tracing.TRACEPARENT: _TRACE, tracing.TRACESTATE: _TRACE}


def _too_long(name: str, value: bytes) -> h.HeaderError:
    return h.HeaderError(f"header {name} is too long ({len(value)} bytes)")


class Boundary:
    """Reads consumed records for one worker: its retry topics, and whether it reports to a store."""

    def __init__(self, retry_topics: dict[str, tuple[str, int]], report: bool,
                 codecs: Mapping[str, Any] | None = None) -> None:
        self.retry_topics = retry_topics
        self.report = report
        self.codecs = dict(codecs or {})  # base topic -> schemas.codec.Codec
        self.full = report or bool(self.codecs)  # every record read in full (no `plain` shortcut)
        self._last_plain: list[tuple[str, bytes | None]] | None = None  # the headers `plain` accepted last

    def plain(self, msg: KafkaMessage) -> bool:
        """The hot path's question, for a request-topic record of a worker that reports to no store:
        True when `read` would accept it with nothing to note (no kw- header but a small kw-attempt
        and bounded ones). False only says "read it": `read` decides, on the general way."""
        if self.full:
            return False  # a store's jobs, and values with a schema, are read in full
        raw = msg.headers()
        if raw is None or raw == self._last_plain:  # most producers send the same headers each time
            return True
        for name, value in raw:
            if name == _ATTEMPT_NAME:
                if value not in _SMALL:
                    return False
            elif value is not None and len(value) > MAX_KW_HEADER and name[:3] == "kw-":
                return False
        self._last_plain = raw
        return True

    def read(self, msg: KafkaMessage) -> Inbound:
        topic = msg.topic()
        origin = self.retry_topics.get(topic)
        inbound = Inbound(msg, topic, None) if origin is None else Inbound(msg, origin[0], origin[1])
        raw = msg.headers()
        report = self.report
        if raw is None and not report:
            return self._decode(inbound) if self.codecs else inbound
        own_retry = origin is not None
        partition = offset = None
        traced = tracing.ENABLED
        traceparent = tracestate = None
        try:
            for name, value in raw or ():
                kind = _READ.get(name)
                if value is None:
                    value = b""
                if kind is None:
                    if len(value) > MAX_KW_HEADER and name.startswith("kw-"):
                        raise _too_long(name, value)
                elif kind == _TRACE:  # not a kw- header: never refused, only believed when valid
                    if traced:
                        if name == tracing.TRACEPARENT:
                            traceparent = value
                        else:
                            tracestate = value
                elif kind == _ATTEMPT:
                    attempt = _SMALL.get(value)
                    inbound.attempt = attempt if attempt is not None else _int(value, name, 1)
                elif kind == _REQUEST_ID:
                    if len(value) > (MAX_REQUEST_ID if report else MAX_KW_HEADER):
                        raise _too_long(name, value)
                    if report:
                        inbound.request_id = value.decode("utf-8", "replace")
                elif len(value) > MAX_KW_HEADER:
                    raise _too_long(name, value)
                elif kind == _JOB_INDEX:
                    if report:  # counted by the store: an index from 0
                        inbound.job_index = _int(value, name, 0)
                elif not own_retry:
                    continue  # read only on the group's own retry topics; elsewhere bounded like the rest
                elif kind == _RETRY_AT:
                    inbound.retry_at = _int(value, name)
                elif kind == _PARTITION:  # written by a worker of this group when it moved the record
                    partition = _int(value, name, 0)
                elif kind == _OFFSET:
                    offset = _int(value, name, 0)
                else:
                    inbound.first_failed_at = _int(value, name)
            if report:
                if inbound.request_id == "":
                    raise h.HeaderError(f"header {h.REQUEST_ID} is empty")
                if inbound.job_index >= 0 and inbound.request_id is None:
                    inbound.job_index = -1  # not a store's job: nothing to report
        except h.HeaderError as exc:
            inbound.error = exc
        if partition is not None and offset is not None:
            inbound.original = (partition, offset)
        if traceparent is not None:
            inbound.trace = tracing.carrier_of(traceparent, tracestate)
        return self._decode(inbound) if self.codecs and inbound.error is None else inbound

    def _decode(self, inbound: Inbound) -> Inbound:
        codec = self.codecs.get(inbound.base)
        if codec is not None:
            from kafka_workflows.schemas.codec import SchemaDecodeError

            msg = inbound.msg
            try:
                inbound.value = codec.decode(msg.value(), where(msg))
            except SchemaDecodeError as exc:
                exc.record = msg
                inbound.error = exc
        return inbound
