"""The atomic key-value store (pattern 6): exact completion accounting on an exactly-once processor.

For a store named `S` (DESIGN.md contract):

- `S.commands` (keyed by request id) carries commands: `init(total)`, `complete(job)`,
  `fail(job, reason)`. Everyone may write them; `StoreClient` does, with an idempotent producer.
- `S.store` (compacted, same partition count as `S.commands`) holds the latest value per request.
  The processor writes the value of a request to the *same partition number* as the request's
  commands, so a processor restores exactly the state of the command partitions it owns.
- `S.events` gets one completion event (the final value) per request, in the same transaction
  as the store update that made the request terminal.

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

Commands must be partitioned like the Java client does (murmur2 of the request id); the clients
here use librdkafka's `murmur2_random`. A command found on another partition is forwarded to the
right one, exactly once, inside the processor's transaction.
"""

from __future__ import annotations

import bisect
import json
import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, NamedTuple

from confluent_kafka import OFFSET_BEGINNING, Consumer, IsolationLevel, KafkaError, KafkaException, TopicPartition
from confluent_kafka import Message as KafkaMessage
from confluent_kafka.admin import AdminClient, ConfigResource, OffsetSpec

from kafka_workflows import headers as h
from kafka_workflows.config import check_reachable, client_config
from kafka_workflows.errors import ConfigError, KafkaWorkflowsError, MessageDecodeError
from kafka_workflows.leader_moves import retry_leader_moves
from kafka_workflows.messages import decode_value, encode_value
from kafka_workflows.producer import Delivered, RequestProducer
from kafka_workflows.topics import REPLICATED, TopicSpec, ensure_topics, wait_for_topics
from kafka_workflows.transactions import (
    TP,
    CommittedBatch,
    Output,
    ProcessorStats,
    TransactionalHandler,
    TransactionalProcessor,
)

log = logging.getLogger(__name__)

PENDING = "pending"
RUNNING = "running"
SUCCEEDED = "succeeded"
COMPLETED_WITH_FAILURES = "completed_with_failures"
TERMINAL_STATUSES = frozenset({SUCCEEDED, COMPLETED_WITH_FAILURES})

INIT, COMPLETE, FAIL = "init", "complete", "fail"
OPS = (INIT, COMPLETE, FAIL)

DEFAULT_RETENTION_S = 7 * 24 * 3600.0
MAX_REASON_CHARS = 500
MAX_REASONS = 100  # failed indices are all in failed_jobs; reasons only for the first 100

ValueCallback = Callable[[dict[str, Any]], None]

# Transient while a group's coordinator moves or loads (e.g. __consumer_offsets being created).
_COORDINATOR_NOT_READY = frozenset({KafkaError.NOT_COORDINATOR, KafkaError.COORDINATOR_LOAD_IN_PROGRESS,
                                    KafkaError.COORDINATOR_NOT_AVAILABLE, KafkaError._TIMED_OUT})


class StoreError(KafkaWorkflowsError):
    """The store's topics or data are not what the contract requires."""


class StoreTimeoutError(StoreError, TimeoutError):
    """Reading the store did not reach the end of its partition in time."""


class CommandError(MessageDecodeError):
    """A command on S.commands is not a valid init/complete/fail document."""


# -- names ---------------------------------------------------------------------------------
def commands_topic(name: str) -> str:
    return f"{name}.commands"


def store_topic(name: str) -> str:
    return f"{name}.store"


def events_topic(name: str) -> str:
    return f"{name}.events"


def default_group(name: str) -> str:
    """The store processor's consumer group unless told otherwise."""
    return f"{name}.store-processor"


def _check_name(name: str) -> None:
    if not name or any(c not in "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-" for c in name):
        raise ConfigError(f"store name {name!r} must be non-empty and use only letters, digits, '.', '_' and '-'")


