"""The exactly-once processors' inbound boundary: each consumed record is checked once, where it enters.

A topic holds whatever any producer wrote. Before a handler sees a record, `inbound()` decodes its
headers once and bounds what the `kw-` contract says about them: `kw-request-id` non-empty and at
most `MAX_REQUEST_ID_BYTES`, `kw-attempt` and `kw-job-index` int64 (>= 1 and >= 0),
every `kw-` header at most `MAX_KW_HEADER_BYTES`, and the whole record (key + value + headers) at
most `max_record_bytes` when one is configured. A record that fails raises `InboundError` (a
`MessageDecodeError`): the processor dead-letters it in the transaction (eos/poison.py) without
calling the handler, with the reason in kw-error-type / kw-error-message, never quoting content.
The value itself is the handler's to decode (a transform's `Message.of` raises MessageDecodeError
on non-JSON, which takes the same poison path).
"""

from __future__ import annotations

from dataclasses import dataclass

from confluent_kafka import Message as KafkaMessage

from kafka_workflows import headers as h
from kafka_workflows.errors import MessageDecodeError

MAX_REQUEST_ID_BYTES = h.MAX_REQUEST_ID_BYTES
MAX_KW_HEADER_BYTES = h.MAX_KW_HEADER_BYTES


class InboundError(MessageDecodeError):
    """A consumed record breaks the `kw-` header contract or the configured record size."""


@dataclass(frozen=True)
class InboundRecord:
    """A consumed record, its headers decoded once, and where it lies (`topic[partition]@offset`)."""

    record: KafkaMessage
    headers: dict[str, str]
    where: str


def where(msg: KafkaMessage) -> str:
    return f"{msg.topic()}[{msg.partition()}]@{msg.offset()}"


def inbound(msg: KafkaMessage, max_record_bytes: int | None = None) -> InboundRecord:
    """`msg` checked and its headers decoded; InboundError (naming the field and sizes) when it fails."""
    at = where(msg)
    wire = msg.headers() or []
    if max_record_bytes is not None:
        size = len(msg.key() or b"") + len(msg.value() or b"") + sum(len(n) + len(v or b"") for n, v in wire)
        if size > max_record_bytes:
            raise InboundError(f"{at}: the record is {size:,} bytes, more than the {max_record_bytes:,} allowed")
    headers = h.decode(wire)
    for name, value in wire:
        if name.startswith("kw-") and len(value or b"") > MAX_KW_HEADER_BYTES:
            raise InboundError(f"{at}: header {name} is {len(value or b''):,} bytes, more than the "
                               f"{MAX_KW_HEADER_BYTES:,} allowed")
    request_id = headers.get(h.REQUEST_ID)
    if request_id is not None:
        size = len(request_id.encode())
        if not request_id or size > MAX_REQUEST_ID_BYTES:
            raise InboundError(f"{at}: header {h.REQUEST_ID} is {size:,} bytes; it must be 1..{MAX_REQUEST_ID_BYTES}")
    try:
        attempt = h.int_header(headers, h.ATTEMPT, 1)
        job = h.int_header(headers, h.JOB_INDEX, 0)
    except h.HeaderError as exc:
        raise InboundError(f"{at}: {exc}") from None
    if attempt < 1 or job < 0:
        raise InboundError(f"{at}: header {h.ATTEMPT if attempt < 1 else h.JOB_INDEX} is out of range")
    return InboundRecord(msg, headers, at)
