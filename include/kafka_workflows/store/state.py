"""One request's accounting, as pure data: the rules the store processor applies, and the store value.

Accounting rules (what `RequestState.apply` implements):

- Job *indices* are counted, not events: a repeated `complete` of job 7 changes nothing (it only
  bumps `duplicates`), so at-least-once reporters cannot over-count.
- The first terminal outcome of a job wins: a job that completed and later "fails" (or failed and
  later "completes", e.g. a dead-letter replay) keeps its first outcome; the second command is
  counted in `rejected` and logged. This keeps the counts monotonic, which is what a waiting DAG
  relies on.
- When `completed + failed == total` the request is terminal: `succeeded` when nothing failed,
  else `completed_with_failures`. A terminal value is final: later commands are ignored.
- Commands that arrive before `init` are kept (`status: pending`, `total: null`) and resolved when
  `init` arrives; indices >= total are then dropped into `rejected`. A second `init` with the same
  total is a no-op, one with a different total is rejected and logged.
- Indices must be in `[0, total)`; out-of-range ones are rejected.
- Terminal requests whose `completed_at` (and never-initialised pending ones whose `updated_at`)
  are older than the retention are deleted with a tombstone, inside a transaction. A request
  deleted this way is unknown again: keep the retention longer than any retry of its producer.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from confluent_kafka import Message as KafkaMessage

from kafka_workflows.messages import decode_value
from kafka_workflows.store.commands import COMPLETE, FAIL, INIT, Command
from kafka_workflows.store.errors import StoreError
from kafka_workflows.store.indexcodec import decode_ranges, encode_ranges
from kafka_workflows.store.indexset import IndexSet

PENDING = "pending"
RUNNING = "running"
SUCCEEDED = "succeeded"
COMPLETED_WITH_FAILURES = "completed_with_failures"
TERMINAL_STATUSES = frozenset({SUCCEEDED, COMPLETED_WITH_FAILURES})
MAX_REASONS = 100  # failed indices are all in failed_jobs; reasons only for the first 100


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _parse_iso(text: str | None) -> float:
    if not text:
        return 0.0
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


# What RequestState.apply reports.
CHANGED, BECAME_TERMINAL, DUPLICATE, REJECTED, IGNORED = "changed", "terminal", "duplicate", "rejected", "ignored"


@dataclass
class RequestState:
    """One request's accounting; `to_value()` is what S.store holds."""

    request_id: str
    total: int | None = None
    completed: IndexSet = field(default_factory=IndexSet)
    failed: IndexSet = field(default_factory=IndexSet)
    reasons: dict[int, str] = field(default_factory=dict)
    meta: dict[str, Any] | None = None
    created_ts: float = 0.0
    updated_ts: float = 0.0
    completed_ts: float | None = None
    duplicates: int = 0
    rejected: int = 0
    reasons_truncated: bool = False

    @property
    def terminal(self) -> bool:
        return self.total is not None and len(self.completed) + len(self.failed) >= self.total

    @property
    def status(self) -> str:
        if self.total is None:
            return PENDING
        if not self.terminal:
            return RUNNING
        return SUCCEEDED if not self.failed else COMPLETED_WITH_FAILURES

    def apply(self, cmd: Command, now: float) -> tuple[str, str]:
        """Apply `cmd`; returns (outcome, explanation). Outcomes CHANGED and BECAME_TERMINAL need a write."""
        if self.terminal:
            return IGNORED, f"request is already {self.status}"
        if cmd.op == INIT:
            assert cmd.total is not None
            if self.total is not None:
                if self.total == cmd.total:
                    return IGNORED, "repeated init with the same total"
                self.rejected += 1
                return self._touch(now, REJECTED), f"init with total={cmd.total} but total is already {self.total}"
            self.total, self.meta = cmd.total, cmd.meta
            dropped = self.completed.remove_from(cmd.total) + self.failed.remove_from(cmd.total)
            for job in [j for j in self.reasons if j >= cmd.total]:
                del self.reasons[job]
            self.rejected += dropped
            return self._touch(now, CHANGED), (f"{dropped} earlier job index(es) >= total dropped" if dropped else "")
        assert cmd.job is not None
        job = cmd.job
        if self.total is not None and job >= self.total:
            self.rejected += 1
            return self._touch(now, REJECTED), f"job {job} is out of range for total={self.total}"
        mine, other = (self.completed, self.failed) if cmd.op == COMPLETE else (self.failed, self.completed)
        if job in mine:
            self.duplicates += 1
            return self._touch(now, DUPLICATE), f"job {job} already {cmd.op}d"
        if job in other:
            self.rejected += 1
            first = "failed" if cmd.op == COMPLETE else "completed"
            return self._touch(now, REJECTED), f"job {job} already {first}; the first outcome wins"
        mine.add(job)
        if cmd.op == FAIL:
            if len(self.reasons) < MAX_REASONS:
                self.reasons[job] = cmd.reason or ""
            else:
                self.reasons_truncated = True
        return self._touch(now, CHANGED), ""

    def _touch(self, now: float, outcome: str) -> str:
        self.updated_ts = now
        if self.terminal and self.completed_ts is None:
            self.completed_ts = now
            return BECAME_TERMINAL
        return outcome

    def to_value(self) -> dict[str, Any]:
        return {
            "request_id": self.request_id,
            "total": self.total,
            "completed": len(self.completed),
            "failed": len(self.failed),
            "status": self.status,
            "created_at": _iso(self.created_ts),
            "updated_at": _iso(self.updated_ts),
            "completed_at": _iso(self.completed_ts) if self.completed_ts is not None else None,
            "meta": self.meta,
            # Ranges while few, else a compressed bitmap: small in any completion order (store/indexcodec.py).
            "completed_jobs": encode_ranges(self.completed.ranges()),
            "failed_jobs": encode_ranges(self.failed.ranges()),
            "failure_reasons": {str(k): v for k, v in sorted(self.reasons.items())},
            "failure_reasons_truncated": self.reasons_truncated,
            "duplicates": self.duplicates,
            "rejected": self.rejected,
        }

    @classmethod
    def new(cls, request_id: str, now: float) -> RequestState:
        return cls(request_id, created_ts=now, updated_ts=now)

    @classmethod
    def from_value(cls, value: Mapping[str, Any]) -> RequestState:
        completed_at = value.get("completed_at")
        return cls(
            request_id=value["request_id"], total=value.get("total"),
            completed=IndexSet(decode_ranges(value.get("completed_jobs"))),
            failed=IndexSet(decode_ranges(value.get("failed_jobs"))),
            reasons={int(k): v for k, v in (value.get("failure_reasons") or {}).items()},
            meta=value.get("meta"), created_ts=_parse_iso(value.get("created_at")),
            updated_ts=_parse_iso(value.get("updated_at")),
            completed_ts=_parse_iso(completed_at) if completed_at else None,
            duplicates=int(value.get("duplicates", 0)), rejected=int(value.get("rejected", 0)),
            reasons_truncated=bool(value.get("failure_reasons_truncated", False)),
        )


def decode_store_value(msg: KafkaMessage) -> dict[str, Any] | None:
    if msg.value() is None:
        return None
    value = decode_value(msg.value(), f"{msg.topic()}[{msg.partition()}]@{msg.offset()}")
    if not isinstance(value, dict) or "request_id" not in value:
        raise StoreError(f"{msg.topic()}[{msg.partition()}]@{msg.offset()}: not a store value: {value!r:.200}")
    return value
