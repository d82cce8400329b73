"""What a handler receives, and the JSON value contract of request messages."""

from __future__ import annotations

import json
from typing import Any

from pydantic_core import from_json

from kafka_workflows import headers as h
from kafka_workflows.errors import MessageDecodeError


def encode_value(value: Any) -> bytes:
    """Request values are JSON; keys are plain UTF-8 strings."""
    return json.dumps(value, separators=(",", ":"), default=str).encode()


def decode_value(raw: bytes | None, where: str) -> Any:
    """Decode a JSON value; `where` (topic[partition]@offset) goes into the error.

    pydantic-core's parser: same results as json.loads for JSON documents, several times faster,
    which matters on the worker's per-message path.
    """
    if raw is None:
        raise MessageDecodeError(f"{where}: message has no value (expected a JSON document)")
    try:
        return from_json(raw)
    except ValueError as exc:
        preview = raw[:60].decode("utf-8", "replace")
        raise MessageDecodeError(f"{where}: value is not JSON ({exc}); starts with {preview!r}") from exc


class Message:
    """A decoded request as handlers see it. Headers are decoded on first access."""

    __slots__ = ("_headers", "_raw_headers", "key", "offset", "partition", "timestamp_ms", "topic", "value")

    def __init__(self, topic: str, partition: int, offset: int, key: str | None, value: Any,
                 headers: dict[str, str] | None = None, timestamp_ms: int | None = None,
                 raw_headers: list[tuple[str, bytes]] | None = None) -> None:
        self.topic = topic
        self.partition = partition
        self.offset = offset
        self.key = key
        self.value = value
        self.timestamp_ms = timestamp_ms
        self._headers = headers
        self._raw_headers = raw_headers

    @property
    def headers(self) -> dict[str, str]:
        if self._headers is None:
            self._headers = h.decode(self._raw_headers)
        return self._headers

    @property
    def request_id(self) -> str | None:
        return self.headers.get(h.REQUEST_ID)

    @property
    def workflow(self) -> str | None:
        return self.headers.get(h.WORKFLOW)

    @property
    def attempt(self) -> int:
        return int(self.headers.get(h.ATTEMPT, "1"))

    @property
    def original_topic(self) -> str:
        """The request topic, also when this delivery comes from a retry topic."""
        return self.headers.get(h.ORIGINAL_TOPIC, self.topic)

    @property
    def where(self) -> str:
        return f"{self.topic}[{self.partition}]@{self.offset}"

    def __repr__(self) -> str:
        return f"Message({self.where}, key={self.key!r}, value={self.value!r})"


def request_id_for(dag_id: str, task_id: str, run_id: str, map_index: int = -1) -> str:
    """The request id of one task instance: stable across its retries, unique across runs."""
    base = f"{dag_id}.{task_id}.{run_id}"
    return base if map_index < 0 else f"{base}.{map_index}"