def ensure_store_topics(config: Mapping[str, Any], name: str, partitions: int = 3,
                        timeout: float = 30.0) -> list[str]:
    """Create S.commands, S.store (compacted) and S.events if missing; check existing ones fit together."""
    _check_name(name)
    created = ensure_topics(config, [
        TopicSpec(commands_topic(name), partitions, REPLICATED),
        TopicSpec(store_topic(name), partitions, REPLICATED, config={"cleanup.policy": "compact"}),
        TopicSpec(events_topic(name), partitions, REPLICATED),
    ], timeout=timeout)
    admin = AdminClient(client_config(config))
    topics = wait_for_topics(config, [commands_topic(name), store_topic(name)], timeout)  # reach every broker late
    n_commands = len(topics[commands_topic(name)].partitions)
    n_store = len(topics[store_topic(name)].partitions)
    if n_commands != n_store:
        raise StoreError(f"store {name!r}: {store_topic(name)} has {n_store} partitions but "
                         f"{commands_topic(name)} has {n_commands}; they must be equal")
    resource = ConfigResource(ConfigResource.Type.TOPIC, store_topic(name))
    policy = admin.describe_configs([resource])[resource].result(timeout)["cleanup.policy"].value
    if "compact" not in (policy or ""):
        raise StoreError(f"store {name!r}: {store_topic(name)} has cleanup.policy={policy!r}; it must be compact")
    return created


# -- partitioning --------------------------------------------------------------------------
def murmur2(data: bytes) -> int:
    """Kafka's murmur2 (the Java client's default partitioner hash), as an unsigned 32-bit int."""
    m, r, mask = 0x5BD1E995, 24, 0xFFFFFFFF
    length = len(data)
    h32 = (0x9747B28C ^ length) & mask
    for i in range(0, length - length % 4, 4):
        k = int.from_bytes(data[i:i + 4], "little")
        k = (k * m) & mask
        k ^= k >> r
        k = (k * m) & mask
        h32 = (h32 * m) & mask
        h32 ^= k
    tail = length % 4
    base = length - tail
    if tail == 3:
        h32 ^= data[base + 2] << 16
    if tail >= 2:
        h32 ^= data[base + 1] << 8
    if tail >= 1:
        h32 ^= data[base]
        h32 = (h32 * m) & mask
    h32 ^= h32 >> 13
    h32 = (h32 * m) & mask
    h32 ^= h32 >> 15
    return h32


def partition_for(key: str | bytes, partitions: int) -> int:
    """The partition the Java client (and librdkafka's murmur2_random) puts `key` in."""
    data = key.encode() if isinstance(key, str) else key
    return (murmur2(data) & 0x7FFFFFFF) % partitions


# -- job index sets ------------------------------------------------------------------------
class IndexSet:
    """A set of non-negative ints kept as sorted, disjoint, inclusive ranges (compact in JSON)."""

    def __init__(self, ranges: Iterable[Iterable[int]] = ()) -> None:
        self._starts: list[int] = []
        self._ends: list[int] = []
        self._count = 0
        for pair in ranges:
            start, end = (int(x) for x in pair)
            if start < 0 or end < start:
                raise ValueError(f"invalid index range {[start, end]}")
            if self._starts and start <= self._ends[-1] + 1:  # not in canonical order: merge one by one
                for i in range(start, end + 1):
                    self.add(i)
            else:
                self._starts.append(start)
                self._ends.append(end)
                self._count += end - start + 1

    def __len__(self) -> int:
        return self._count

    def __contains__(self, i: object) -> bool:
        if not isinstance(i, int):
            return False
        pos = bisect.bisect_right(self._starts, i) - 1
        return pos >= 0 and self._ends[pos] >= i

    def add(self, i: int) -> bool:
        """Add `i`; False when it was already there."""
        pos = bisect.bisect_right(self._starts, i) - 1
        if pos >= 0 and self._ends[pos] >= i:
            return False
        joins_left = pos >= 0 and self._ends[pos] == i - 1
        joins_right = pos + 1 < len(self._starts) and self._starts[pos + 1] == i + 1
        if joins_left and joins_right:
            self._ends[pos] = self._ends[pos + 1]
            del self._starts[pos + 1], self._ends[pos + 1]
        elif joins_left:
            self._ends[pos] = i
        elif joins_right:
            self._starts[pos + 1] = i
        else:
            self._starts.insert(pos + 1, i)
            self._ends.insert(pos + 1, i)
        self._count += 1
        return True

    def remove_from(self, limit: int) -> int:
        """Drop every index >= limit; returns how many were dropped."""
        dropped = 0
        while self._starts and self._ends[-1] >= limit:
            start, end = self._starts[-1], self._ends[-1]
            if start >= limit:
                dropped += end - start + 1
                self._starts.pop()
                self._ends.pop()
            else:
                dropped += end - limit + 1
                self._ends[-1] = limit - 1
        self._count -= dropped
        return dropped

    def ranges(self) -> list[list[int]]:
        return [[s, e] for s, e in zip(self._starts, self._ends, strict=True)]

    def __iter__(self) -> Iterator[int]:
        for s, e in zip(self._starts, self._ends, strict=True):
            yield from range(s, e + 1)


