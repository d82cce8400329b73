"""The store's limits: what a command may say, and what a store value may hold.

A topic holds whatever any producer wrote, so every bound below is checked once, where a command
enters the store processor (store/commands.py `parse_command`), and a command outside them is
dead-lettered to `S.commands.<group>.dlq` with the reason. What passes can always be stored and
restored: a job-index set never spans more than `max_total` indices (the bitmap of
store/indexcodec.py stays below a few hundred kB), and a value that would not fit a record of
the store topic ends its request `corrupt` instead of failing the transaction in a loop.

Limits (name: default; how to configure):

- `max_total`: 10,000,000 (= indexcodec.MAX_SIZE, the most any store reader decodes; it may be
  lowered, not raised). A request's total is in 0..max_total and every job index below
  max_total, else the command is dead-lettered; an index at or beyond the request's known total
  is rejected by the accounting (counted in the value's `rejected`, as store/state.py says).
  `StoreProcessor(..., limits=StoreLimits(max_total=N))`, `store-processor --max-total N`.
- `max_request_id_bytes`: 512. A request id is a non-empty string of at most this many UTF-8
  bytes (the record key must equal it). `--max-request-id-bytes N`.
- `max_reason_chars`: 500. A `fail` command's reason is truncated to it (not refused).
  `--max-reason-chars N`.
- `max_command_bytes`: 65,536. One command record, key + value. `--max-command-bytes N`.
- a store value: the record limit of S.store and S.events (topic `max.message.bytes`, broker and
  producer `message.max.bytes`, librdkafka's default 1,000,000) less 2,048 bytes for the key,
  header and framing. A request whose value would be larger ends `corrupt`.
"""

from __future__ import annotations

from dataclasses import dataclass

from kafka_workflows.errors import ConfigError
from kafka_workflows.headers import MAX_REQUEST_ID_BYTES
from kafka_workflows.store.indexcodec import MAX_SIZE

MAX_TOTAL = MAX_SIZE  # 10,000,000
MAX_REASON_CHARS = 500
MAX_COMMAND_BYTES = 65_536


@dataclass(frozen=True)
class StoreLimits:
    """The bounds a store processor applies (see the module docstring for each)."""

    max_total: int = MAX_TOTAL
    max_request_id_bytes: int = MAX_REQUEST_ID_BYTES
    max_reason_chars: int = MAX_REASON_CHARS
    max_command_bytes: int = MAX_COMMAND_BYTES

    def __post_init__(self) -> None:
        if not 1 <= self.max_total <= MAX_TOTAL:
            raise ConfigError(f"store max_total must be in 1..{MAX_TOTAL:,} (what every store reader decodes), "
                              f"got {self.max_total}")
        for name in ("max_request_id_bytes", "max_reason_chars", "max_command_bytes"):
            if getattr(self, name) < 1:
                raise ConfigError(f"store {name} must be >= 1, got {getattr(self, name)}")


DEFAULT_LIMITS = StoreLimits()


def check_request_id(request_id: object, limits: StoreLimits = DEFAULT_LIMITS) -> str | None:
    """Why `request_id` is not a valid request id (None when it is); the reason never quotes it."""
    if not isinstance(request_id, str):
        return f"request_id must be a string, got {type(request_id).__name__}"
    if not request_id:
        return "request_id is empty"
    size = len(request_id.encode("utf-8", "surrogatepass"))
    if size > limits.max_request_id_bytes:
        return f"request_id is {size:,} bytes, more than the {limits.max_request_id_bytes:,} allowed"
    return None
