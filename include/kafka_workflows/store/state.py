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
- A pipelined split's `progress(jobs, rows)` is kept in the value's `split` field
  (`{"jobs": n, "rows": r}`, the largest reported; null before the first), so a pending request
  shows how far the split has read, and a retried split finds where to go on.
- `abort(reason)` before `init` ends the request `aborted` (terminal, total null, `error` says
  why): the split failed for good after some of its jobs were committed, so the total will never
  be sealed and a waiting DAG must fail instead of waiting. An `abort` after `init` is rejected:
  a sealed request completes from its jobs' outcomes.
- `corrupt` is terminal too: a stored value that cannot be decoded or fails validation on restore
  (anyone can write to S.store), or a value that would outgrow a record of S.store, ends that one
  request `corrupt` with an `error` saying why (never quoting content); the processor goes on with
  the others, and a waiting DAG fails with that status. Later commands of it are ignored.
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
from kafka_workflows.store.commands import ABORT, COMPLETE, FAIL, INIT, MAX_ROWS, PROGRESS, Command
from kafka_workflows.store.errors import StoreError
from kafka_workflows.store.indexcodec import decode_ranges, encode_ranges
from kafka_workflows.store.indexset import IndexSet
from kafka_workflows.store.limits import DEFAULT_LIMITS, StoreLimits, check_request_id

PENDING = "pending"
RUNNING = "running"
SUCCEEDED = "succeeded"
COMPLETED_WITH_FAILURES = "completed_with_failures"
CORRUPT = "corrupt"  # the stored value could not be restored (or stored): the request's accounting is lost
ABORTED = "aborted"  # the split failed for good before sealing the total: the request will never complete
TERMINAL_STATUSES = frozenset({SUCCEEDED, COMPLETED_WITH_FAILURES, CORRUPT, ABORTED})
MAX_ERROR_CHARS = 500
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
    corrupt: str | None = None  # why the request is corrupt (sizes and field names, never content)
    split_jobs: int | None = None  # the split's last progress: jobs committed, rows read
    split_rows: int = 0
    aborted: str | None = None  # why the split gave up (abort command), when it did

    @property
    def terminal(self) -> bool:
        if self.corrupt is not None or self.aborted is not None:
            return True
        return self.total is not None and len(self.completed) + len(self.failed) >= self.total

    @property
    def status(self) -> str:
        if self.corrupt is not None:
            return CORRUPT
        if self.aborted is not None:
            return ABORTED
        if self.total is None:
            return PENDING
        if not self.terminal:
            return RUNNING
        return SUCCEEDED if not self.failed else COMPLETED_WITH_FAILURES

    def apply(self, cmd: Command, now: float) -> tuple[str, str]:
        """Apply `cmd`; returns (outcome, explanation). Outcomes CHANGED and BECAME_TERMINAL need a write."""
        if self.terminal:
            return IGNORED, f"request is already {self.status}"
        if cmd.op == PROGRESS:
            assert cmd.jobs is not None and cmd.rows is not None
            if self.split_jobs is not None and (cmd.jobs, cmd.rows) <= (self.split_jobs, self.split_rows):
                return IGNORED, "progress already recorded"
            self.split_jobs, self.split_rows = cmd.jobs, cmd.rows
            return self._touch(now, CHANGED), ""
        if cmd.op == ABORT:
            if self.total is not None:
                self.rejected += 1
                return self._touch(now, REJECTED), f"abort after init (total={self.total}): the request is sealed"
            self.aborted = (cmd.reason or "the split gave up")[:MAX_ERROR_CHARS]
            return self._touch(now, BECAME_TERMINAL), ""
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
        if self.corrupt is not None:
            return {
                "request_id": self.request_id, "total": self.total, "completed": 0, "failed": 0,
                "status": CORRUPT, "error": self.corrupt, "created_at": _iso(self.created_ts),
                "updated_at": _iso(self.updated_ts),
                "completed_at": _iso(self.completed_ts) if self.completed_ts is not None else None,
                "meta": None, "completed_jobs": [], "failed_jobs": [], "failure_reasons": {},
                "failure_reasons_truncated": False, "duplicates": 0, "rejected": 0,
            }
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
            "split": None if self.split_jobs is None else {"jobs": self.split_jobs, "rows": self.split_rows},
            **({"error": self.aborted} if self.aborted is not None else {}),
        }

    @classmethod
    def new(cls, request_id: str, now: float) -> RequestState:
        return cls(request_id, created_ts=now, updated_ts=now)

    @classmethod
    def corrupted(cls, request_id: str, why: str, now: float, total: int | None = None) -> RequestState:
        """A terminal `corrupt` request: its accounting could not be restored (or stored)."""
        return cls(request_id, total=total, created_ts=now, updated_ts=now, completed_ts=now,
                   corrupt=why[:MAX_ERROR_CHARS])

    @classmethod
    def from_value(cls, value: Mapping[str, Any], limits: StoreLimits = DEFAULT_LIMITS) -> RequestState:
        """The state a store value describes; StoreError (naming the field, not its content) when the
        value breaks the store's contract or limits (store/limits.py)."""
        if not isinstance(value, Mapping):
            raise StoreError(f"a store value must be a JSON object, got {type(value).__name__}")
        try:
            return cls._from_value(value, limits)
        except StoreError:
            raise
        except (ValueError, TypeError, KeyError, OverflowError, AttributeError) as exc:
            raise StoreError(f"a store value does not restore ({type(exc).__name__}: {str(exc)[:200]})") from None

    @classmethod
    def _from_value(cls, value: Mapping[str, Any], limits: StoreLimits) -> RequestState:
        request_id = value.get("request_id")
        problem = check_request_id(request_id, limits)
        if problem is not None:
            raise StoreError(f"a store value's {problem}")
        assert isinstance(request_id, str)
        total = value.get("total")
        if total is not None and not _count(total, limits.max_total):
            raise StoreError(f"a store value's total must be an integer in 0..{limits.max_total:,}")
        bound = limits.max_total if total is None else total
        completed_at = value.get("completed_at")
        if value.get("status") == CORRUPT:
            error = value.get("error")
            state = cls.corrupted(request_id, error if isinstance(error, str) else "corrupt", 0.0, total)
            state.created_ts, state.updated_ts = _timestamp(value, "created_at"), _timestamp(value, "updated_at")
            state.completed_ts = _timestamp(value, "completed_at") if completed_at else state.updated_ts
            return state
        completed = IndexSet(_ranges(value.get("completed_jobs"), bound, "completed_jobs"))
        failed = IndexSet(_ranges(value.get("failed_jobs"), bound, "failed_jobs"))
        for name, indices in (("completed", completed), ("failed", failed)):
            if name in value and value[name] != len(indices):
                raise StoreError(f"a store value's {name} count differs from its {name}_jobs")
        reasons_raw = value.get("failure_reasons") or {}
        if not isinstance(reasons_raw, Mapping):
            raise StoreError("a store value's failure_reasons must be an object")
        reasons = {}
        for k, v in list(reasons_raw.items())[:MAX_REASONS]:
            if not isinstance(k, str) or not k.isdigit() or len(k) > 20 or not isinstance(v, str):
                raise StoreError("a store value's failure_reasons must map job indices to strings")
            reasons[int(k)] = v[:limits.max_reason_chars]
        meta = value.get("meta")
        if meta is not None and not isinstance(meta, dict):
            raise StoreError("a store value's meta must be an object")
        split = value.get("split")
        if split is not None and not (isinstance(split, Mapping) and _count(split.get("jobs"), limits.max_total)
                                      and _count(split.get("rows"), MAX_ROWS)):
            raise StoreError(f"a store value's split must be {{jobs, rows}} counts (jobs up to {limits.max_total:,})")
        aborted = None
        if value.get("status") == ABORTED:
            error = value.get("error")
            aborted = (error if isinstance(error, str) and error else "the split gave up")[:MAX_ERROR_CHARS]
        counters = {}
        for name in ("duplicates", "rejected"):
            counters[name] = value.get(name, 0)
            if not _count(counters[name], 2**63 - 1):
                raise StoreError(f"a store value's {name} must be an integer >= 0")
        return cls(
            request_id=request_id, total=total, completed=completed, failed=failed, reasons=reasons, meta=meta,
            created_ts=_timestamp(value, "created_at"), updated_ts=_timestamp(value, "updated_at"),
            completed_ts=_timestamp(value, "completed_at") if completed_at else None,
            duplicates=counters["duplicates"], rejected=counters["rejected"],
            reasons_truncated=bool(value.get("failure_reasons_truncated", False)),
            split_jobs=split["jobs"] if split is not None else None,
            split_rows=split["rows"] if split is not None else 0,
            aborted=aborted,
        )