# -- commands ------------------------------------------------------------------------------
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


# -- request state -------------------------------------------------------------------------
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
            "completed_jobs": self.completed.ranges(),
            "failed_jobs": self.failed.ranges(),
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
            completed=IndexSet(value.get("completed_jobs", ())), failed=IndexSet(value.get("failed_jobs", ())),
            reasons={int(k): v for k, v in (value.get("failure_reasons") or {}).items()},
            meta=value.get("meta"), created_ts=_parse_iso(value.get("created_at")),
            updated_ts=_parse_iso(value.get("updated_at")),
            completed_ts=_parse_iso(completed_at) if completed_at else None,
            duplicates=int(value.get("duplicates", 0)), rejected=int(value.get("rejected", 0)),
            reasons_truncated=bool(value.get("failure_reasons_truncated", False)),
        )


# -- reading a partition to its end -------------------------------------------------------
def _reader(config: Mapping[str, Any]) -> Consumer:
    return Consumer(client_config(config, **{
        "group.id": "kw-store-reader",  # never joins: assign() only, nothing committed
        "enable.auto.commit": False,
        "isolation.level": "read_committed",
        "enable.partition.eof": True,
        "auto.offset.reset": "earliest",
        "fetch.wait.max.ms": 10,  # the end (EOF) is what we wait for: do not let the broker hold fetches
    }))


def _end_offsets(admin: AdminClient, topic: str, partitions: Iterable[int],
                 isolation: IsolationLevel = IsolationLevel.READ_UNCOMMITTED, timeout: float = 30.0
                 ) -> dict[int, int]:
    """High watermark (read_uncommitted) or last stable offset (read_committed) per partition."""
    request = {TopicPartition(topic, p): OffsetSpec.latest() for p in partitions}

    def ask() -> dict[int, int]:
        futures = admin.list_offsets(request, isolation_level=isolation, request_timeout=timeout)
        return {tp.partition: future.result().offset for tp, future in futures.items()}

    return retry_leader_moves(ask, f"end offsets of {topic}", 2 * timeout,  # FENCED_LEADER_EPOCH: a broker came back
                              refresh=lambda: admin.list_topics(topic, timeout=10))


def read_partition(consumer: Consumer, admin: AdminClient, topic: str, partition: int,
                   on_message: Callable[[KafkaMessage], None], *, start: int = OFFSET_BEGINNING,
                   timeout: float = 60.0, stop: threading.Event | None = None) -> None:
    """Read `topic[partition]` read_committed from `start` up to the high watermark taken now.

    Reading to the high watermark, not to the last stable offset, waits for a transaction that is
    still open (or committed but whose marker is not written yet) to finish: what it committed is
    then part of what we read. Markers take offsets, so the end is detected by partition EOF at or
    past the watermark, not by counting messages.
    """
    high = _end_offsets(admin, topic, [partition])[partition]
    if high <= 0 or (start >= 0 and start >= high):
        return
    consumer.assign([TopicPartition(topic, partition, start)])
    deadline = time.monotonic() + timeout
    position = start
    try:
        while True:
            for msg in consumer.consume(num_messages=1000, timeout=0.05):
                err = msg.error()
                if err is None:
                    on_message(msg)
                    position = msg.offset() + 1
                elif err.code() == KafkaError._PARTITION_EOF:
                    position = msg.offset()
                elif err.fatal():
                    raise KafkaException(err)
                else:
                    log.warning("reading %s[%d]: %s", topic, partition, err.str())
                if position >= high:
                    return
            if stop is not None and stop.is_set():
                raise StoreError(f"reading {topic}[{partition}] interrupted by shutdown")
            if time.monotonic() > deadline:
                raise StoreTimeoutError(
                    f"reading {topic}[{partition}] read_committed stopped at offset {position}, below the high "
                    f"watermark {high}, for {timeout:.0f}s: a transaction there is still open (a crashed "
                    "processor's transaction ends after its transaction.timeout.ms)")
    finally:
        consumer.unassign()


