"""The `kw-` header contract of DESIGN.md. Our values are UTF-8 strings on the wire.

Headers other producers wrote are kept exactly: `encode` passes bytes values through untouched,
and whatever moves a message on (retry, dead letter, replay) starts from the record's own wire
headers (`wire`), so a header that is not UTF-8 survives byte for byte. Integer headers are read
with `int_header`, whose error names the header and never quotes its value.
"""

from __future__ import annotations

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
TRACEPARENT = "traceparent"

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


class HeaderError(MessageDecodeError):
    """A `kw-` header holds what its contract does not allow (e.g. a non-integer kw-attempt)."""


def int_header(headers: Mapping[str, str], name: str, default: int) -> int:
    """The integer value of header `name` (`default` when absent); HeaderError names the header."""
    raw = headers.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise HeaderError(f"header {name} is not an integer ({len(raw)} characters)") from None
    if not INT64_MIN <= value <= INT64_MAX:  # what Kafka's own offsets and timestamps fit in
        raise HeaderError(f"header {name} is out of range ({len(raw)} characters)")
    return value


def valid_int_header(headers: Mapping[str, str], name: str) -> bool:
    """Whether header `name` is absent or an integer `int_header` accepts."""
    try:
        int_header(headers, name, 0)
    except HeaderError:
        return False
    return True


def attempt_of(headers: Mapping[str, str]) -> int:
    return int_header(headers, ATTEMPT, 1)