def _count(value: object, bound: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= bound


def _timestamp(value: Mapping[str, Any], name: str) -> float:
    text = value.get(name)
    if text is not None and (not isinstance(text, str) or len(text) > 40):
        raise StoreError(f"a store value's {name} must be an ISO timestamp")
    try:
        return _parse_iso(text)
    except ValueError:
        raise StoreError(f"a store value's {name} is not an ISO timestamp") from None


def _ranges(encoded: object, bound: int, name: str) -> list[list[int]]:
    """Sorted, disjoint index ranges within [0, bound), or StoreError naming the field."""
    if isinstance(encoded, list) and not all(
            isinstance(pair, list) and len(pair) == 2 and all(_count(x, bound) for x in pair) for pair in encoded):
        raise StoreError(f"a store value's {name} must be [start, end] pairs of indices below {bound:,}")
    try:
        ranges = decode_ranges(encoded)
    except ValueError as exc:
        raise StoreError(f"a store value's {name}: {exc}") from None
    previous = -1
    for start, end in ranges:
        if not previous < start <= end < bound:
            raise StoreError(f"a store value's {name} must be sorted, disjoint ranges of indices below {bound:,}")
        previous = end
    return ranges


def corrupt_value(request_id: str, why: str) -> dict[str, Any]:
    """What a reader shows for a stored value it cannot read: the request is `corrupt`, with why."""
    return RequestState.corrupted(request_id, f"the stored value could not be restored: {why}", 0.0).to_value()


def decode_store_value(msg: KafkaMessage) -> dict[str, Any] | None:
    where = f"{msg.topic()}[{msg.partition()}]@{msg.offset()}"
    if msg.value() is None:
        return None
    value = decode_value(msg.value(), where)
    if not isinstance(value, dict) or "request_id" not in value:
        raise StoreError(f"{where}: not a store value ({type(value).__name__} of {len(msg.value()):,} bytes "
                         "without a request_id)")
    return value