def _decode_store_value(msg: KafkaMessage) -> dict[str, Any] | None:
    if msg.value() is None:
        return None
    value = decode_value(msg.value(), f"{msg.topic()}[{msg.partition()}]@{msg.offset()}")
    if not isinstance(value, dict) or "request_id" not in value:
        raise StoreError(f"{msg.topic()}[{msg.partition()}]@{msg.offset()}: not a store value: {value!r:.200}")
    return value


# -- the processor -------------------------------------------------------------------------
@dataclass
class StoreStats:
    commands: int = 0
    rejected: int = 0
    forwarded: int = 0
    restored: int = 0
    tombstones: int = 0
    completions: int = 0


class StoreHandler(TransactionalHandler):
    """Applies S.commands to per-partition request state; writes S.store values and S.events events."""

    def __init__(self, config: Mapping[str, Any], name: str, *, retention: float = DEFAULT_RETENTION_S,
                 on_update: ValueCallback | None = None, on_complete: ValueCallback | None = None,
                 restore_timeout: float = 120.0, clock: Callable[[], float] = time.time) -> None:
        self.config = dict(config)
        self.name = name
        self.commands, self.store, self.events = commands_topic(name), store_topic(name), events_topic(name)
        self.retention = retention
        self.on_update = on_update
        self.on_complete = on_complete
        self.restore_timeout = restore_timeout
        self.clock = clock
        self.stats = StoreStats()
        self.state: dict[int, dict[str, RequestState]] = {}
        self._dirty: dict[int, set[str]] = {}
        self._completed: dict[int, list[str]] = {}
        self._partitions = 0
        self._admin: AdminClient | None = None
        self._reader: Consumer | None = None
        self.stopping = threading.Event()

    def open(self) -> None:
        self._admin = AdminClient(client_config(self.config))
        topics = self._admin.list_topics(self.commands, timeout=30).topics
        meta = topics.get(self.commands)
        if meta is None or meta.error is not None:
            raise StoreError(f"store {self.name!r}: topic {self.commands} does not exist (run ensure_store_topics)")
        self._partitions = len(meta.partitions)
        self._reader = _reader(self.config)

    def close(self) -> None:
        if self._reader is not None:
            self._reader.close()
            self._reader = None

    # state per partition
    def on_assign(self, partitions: list[TP]) -> None:
        for topic, p in partitions:
            if topic == self.commands:
                self.state[p] = self._restore(p)

    def on_revoke(self, partitions: list[TP]) -> None:
        for topic, p in partitions:
            if topic == self.commands:
                self.state.pop(p, None)
                self._dirty.pop(p, None)
                self._completed.pop(p, None)

    def _restore(self, p: int) -> dict[str, RequestState]:
        assert self._reader is not None and self._admin is not None
        values: dict[str, dict[str, Any] | None] = {}

        def keep(msg: KafkaMessage) -> None:
            key = msg.key().decode() if msg.key() is not None else None
            if key is None:
                log.warning("%s[%d]@%d has no key; ignored", self.store, p, msg.offset())
                return
            try:
                values[key] = _decode_store_value(msg)
            except MessageDecodeError as exc:  # or StoreError: someone else wrote to the store topic
                log.error("ignoring a value that is not a store value: %s", exc)
            except StoreError as exc:
                log.error("ignoring %s", exc)

        started = time.monotonic()
        read_partition(self._reader, self._admin, self.store, p, keep, timeout=self.restore_timeout,
                       stop=self.stopping)
        state = {k: RequestState.from_value(v) for k, v in values.items() if v is not None}
        self.stats.restored += len(state)
        log.info("restored %d request(s) of %s[%d] in %.2fs", len(state), self.store, p, time.monotonic() - started)
        return state

    # commands
    def process(self, message: KafkaMessage) -> Iterable[Output]:
        p = message.partition()
        where = f"{message.topic()}[{p}]@{message.offset()}"
        self.stats.commands += 1
        key = message.key().decode("utf-8", "replace") if message.key() is not None else None
        try:
            cmd = parse_command(key, message.value(), where)
        except MessageDecodeError as exc:
            self.stats.rejected += 1
            log.error("rejected command: %s", exc)
            return ()
        home = partition_for(cmd.request_id, self._partitions)
        if home != p:
            # Produced with another partitioner: move it where its request's state lives.
            self.stats.forwarded += 1
            log.warning("%s: command for %r belongs in partition %d (murmur2); forwarding it", where,
                        cmd.request_id, home)
            return (Output(self.commands, cmd.request_id, message.value(), message.headers(), partition=home),)
        now = self.clock()
        requests = self.state.setdefault(p, {})
        state = requests.get(cmd.request_id)
        if state is None:
            state = requests[cmd.request_id] = RequestState.new(cmd.request_id, now)
            self._dirty.setdefault(p, set()).add(cmd.request_id)
        outcome, why = state.apply(cmd, now)
        if outcome == REJECTED:
            self.stats.rejected += 1
            log.warning("%s: %s of %r rejected: %s", where, cmd.op, cmd.request_id, why)
        elif outcome == IGNORED:
            log.debug("%s: %s of %r ignored: %s", where, cmd.op, cmd.request_id, why)
        if outcome != IGNORED:
            self._dirty.setdefault(p, set()).add(cmd.request_id)
        if outcome == BECAME_TERMINAL:
            self._completed.setdefault(p, []).append(cmd.request_id)
        return ()

    def before_commit(self) -> Iterable[Output]:
        """One store write per changed request (not per command), and the completion events."""
        outputs = []
        for p, keys in self._dirty.items():
            requests = self.state.get(p, {})
            for request_id in sorted(keys):
                state = requests.get(request_id)
                if state is not None:
                    outputs.append(Output(self.store, request_id, encode_value(state.to_value()),
                                          {h.REQUEST_ID: request_id}, partition=p))
        for p, request_ids in self._completed.items():
            for request_id in request_ids:
                final = self.state[p][request_id].to_value()
                outputs.append(Output(self.events, request_id, encode_value(final), {h.REQUEST_ID: request_id}))
        self._dirty, self._completed = {}, {}
        return outputs

    def punctuate(self, now: float) -> Iterable[Output]:
        """Tombstones for terminal requests past the retention (and never-initialised pending ones)."""
        outputs = []
        for p, requests in self.state.items():
            for request_id, state in list(requests.items()):
                since = state.completed_ts if state.terminal else (state.updated_ts if state.total is None else None)
                if since is not None and now - since > self.retention:
                    del requests[request_id]
                    self._dirty.get(p, set()).discard(request_id)
                    outputs.append(Output(self.store, request_id, None, {h.REQUEST_ID: request_id}, partition=p))
                    self.stats.tombstones += 1
        if outputs:
            log.info("deleting %d request(s) older than the retention of %.0fs", len(outputs), self.retention)
        return outputs

    def after_commit(self, batch: CommittedBatch) -> None:
        for out in batch.outputs:
            if out.value is None or out.topic not in (self.store, self.events):
                continue
            value = json.loads(out.value)
            if out.topic == self.store:
                if self.on_update is not None:
                    self.on_update(value)
            else:
                self.stats.completions += 1
                log.info("request %s is %s: %d completed, %d failed of %d", value["request_id"], value["status"],
                         value["completed"], value["failed"], value["total"])
                if self.on_complete is not None:
                    self.on_complete(value)


