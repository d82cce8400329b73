"""What a handler receives, and the JSON value contract of request messages."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from kafka_workflows import headers as h
from kafka_workflows.errors import MessageDecodeError


def encode_value(value: Any) -> bytes:
    """Request values are JSON; keys are plain UTF-8 strings."""
    return json.dumps(value, separators=(",", ":"), default=str).encode()


def decode_value(raw: bytes | None, where: str) -> Any:
    """Decode a JSON value; `where` (topic[partition]@offset) goes into the error."""
    if raw is None:
        raise MessageDecodeError(f"{where}: message has no value (expected a JSON document)")
    try:
        return json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        preview = raw[:60].decode("utf-8", "replace")
        raise MessageDecodeError(f"{where}: value is not JSON ({exc}); starts with {preview!r}") from exc


@dataclass(frozen=True)
class Message:
    """A decoded request as handlers see it."""

    topic: str
    partition: int
    offset: int
    key: str | None
    value: Any
    headers: dict[str, str] = field(default_factory=dict)
    timestamp_ms: int | None = None

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
    def where(self) -> str:
        return f"{self.topic}[{self.partition}]@{self.offset}"


def request_id_for(dag_id: str, task_id: str, run_id: str, map_index: int = -1) -> str:
    """The request id of one task instance: stable across its retries, unique across runs."""
    base = f"{dag_id}.{task_id}.{run_id}"
    return base if map_index < 0 else f"{base}.{map_index}"
