"""Store commands: `init(total)`, `complete(job)`, `fail(job, reason)` on S.commands, keyed by request id.

`parse_command` validates one message and names the offset and the field in its error;
the builders validate what they build the same way, so a bad command fails where it is made.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

from kafka_workflows.messages import decode_value, encode_value
from kafka_workflows.store.errors import CommandError
from kafka_workflows.store.topics import commands_topic

INIT, COMPLETE, FAIL = "init", "complete", "fail"
OPS = (INIT, COMPLETE, FAIL)
MAX_REASON_CHARS = 500


@dataclass(frozen=True)
class Command:
    op: str
    request_id: str
    total: int | None = None
    job: int | None = None
    reason: str | None = None
    meta: dict[str, Any] | None = None


def _is_index(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def parse_command(key: str | None, raw: bytes | None, where: str) -> Command:
    """Validate one S.commands message; the error names the offset and the field."""
    value = decode_value(raw, where)
    if not isinstance(value, dict):
        raise CommandError(f"{where}: a command must be a JSON object, got {type(value).__name__}")
    op = value.get("op")
    if op not in OPS:
        raise CommandError(f"{where}: unknown op {op!r}; expected one of {', '.join(OPS)}")
    request_id = value.get("request_id")
    if not isinstance(request_id, str) or not request_id:
        raise CommandError(f"{where}: {op} needs a non-empty string request_id, got {request_id!r}")
    if key is not None and key != request_id:
        raise CommandError(f"{where}: message key {key!r} differs from request_id {request_id!r}")
    if op == INIT:
        total, meta = value.get("total"), value.get("meta")
        if not _is_index(total):
            raise CommandError(f"{where}: init of {request_id!r} needs an integer total >= 0, got {total!r}")
        if meta is not None and not isinstance(meta, dict):
            raise CommandError(f"{where}: init of {request_id!r}: meta must be an object, got {type(meta).__name__}")
        return Command(INIT, request_id, total=total, meta=meta)
    job = value.get("job")
    if not _is_index(job):
        raise CommandError(f"{where}: {op} of {request_id!r} needs an integer job index >= 0, got {job!r}")
    reason = None
    if op == FAIL:
        raw_reason = value.get("reason")
        reason = ("" if raw_reason is None else str(raw_reason))[:MAX_REASON_CHARS]
    return Command(op, request_id, job=job, reason=reason)


class CommandMessage(NamedTuple):
    """A command as (topic, key, value): include it in your own (transactional) producer's send."""

    topic: str
    key: str
    value: bytes


def command_message(name: str, op: str, request_id: str, **fields: Any) -> CommandMessage:
    """Encode a command for store `name`; validated the way the processor will validate it."""
    body = {"op": op, "request_id": request_id, **{k: v for k, v in fields.items() if v is not None}}
    value = encode_value(body)
    parse_command(request_id, value, f"{commands_topic(name)} (command being built)")
    return CommandMessage(commands_topic(name), request_id, value)


def init_command(name: str, request_id: str, total: int, meta: Mapping[str, Any] | None = None) -> CommandMessage:
    return command_message(name, INIT, request_id, total=total, meta=dict(meta) if meta is not None else None)


def complete_command(name: str, request_id: str, job: int) -> CommandMessage:
    return command_message(name, COMPLETE, request_id, job=job)


def fail_command(name: str, request_id: str, job: int, reason: str) -> CommandMessage:
    return command_message(name, FAIL, request_id, job=job, reason=str(reason)[:MAX_REASON_CHARS])