class StoreProcessor:
    """The exactly-once processor of store `name`: S.commands -> S.store + S.events."""

    def __init__(self, config: Mapping[str, Any], name: str, group: str | None = None, *, partitions: int = 3,
                 instance_id: str | None = None, commit_interval: float = 1.0, max_batch: int = 100_000,
                 retention: float = DEFAULT_RETENTION_S, retention_check_interval: float = 60.0,
                 transaction_timeout_ms: int = 10_000, restore_timeout: float = 120.0,
                 on_update: ValueCallback | None = None, on_complete: ValueCallback | None = None,
                 consumer_overrides: Mapping[str, Any] | None = None,
                 producer_overrides: Mapping[str, Any] | None = None) -> None:
        _check_name(name)
        self.config = dict(config)
        self.name = name
        self.group = group or default_group(name)
        self.partitions = partitions
        self.handler = StoreHandler(config, name, retention=retention, on_update=on_update,
                                    on_complete=on_complete, restore_timeout=restore_timeout)
        self.processor = TransactionalProcessor(
            config, [commands_topic(name)], self.group, self.handler,
            transactional_id_prefix=f"kw-store.{name}", instance_id=instance_id,
            commit_interval=commit_interval, max_batch=max_batch, punctuate_interval=retention_check_interval,
            transaction_timeout_ms=transaction_timeout_ms, consumer_overrides=consumer_overrides,
            producer_overrides=producer_overrides)

    @property
    def stats(self) -> StoreStats:
        return self.handler.stats

    def stop(self, *_: object) -> None:
        self.handler.stopping.set()
        self.processor.stop()

    def install_signal_handlers(self) -> None:
        import signal

        signal.signal(signal.SIGTERM, self.stop)
        signal.signal(signal.SIGINT, self.stop)

    def run(self, ready: threading.Event | None = None) -> ProcessorStats:
        ensure_store_topics(self.config, self.name, self.partitions)
        self.handler.open()
        try:
            return self.processor.run(ready)
        finally:
            self.handler.close()


