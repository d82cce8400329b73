"""The `kw-` header contract of DESIGN.md. Our values are UTF-8 strings on the wire.

Headers other producers wrote are kept exactly: `encode` passes bytes values through untouched,
and whatever moves a message on (retry, dead letter, replay) starts from the record's own wire
headers (`wire`), so a header that is not UTF-8 survives byte for byte. Integer headers are read
with `int_header`, whose error names the header and never quotes its value.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

from kafka_workflows.errors import MessageDecodeError

REQUEST_ID = "kw-request-id"
WORKFLOW = "kw-workflow"
ATTEMPT = "kw-attempt"
RETRY_AT = "kw-retry-at"
ORIGINAL_TOPIC = "kw-original-topic"
ORIGINAL_PARTITION = "kw-original-partition"
ORIGINAL_OFFSET = "kw-original-offset"
CONSUMER_GROUP = "kw-consumer-group"
ERROR_TYPE = "kw-error-type"
ERROR_MESSAGE = "kw-error-message"
FIRST_FAILED_AT = "kw-first-failed-at"
REPLAYED_FROM = "kw-replayed-from"
JOB_INDEX = "kw-job-index"  # index of a job within its request (0-based), counted by the store
TRACEPARENT = "traceparent"  # W3C trace context (observe/tracing.py parses and bounds it)
TRACESTATE = "tracestate"
# A record that does not decode with its topic's schema (schemas/codec.py): on its dead letter
SCHEMA_SUBJECT = "kw-schema-subject"
SCHEMA_ID = "kw-schema-id"
SCHEMA_ERROR = "kw-schema-error"

WireHeaders = list[tuple[str, bytes]]


def encode(headers: Mapping[str, object]) -> WireHeaders:
    """Encode a mapping as Kafka headers; None values are left out, bytes are kept as they are."""
    return [(name, value if isinstance(value, bytes) else str(value).encode())
            for name, value in headers.items() if value is not None]


def wire(headers: Iterable[tuple[str, bytes | None]] | None) -> dict[str, bytes]:
    """A record's headers as they are on the wire (the last value wins for a repeated name)."""
    return {name: value or b"" for name, value in headers or ()}


def decode(headers: Iterable[tuple[str, bytes | None]] | None) -> dict[str, str]:
    """Decode Kafka headers; the last value wins for a repeated name."""
    return {name: (value or b"").decode("utf-8", "replace") for name, value in headers or ()}


INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
# The contract's bounds, checked where a record enters a worker (worker/inbound.py) or an exactly-once
# processor (eos/inbound.py), and by the store (store/limits.py): one set of numbers for every boundary.
MAX_REQUEST_ID_BYTES = 512  # kw-request-id, non-empty (ids are dag.task.run[.map_index])
MAX_KW_HEADER_BYTES = 8192  # any other kw- header (kw-error-message is at most 1,000 characters)


class HeaderError(MessageDecodeError):
    """A `kw-` header holds what its contract does not allow (e.g. a non-integer kw-attempt)."""


_DIGITS = re.compile(r"-?[0-9]+")
_DIGITS_B = re.compile(rb"-?[0-9]+")


def parse_int64(raw: str | bytes, name: str, low: int = INT64_MIN, high: int = INT64_MAX) -> int:
    """A header's value as a decimal integer in [low, high]; HeaderError names the header and the
    value's size, never its content. Strict: no sign but `-`, no spaces, no `_`, ASCII digits only."""
    if (_DIGITS_B if isinstance(raw, bytes) else _DIGITS).fullmatch(raw) is None:
        raise HeaderError(f"header {name} is not an integer ({len(raw)} characters)")
    if len(raw) > 20:  # int64 has at most 19 digits and a sign: never convert a huge number
        raise HeaderError(f"header {name} is out of range ({len(raw)} characters)")
    value = int(raw)
    if not low <= value <= high:  # INT64: what Kafka's own offsets and timestamps fit in
        raise HeaderError(f"header {name} is out of range ({len(raw)} characters)")
    return value


def int_header(headers: Mapping[str, str], name: str, default: int) -> int:
    """The integer value of header `name` (`default` when absent); HeaderError names the header."""
    raw = headers.get(name)
    if raw is None:
        return default
    return parse_int64(raw, name)


def valid_int_header(headers: Mapping[str, str], name: str) -> bool:
    """Whether header `name` is absent or an integer `int_header` accepts."""
    try:
        int_header(headers, name, 0)
    except HeaderError:
        return False
    return True


def attempt_of(headers: Mapping[str, str]) -> int:
    """kw-attempt, from 1 (1 when absent); HeaderError when it is not an integer in [1, int64]."""
    raw = headers.get(ATTEMPT)
    return 1 if raw is None else parse_int64(raw, ATTEMPT, 1)
