"""What a handler receives, and the JSON value contract of request messages."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any, overload

from confluent_kafka import Message as KafkaMessage
from pydantic_core import from_json, to_json

from kafka_workflows import headers as h
from kafka_workflows.errors import MessageDecodeError


def encode_value(value: Any) -> bytes:
    """Request values are JSON (UTF-8, compact); keys are plain UTF-8 strings.

    pydantic-core's serializer, about twice as fast as json.dumps on a split's jobs: datetimes and
    dates as ISO 8601, sets and tuples as arrays, anything else it does not know as str(value).
    """
    return to_json(value, fallback=str)


def decode_value(raw: bytes | None, where: str) -> Any:
    """Decode a JSON value; `where` (topic[partition]@offset) goes into the error.

    pydantic-core's parser: same results as json.loads for JSON documents, several times faster,
    which matters on the worker's per-message path.
    """
    if raw is None:
        raise MessageDecodeError(f"{where}: message has no value (expected a JSON document)")
    try:
        return from_json(raw)
    except ValueError as exc:  # the parser's position, never the content: a topic holds anyone's data
        raise MessageDecodeError(f"{where}: value is not JSON ({exc}; {len(raw)} bytes)") from None


_PENDING: Any = object()  # a value not decoded yet
NOT_DECODED: Any = _PENDING


class Message:
    """A request as handlers see it: its JSON value and the Kafka record's metadata, read from the
    record on first access.

    Built per message on the worker's hot path, so it holds the record instead of copying six
    fields out of it. The value is decoded when first read (MessageDecodeError, carrying the
    record, when it is not JSON: the worker dead-letters that message).
    To test a handler, wrap a record: `Message.of(confluent_kafka.Message(...))`.
    """

    __slots__ = ("_base", "_headers", "_raw", "_value")

    def __init__(self, raw: KafkaMessage, value: Any = _PENDING, headers: dict[str, str] | None = None,
                 base: str | None = None) -> None:
        self._raw = raw
        self._value = value
        self._headers = headers
        self._base = base  # the request topic of a record read from a retry topic, as the worker knows it

    @classmethod
    def of(cls, raw: KafkaMessage) -> Message:
        """Decode `raw`'s value; MessageDecodeError names the record when it is not JSON."""
        return cls(raw, decode_value(raw.value(), where(raw)))

    @property
    def value(self) -> Any:
        """The decoded JSON value; MessageDecodeError (carrying this record) when it is not JSON."""
        if self._value is _PENDING:
            try:
                self._value = decode_value(self._raw.value(), where(self._raw))
            except MessageDecodeError as exc:
                exc.record = self._raw
                raise
        return self._value

    @property
    def record(self) -> KafkaMessage:
        """The confluent-kafka record underneath."""
        return self._raw

    @property
    def topic(self) -> str:
        return self._raw.topic()

    @property
    def partition(self) -> int:
        return self._raw.partition()

    @property
    def offset(self) -> int:
        return self._raw.offset()

    @property
    def key(self) -> str | None:
        key = self._raw.key()
        return key.decode("utf-8", "replace") if key is not None else None

    @property
    def timestamp_ms(self) -> int:
        return self._raw.timestamp()[1]

    @property
    def headers(self) -> dict[str, str]:
        if self._headers is None:
            self._headers = h.decode(self._raw.headers())
        return self._headers

    @property
    def request_id(self) -> str | None:
        return self.headers.get(h.REQUEST_ID)

    @property
    def workflow(self) -> str | None:
        return self.headers.get(h.WORKFLOW)

    @property
    def attempt(self) -> int:
        """kw-attempt (1 for a first delivery); HeaderError when it is not an integer."""
        return h.attempt_of(self.headers)

    @property
    def original_topic(self) -> str:
        """The request topic, also when this delivery comes from a retry topic: decided by the worker
        from the topic it consumed, never read from a kw-original-topic header a producer wrote."""
        return self._base or self._raw.topic()

    @property
    def where(self) -> str:
        return where(self._raw)

    def __repr__(self) -> str:
        value = "<not decoded>" if self._value is _PENDING else repr(self._value)
        return f"Message({self.where}, key={self.key!r}, value={value})"


class MessageBatch(Sequence[Message]):
    """Consecutive messages of one partition, in offset order, for a batch handler.

    Lazy: a Message is built, and its value decoded, only when the handler reads it, so a handler
    that looks at a few fields of a large batch pays for those alone.
    """

    __slots__ = ("_messages", "_records")

    def __init__(self, records: Sequence[KafkaMessage], messages: list[Message | None] | None = None) -> None:
        self._records = records
        self._messages = messages if messages is not None else [None] * len(records)

    @classmethod
    def of(cls, *messages: Message) -> MessageBatch:
        """A batch of messages built already (the worker's one-at-a-time path)."""
        return cls([m.record for m in messages], list(messages))

    def __len__(self) -> int:
        return len(self._records)

    @overload
    def __getitem__(self, index: int) -> Message: ...

    @overload
    def __getitem__(self, index: slice) -> list[Message]: ...

    def __getitem__(self, index: int | slice) -> Message | list[Message]:
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self._records)))]
        message = self._messages[index]
        if message is None:
            message = self._messages[index] = Message(self._records[index])
        return message

    def __iter__(self) -> Iterator[Message]:
        for i in range(len(self._records)):
            yield self[i]

    @property
    def topic(self) -> str:
        return self._records[0].topic()

    @property
    def partition(self) -> int:
        return self._records[0].partition()

    def values(self) -> list[Any]:
        """Every message's decoded value, in order."""
        return [message.value for message in self]

    def __repr__(self) -> str:
        first, last = self._records[0], self._records[-1]
        return f"MessageBatch({first.topic()}[{first.partition()}]@{first.offset()}..{last.offset()}, {len(self)})"


def where(raw: KafkaMessage) -> str:
    """`topic[partition]@offset` of a record, for errors and logs."""
    return f"{raw.topic()}[{raw.partition()}]@{raw.offset()}"


def request_id_for(dag_id: str, task_id: str, run_id: str, map_index: int = -1) -> str:
    """The request id of one task instance: stable across its retries, unique across runs."""
    base = f"{dag_id}.{task_id}.{run_id}"
    return base if map_index < 0 else f"{base}.{map_index}"