def run_store_processor(config: Mapping[str, Any], name: str, group: str | None = None, *,
                        install_signal_handlers: bool = True, ready: threading.Event | None = None,
                        **options: Any) -> ProcessorStats:
    """Entry point of `kafka-workflows store-processor --store S`: runs until SIGTERM/SIGINT.

    `options` are StoreProcessor's keyword arguments (partitions, instance_id, commit_interval,
    retention, retention_check_interval, on_update, on_complete, consumer_overrides, ...).
    """
    check_reachable(config)
    processor = StoreProcessor(config, name, group, **options)
    if install_signal_handlers and threading.current_thread() is threading.main_thread():
        processor.install_signal_handlers()
    return processor.run(ready)


# -- the client ----------------------------------------------------------------------------
class StoreClient:
    """Send commands to store `name` and read its values.

    Commands go through an idempotent `RequestProducer` with the murmur2 partitioner; each call
    flushes and raises `DeliveryError` unless `flush=False` (then call `flush()` yourself).
    """

    def __init__(self, config: Mapping[str, Any], name: str, *, group: str | None = None) -> None:
        _check_name(name)
        self.config = dict(config)
        self.name = name
        self.group = group or default_group(name)
        self._producer: RequestProducer | None = None
        self._admin: AdminClient | None = None
        self._partitions: dict[str, int] = {}

    # commands
    def _send(self, command: CommandMessage, flush: bool) -> None:
        if self._producer is None:
            self._producer = RequestProducer(self.config, partitioner="murmur2_random")
        self._producer.send(command.topic, command.value, key=command.key,
                            headers={h.REQUEST_ID: command.key}, raw=True)
        if flush:
            self._producer.flush()

    def flush(self, timeout: float = 60.0) -> list[Delivered]:
        return self._producer.flush(timeout) if self._producer is not None else []

    def init(self, request_id: str, total: int, meta: Mapping[str, Any] | None = None, *, flush: bool = True) -> None:
        self._send(init_command(self.name, request_id, total, meta), flush)

    def complete(self, request_id: str, job: int, *, flush: bool = True) -> None:
        self._send(complete_command(self.name, request_id, job), flush)

    def fail(self, request_id: str, job: int, reason: str, *, flush: bool = True) -> None:
        self._send(fail_command(self.name, request_id, job, reason), flush)

    def init_command(self, request_id: str, total: int, meta: Mapping[str, Any] | None = None) -> CommandMessage:
        return init_command(self.name, request_id, total, meta)

    def complete_command(self, request_id: str, job: int) -> CommandMessage:
        return complete_command(self.name, request_id, job)

    def fail_command(self, request_id: str, job: int, reason: str) -> CommandMessage:
        return fail_command(self.name, request_id, job, reason)

    # reads
    def _admin_client(self) -> AdminClient:
        if self._admin is None:
            self._admin = AdminClient(client_config(self.config))
        return self._admin

    def partition_of(self, request_id: str) -> int:
        """The partition of S.commands and S.store that holds `request_id`."""
        topic = store_topic(self.name)
        if topic not in self._partitions:
            meta = self._admin_client().list_topics(topic, timeout=30).topics.get(topic)
            if meta is None or meta.error is not None or not meta.partitions:
                raise StoreError(f"store {self.name!r}: topic {topic} does not exist (is the store processor "
                                 "or ensure_store_topics run?)")
            self._partitions[topic] = len(meta.partitions)
        return partition_for(request_id, self._partitions[topic])

    def get(self, request_id: str, timeout: float = 30.0) -> dict[str, Any] | None:
        """The latest committed value of `request_id` (read_committed, to the high watermark), or None."""
        return self._latest(request_id, self.partition_of(request_id), timeout)

    def _latest(self, request_id: str, p: int, timeout: float) -> dict[str, Any] | None:
        found: list[dict[str, Any] | None] = [None]
        wanted = request_id.encode()

        def keep(msg: KafkaMessage) -> None:
            if msg.key() == wanted:
                found[0] = _decode_store_value(msg)

        reader = _reader(self.config)
        try:
            read_partition(reader, self._admin_client(), store_topic(self.name), p, keep, timeout=timeout)
        finally:
            reader.close()
        return found[0]

    def wait(self, request_id: str, timeout: float, poll: float = 0.5) -> dict[str, Any] | None:
        """Block until `request_id` is terminal; its final value, or None after `timeout` seconds.

        No gap and no repeated scans: it notes the end of the request's S.events partition, reads
        the store once (a request that finished earlier is found there), then tails S.events from
        the noted offset for the request's one completion event.
        """
        deadline = time.monotonic() + timeout
        topic = events_topic(self.name)
        meta = self._admin_client().list_topics(topic, timeout=30).topics.get(topic)
        if meta is None or meta.error is not None or not meta.partitions:
            raise StoreError(f"store {self.name!r}: topic {topic} does not exist")
        p = partition_for(request_id, len(meta.partitions))
        start = _end_offsets(self._admin_client(), topic, [p])[p]
        value = self.get(request_id, timeout=max(1.0, deadline - time.monotonic()))
        if value is not None and value["status"] in TERMINAL_STATUSES:
            return value
        wanted = request_id.encode()
        reader = _reader(self.config)
        reader.assign([TopicPartition(topic, p, start)])
        try:
            while time.monotonic() < deadline:
                for msg in reader.consume(num_messages=500, timeout=min(poll, max(0.0, deadline - time.monotonic()))):
                    if msg.error() is None and msg.key() == wanted:
                        return _decode_store_value(msg)
        finally:
            reader.close()
        return None

    def registered(self, request_id: str, timeout: float = 30.0) -> dict[str, Any] | None:
        """The init of `request_id` if the store knows it, whether or not the processor has applied it yet.

        Returns the store value when it has a total, else the pending init command (as a dict with
        `status: "init-pending"`), else None. Exact, even right after a producer committed an init
        and with the processor down: it reads the processor group's committed offset of the
        request's S.commands partition (stable under KIP-447), then S.store to its high watermark,
        then the commands the processor has not applied yet, looking for an init.
        """
        p = self.partition_of(request_id)
        commands = commands_topic(self.name)
        offsets = Consumer(client_config(self.config, **{
            "group.id": self.group, "enable.auto.commit": False, "isolation.level": "read_committed"}))
        deadline = time.monotonic() + timeout
        try:
            while True:  # a new group's coordinator may still be loading: NOT_COORDINATOR is retriable
                try:
                    committed = offsets.committed([TopicPartition(commands, p)], timeout=timeout)[0].offset
                    break
                except KafkaException as exc:
                    err = exc.args[0] if exc.args and isinstance(exc.args[0], KafkaError) else None
                    if err is None or not (err.retriable() or err.code() in _COORDINATOR_NOT_READY) \
                            or time.monotonic() > deadline:
                        raise StoreError(f"store {self.name!r}: cannot read the committed offset of group "
                                         f"{self.group!r} on {commands}[{p}]: {exc}") from exc
                    time.sleep(0.2)
        finally:
            offsets.close()
        value = self._latest(request_id, p, timeout)
        if value is not None and value.get("total") is not None:
            return value
        pending: list[dict[str, Any]] = []
        wanted = request_id.encode()

        def look(msg: KafkaMessage) -> None:
            if msg.key() != wanted or pending:
                return
            try:
                cmd = parse_command(request_id, msg.value(), f"{commands}[{p}]@{msg.offset()}")
            except MessageDecodeError:
                return
            if cmd.op == INIT:
                pending.append({"request_id": request_id, "total": cmd.total, "meta": cmd.meta,
                                "status": "init-pending", "offset": msg.offset()})

        reader = _reader(self.config)
        try:
            read_partition(reader, self._admin_client(), commands, p, look,
                           start=committed if committed >= 0 else OFFSET_BEGINNING, timeout=timeout)
        finally:
            reader.close()
        return pending[0] if pending else None

    def close(self) -> None:
        if self._producer is not None:
            self._producer.flush()
            self._producer = None
