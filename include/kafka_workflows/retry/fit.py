"""A dead letter always fits its topic: never a crash-loop on MSG_SIZE_TOO_LARGE, never a silent drop.

A record that fit its source topic can outgrow the dead-letter topic once the provenance headers are
added (a 999,800-byte value plus ~400 bytes of `kw-` headers is over librdkafka's default
`message.max.bytes` of 1,000,000). `fit_dead_letter` makes it fit `limit` bytes, in this order:

1. as it is, when it fits;
2. its value truncated to what is left, `kw-value-truncated` saying how many bytes were kept and
   `kw-original-size` how many there were;
3. its value omitted (`kw-value-omitted: true`, `kw-original-size`) and then, largest first, the
   headers that are not our provenance dropped (`kw-headers-omitted` names them);
4. its key omitted (`kw-key-omitted: <size>`), for a key too large to fit with the provenance alone.

The provenance headers (`kw-original-topic/partition/offset`, group, error) are always kept: they
say where the whole original lies, so an operator can read it from the source topic while it is
retained there. Sizes are counted the way librdkafka does (key + value + header names and values),
plus a margin for the record's own framing.
"""

from __future__ import annotations

from collections.abc import Mapping

from kafka_workflows import headers as h

VALUE_TRUNCATED = "kw-value-truncated"  # bytes of the value kept
VALUE_OMITTED = "kw-value-omitted"
ORIGINAL_SIZE = "kw-original-size"  # bytes of the value as consumed
HEADERS_OMITTED = "kw-headers-omitted"  # comma-separated names (bounded), largest first
KEY_OMITTED = "kw-key-omitted"  # bytes of the key as consumed
RECORD_OVERHEAD = 512  # record batch and record framing, generously
HEADER_OVERHEAD = 10  # varint lengths of one header's name and value
MAX_OMITTED_NAMES = 1000  # characters of kw-headers-omitted

# Never dropped: without them a dead letter cannot say where its original lies or why it failed.
KEPT = frozenset({h.ORIGINAL_TOPIC, h.ORIGINAL_PARTITION, h.ORIGINAL_OFFSET, h.CONSUMER_GROUP, h.ERROR_TYPE,
                  h.ERROR_MESSAGE, h.FIRST_FAILED_AT, h.REQUEST_ID, h.JOB_INDEX, h.ATTEMPT, h.REPLAYED_FROM,
                  "kw-skipped-by", "kw-skip-reason", "kw-skipped-at", VALUE_TRUNCATED, VALUE_OMITTED,
                  ORIGINAL_SIZE, HEADERS_OMITTED, KEY_OMITTED})
# Kept only while short: a producer could have written a huge value under one of these names.
MAX_KEPT_HEADER = 2048


def _bytes(value: object) -> bytes:
    return value if isinstance(value, bytes) else str(value).encode()


def header_size(headers: Mapping[str, object]) -> int:
    return sum(len(name.encode()) + len(_bytes(value)) + HEADER_OVERHEAD
               for name, value in headers.items() if value is not None)


def record_size(key: bytes | None, value: bytes | None, headers: Mapping[str, object]) -> int:
    """The size librdkafka checks against message.max.bytes, plus the record's framing."""
    return len(key or b"") + len(value or b"") + header_size(headers) + RECORD_OVERHEAD


def fit_dead_letter(key: bytes | None, value: bytes | None, headers: Mapping[str, object],
                    limit: int) -> tuple[bytes | None, bytes | None, dict[str, object]]:
    """(key, value, headers) of a dead letter that is at most `limit` bytes; see the module docstring."""
    out = {name: v for name, v in headers.items() if v is not None}
    if record_size(key, value, out) <= limit:
        return key, value, out
    size = len(value or b"")
    out[ORIGINAL_SIZE] = str(size)
    out[VALUE_TRUNCATED] = str(size)  # the widest the number can be, while measuring what is left
    room = limit - record_size(key, None, out)
    if room > 0 and size:
        kept = min(room, size)
        out[VALUE_TRUNCATED] = str(kept)
        return key, (value or b"")[:kept], out
    del out[VALUE_TRUNCATED]
    out[VALUE_OMITTED] = "true"
    droppable = sorted((name for name, v in out.items()
                        if name not in KEPT or len(_bytes(v)) > MAX_KEPT_HEADER),
                       key=lambda name: -len(_bytes(out[name])))
    dropped: list[str] = []
    for name in droppable:
        if record_size(key, None, out) <= limit:
            break
        del out[name]
        dropped.append(name)
        out[HEADERS_OMITTED] = ",".join(dropped)[:MAX_OMITTED_NAMES]
    if record_size(key, None, out) > limit and key:
        out[KEY_OMITTED] = str(len(key))
        key = None
    return key, None, out
