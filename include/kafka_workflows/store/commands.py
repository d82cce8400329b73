"""Store commands on S.commands, keyed by request id: `init(total)`, `complete(job)`, `fail(job, reason)`,
and the split's `progress(jobs, rows)` and `abort(reason)`.

- `init(total, meta)`: seals the request's total (a pipelined split writes it in its last transaction).
- `complete(job)` / `fail(job, reason)`: one job's outcome, counted by index (store/state.py).
- `progress(jobs, rows)`: a pipelined split committed jobs `0..jobs-1` so far, having read `rows` rows;
  it travels in the same transaction as those jobs, so it is exact, and a retried split reads it to
  skip what an earlier attempt committed (`StoreClient.split_state`). `jobs` is in 0..max_total,
  `rows` in 0..2**53.
- `abort(reason)`: the split failed for good before sealing the total; the request ends `aborted`
  (terminal: a waiting DAG fails with the reason). An abort of a sealed request is rejected.

`parse_command` is the store's one inbound boundary: it turns one record into a typed, bounded
`Command` (store/limits.py: request id non-empty and bounded, total in 0..max_total, job index
below max_total, reason bounded, whole record bounded; index < a known total is the accounting's
rule, store/state.py) or raises `CommandError` naming the offset and the
field, never quoting the content. The builders validate what they build the same way, so a bad
command fails where it is made.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

from kafka_workflows.messages import decode_value, encode_value
from kafka_workflows.store.errors import CommandError
from kafka_workflows.store.limits import DEFAULT_LIMITS, MAX_REASON_CHARS, StoreLimits, check_request_id
from kafka_workflows.store.topics import commands_topic

INIT, COMPLETE, FAIL, PROGRESS, ABORT = "init", "complete", "fail", "progress", "abort"
OPS = (INIT, COMPLETE, FAIL, PROGRESS, ABORT)
MAX_ROWS = 2**53  # rows a split may report having read (what a JSON reader anywhere holds exactly)
__all__ = ["ABORT", "COMPLETE", "FAIL", "INIT", "MAX_REASON_CHARS", "MAX_ROWS", "OPS", "PROGRESS", "Command",
           "CommandMessage", "abort_command", "command_message", "complete_command", "fail_command", "init_command",
           "parse_command", "progress_command"]


@dataclass(frozen=True)
class Command:
    op: str
    request_id: str
    total: int | None = None
    job: int | None = None
    reason: str | None = None
    meta: dict[str, Any] | None = None
    jobs: int | None = None  # progress: jobs 0..jobs-1 committed by the split
    rows: int | None = None  # progress: rows the split had read when it committed them


def _describe(value: object) -> str:
    """A field's shape for an error, never its content."""
    if isinstance(value, bool) or not isinstance(value, int):
        return type(value).__name__
    return "a negative integer" if value < 0 else f"an integer of {len(str(value))} digits"


def _index(value: object, bound: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value < bound


def parse_command(key: str | bytes | None, raw: bytes | None, where: str,
                  limits: StoreLimits = DEFAULT_LIMITS) -> Command:
    """Validate and bound one S.commands record; the error names the offset and the field.

    A job index is bounded by `max_total` here; one at or beyond its request's known total is
    rejected by the accounting (store/state.py: counted in the value's `rejected`).
    """
    size = len(raw or b"") + len(key.encode() if isinstance(key, str) else key or b"")
    if size > limits.max_command_bytes:
        raise CommandError(f"{where}: the command is {size:,} bytes, more than the {limits.max_command_bytes:,} "
                           "allowed (max_command_bytes)")
    if isinstance(key, bytes):
        try:
            key = key.decode("utf-8")
        except UnicodeDecodeError:
            raise CommandError(f"{where}: the message key is not UTF-8 ({len(key)} bytes)") from None
    value = decode_value(raw, where)
    if not isinstance(value, dict):
        raise CommandError(f"{where}: a command must be a JSON object, got {type(value).__name__}")
    op = value.get("op")
    if op not in OPS:
        raise CommandError(f"{where}: unknown op ({_describe(op) if not isinstance(op, str) else f'{len(op)} chars'});"
                           f" expected one of {', '.join(OPS)}")
    request_id = value.get("request_id")
    problem = check_request_id(request_id, limits)
    if problem is not None:
        raise CommandError(f"{where}: {op} needs a non-empty string request_id: {problem}")
    if key is not None and key != request_id:
        raise CommandError(f"{where}: the message key ({len(key)} chars) differs from the request_id "
                           f"({len(request_id)} chars)")
    if op == INIT:
        total_, meta = value.get("total"), value.get("meta")
        if not _index(total_, limits.max_total + 1):
            raise CommandError(f"{where}: init needs an integer total in 0..{limits.max_total:,} (max_total), "
                               f"got {_describe(total_)}")
        if meta is not None and not isinstance(meta, dict):
            raise CommandError(f"{where}: init: meta must be an object, got {type(meta).__name__}")
        return Command(INIT, request_id, total=total_, meta=meta)
    if op == PROGRESS:
        jobs, rows = value.get("jobs"), value.get("rows")
        if not _index(jobs, limits.max_total + 1):
            raise CommandError(f"{where}: progress needs an integer jobs in 0..{limits.max_total:,} (max_total), "
                               f"got {_describe(jobs)}")
        if not _index(rows, MAX_ROWS + 1):
            raise CommandError(f"{where}: progress needs an integer rows in 0..2**53, got {_describe(rows)}")
        return Command(PROGRESS, request_id, jobs=jobs, rows=rows)
    if op == ABORT:
        raw_reason = value.get("reason")
        why = "" if raw_reason is None else str(raw_reason)
        return Command(ABORT, request_id, reason=why[:limits.max_reason_chars])
    job = value.get("job")
    if not _index(job, limits.max_total):
        raise CommandError(f"{where}: {op} needs an integer job index in 0..{limits.max_total - 1:,} (below "
                           f"max_total), got {_describe(job)}")
    reason = None
    if op == FAIL:
        raw_reason = value.get("reason")
        reason = ("" if raw_reason is None else str(raw_reason))[:limits.max_reason_chars]
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


def progress_command(name: str, request_id: str, jobs: int, rows: int) -> CommandMessage:
    return command_message(name, PROGRESS, request_id, jobs=jobs, rows=rows)


def abort_command(name: str, request_id: str, reason: str) -> CommandMessage:
    return command_message(name, ABORT, request_id, reason=str(reason)[:MAX_REASON_CHARS])
