"""The atomic key-value store (pattern 6): exact completion accounting on an exactly-once processor.

For a store named `S` (DESIGN.md contract):

- `S.commands` (keyed by request id) carries commands: `init(total)`, `complete(job)`,
  `fail(job, reason)`. Everyone may write them; `StoreClient` does, with an idempotent producer.
- `S.store` (compacted, same partition count as `S.commands`) holds the latest value per request.
  The processor writes the value of a request to the *same partition number* as the request's
  commands, so a processor restores exactly the state of the command partitions it owns.
- `S.events` gets one completion event (the final value) per request, in the same transaction
  as the store update that made the request terminal. That transaction commits as soon as the
  processor has drained its input (`commit_soon`), not at the commit interval: the interval batches
  progress updates under load, it never delays a completion on an idle store.

See store/state.py for the accounting rules and store/limits.py for the bounds. Every command is
parsed and bounded once, where it enters (`parse_command`); one outside the limits is dead-lettered
to `S.commands.<group>.dlq` in the processor's transaction, with the reason in kw-error-type and
kw-error-message, and the processor goes on. Restore never stops the processor: a stored value
that cannot be decoded or validated marks that one request `corrupt` (written back to S.store and
S.events, so followers and waiters see it) and the others restore as usual. A value that would
not fit a record of S.store is never produced: its request ends `corrupt` instead.

Commands must be partitioned like the Java client does (murmur2 of the request id); a command
found on another partition is forwarded to the right one, exactly once, inside the processor's
transaction. Terminal requests older than the retention are deleted with a tombstone, inside a
transaction.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from confluent_kafka import Consumer, KafkaException
from confluent_kafka import Message as KafkaMessage
from confluent_kafka.admin import AdminClient

from kafka_workflows import headers as h
from kafka_workflows.eos.handler import TP, CommittedBatch, Output, TransactionalHandler
from kafka_workflows.eos.processor import ProcessorStats, TransactionalProcessor
from kafka_workflows.errors import MessageDecodeError
from kafka_workflows.kafka.config import check_reachable, client_config
from kafka_workflows.kafka.msgsize import PRODUCER_DEFAULT, message_limit
from kafka_workflows.kafka.reader import partition_reader, read_partition
from kafka_workflows.messages import encode_value
from kafka_workflows.observe import Telemetry, tracing
from kafka_workflows.store.commands import Command, parse_command
from kafka_workflows.store.errors import StoreError, StoreTimeoutError
from kafka_workflows.store.limits import DEFAULT_LIMITS, StoreLimits, check_request_id
from kafka_workflows.store.metrics import StoreRequests
from kafka_workflows.store.partitioning import partition_for
from kafka_workflows.store.state import (
    BECAME_TERMINAL,
    IGNORED,
    REJECTED,
    RequestState,
    decode_store_value,
)
from kafka_workflows.store.topics import (
    check_name,
    commands_topic,
    default_group,
    ensure_store_topics,
    events_topic,
    store_topic,
)

log = logging.getLogger(__name__)

DEFAULT_RETENTION_S = 7 * 24 * 3600.0
VALUE_HEADROOM = 2048  # key, the kw-request-id header and the record's framing, next to the value
ValueCallback = Callable[[dict[str, Any]], None]


@dataclass
class StoreStats:
    commands: int = 0
    rejected: int = 0
    forwarded: int = 0
    restored: int = 0
    tombstones: int = 0
    completions: int = 0
    corrupt: int = 0


class StoreHandler(TransactionalHandler):
    """Applies S.commands to per-partition request state; writes S.store values and S.events events."""

    def __init__(self, config: Mapping[str, Any], name: str, *, retention: float = DEFAULT_RETENTION_S,
                 on_update: ValueCallback | None = None, on_complete: ValueCallback | None = None,
                 restore_timeout: float = 120.0, clock: Callable[[], float] = time.time,
                 limits: StoreLimits = DEFAULT_LIMITS, retention_check_interval: float = 60.0) -> None:
        self.config = dict(config)
        self.name = name
        self.commands, self.store, self.events = commands_topic(name), store_topic(name), events_topic(name)
        self.retention = retention
        self.on_update = on_update
        self.on_complete = on_complete
        self.restore_timeout = restore_timeout
        self.clock = clock
        self.limits = limits
        self.retention_check_interval = retention_check_interval
        self._last_retention_check = 0.0
        self._repairs = False  # a restore queued corrupt requests to write back
        self.max_value_bytes = PRODUCER_DEFAULT - VALUE_HEADROOM  # until open() asks the broker
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
        try:
            self.max_value_bytes = min(message_limit(self.config, t).max_bytes for t in (self.store, self.events)) \
                - VALUE_HEADROOM
        except KafkaException as exc:  # e.g. no DescribeConfigs right: the producer's limit still holds
            log.warning("store %r: cannot read the record limits of its topics (%s); values are kept under %d bytes",
                        self.name, exc, self.max_value_bytes)
        self._reader = partition_reader(self.config)

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
        """The requests of S.store[p]; a value that does not restore marks its request corrupt (queued
        to be written back), never stops the processor."""
        assert self._reader is not None and self._admin is not None
        values: dict[str, dict[str, Any] | str | None] = {}  # a value, why it is corrupt, or deleted

        def keep(msg: KafkaMessage) -> None:
            where = f"{self.store}[{p}]@{msg.offset()}"
            try:
                key = msg.key().decode("utf-8") if msg.key() is not None else None
            except UnicodeDecodeError:
                key = None
            if key is None or check_request_id(key, self.limits) is not None:
                log.warning("%s: a key that is not a request id (%d bytes); ignored", where, len(msg.key() or b""))
                return
            try:
                value = decode_store_value(msg)
                if value is not None and value.get("request_id") != key:
                    raise StoreError(f"{where}: the value's request_id differs from the record's key")
                values[key] = value
            except (MessageDecodeError, StoreError) as exc:  # someone else wrote to the store topic
                values[key] = f"{where}: {exc}" if not str(exc).startswith(where) else str(exc)

        started = time.monotonic()
        read_partition(self._reader, self._admin, self.store, p, keep, timeout=self.restore_timeout,
                       stop=self.stopping, timeout_error=StoreTimeoutError, interrupted_error=StoreError)
        state: dict[str, RequestState] = {}
        now = self.clock()
        for key, value in values.items():
            if isinstance(value, dict):
                try:
                    state[key] = RequestState.from_value(value, self.limits)
                    continue
                except StoreError as exc:
                    value = f"{self.store}[{p}] value of a request: {exc}"
            if isinstance(value, str):
                log.error("request %r is corrupt: %s", key, value)
                state[key] = RequestState.corrupted(key, f"the stored value could not be restored: {value}", now)
                self._dirty.setdefault(p, set()).add(key)
                self._completed.setdefault(p, []).append(key)
                self._repairs = True
                self.stats.corrupt += 1
        self.stats.restored += len(state)
        log.info("restored %d request(s) of %s[%d] in %.2fs", len(state), self.store, p, time.monotonic() - started)
        return state

    # commands
    def process(self, message: KafkaMessage) -> Iterable[Output]:
        p = message.partition()
        where = f"{message.topic()}[{p}]@{message.offset()}"
        self.stats.commands += 1
        try:  # the one inbound boundary: a typed, bounded command or a dead letter with the reason
            cmd = parse_command(message.key(), message.value(), where, self.limits)
        except MessageDecodeError as exc:  # dead-lettered by the processor, in the transaction
            self.stats.rejected += 1
            raise exc from None
        home = partition_for(cmd.request_id, self._partitions)
        if home != p:
            # Produced with another partitioner: move it where its request's state lives.
            self.stats.forwarded += 1
            log.warning("%s: command for %r belongs in partition %d (murmur2); forwarding it", where,
                        cmd.request_id, home)
            return (Output(self.commands, cmd.request_id, message.value(), message.headers(), partition=home),)
        if tracing.ENABLED:  # the command's span, a child of whoever wrote it (the split, a worker's handler)
            with tracing.span(f"{cmd.op} {self.name}", kind="CONSUMER",
                              parent=tracing.carrier_from_headers(message.headers()),
                              attributes={**tracing.messaging(message.topic(), p, message.offset()),
                                          "kw.request_id": cmd.request_id, "kw.store": self.name,
                                          **({"kw.job_index": cmd.job} if cmd.job is not None else {})}):
                self._apply(p, cmd, where)
        else:
            self._apply(p, cmd, where)
        return ()

    def _apply(self, p: int, cmd: Command, where: str) -> None:
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

    def before_commit(self) -> Iterable[Output]:
        """One store write per changed request (not per command), and the completion events."""
        outputs = []
        encoded: dict[tuple[int, str], bytes] = {}
        for p, keys in self._dirty.items():
            requests = self.state.get(p, {})
            for request_id in sorted(keys):
                state = requests.get(request_id)
                if state is not None:
                    encoded[p, request_id] = value = self._encode(p, state)
                    outputs.append(Output(self.store, request_id, value, {h.REQUEST_ID: request_id}, partition=p))
        for p, request_ids in self._completed.items():
            for request_id in request_ids:
                final = encoded.get((p, request_id)) or self._encode(p, self.state[p][request_id])
                # The event carries the run's trace context, from the init's meta (the split wrote it).
                meta = self.state[p][request_id].meta if request_id in self.state.get(p, {}) else None
                trace = tracing.carrier_of((meta or {}).get(tracing.TRACEPARENT), (meta or {}).get(tracing.TRACESTATE))
                outputs.append(Output(self.events, request_id, final,
                                      {h.REQUEST_ID: request_id, **(trace.headers() if trace else {})}))
        self._dirty, self._completed = {}, {}
        return outputs

    def commit_soon(self) -> bool:
        """A request became terminal in the open transaction: its waiter (the DAG's await) should not
        wait out the commit interval for its completion event."""
        return any(self._completed.values())

    def _encode(self, p: int, state: RequestState) -> bytes:
        """The store value of `state`; one too large for a record of S.store ends its request corrupt."""
        value = encode_value(state.to_value())
        if len(value) <= self.max_value_bytes:
            return value
        why = (f"its store value would be {len(value):,} bytes, more than the {self.max_value_bytes:,} a record of "
               f"{self.store} may hold")
        log.error("request %r is corrupt: %s", state.request_id, why)
        was_terminal = state.terminal
        corrupt = RequestState.corrupted(state.request_id, why, self.clock(), state.total)
        corrupt.created_ts = state.created_ts
        self.state[p][state.request_id] = corrupt
        self.stats.corrupt += 1
        if not was_terminal:
            self._completed.setdefault(p, []).append(state.request_id)
        return encode_value(corrupt.to_value())

    def punctuate(self, now: float) -> Iterable[Output]:
        """Writes queued by a restore (corrupt requests), and every `retention_check_interval` seconds
        tombstones for terminal requests past the retention (and never-initialised pending ones)."""
        outputs = list(self.before_commit()) if self._repairs else []  # open a transaction for them now
        self._repairs = False
        if now - self._last_retention_check < self.retention_check_interval:
            return outputs
        self._last_retention_check = now
        queued = len(outputs)
        for p, requests in self.state.items():
            for request_id, state in list(requests.items()):
                since = state.completed_ts if state.terminal else (state.updated_ts if state.total is None else None)
                if since is not None and now - since > self.retention:
                    del requests[request_id]
                    self._dirty.get(p, set()).discard(request_id)
                    outputs.append(Output(self.store, request_id, None, {h.REQUEST_ID: request_id}, partition=p))
                    self.stats.tombstones += 1
        if len(outputs) > queued:
            log.info("deleting %d request(s) older than the retention of %.0fs", len(outputs) - queued,
                     self.retention)
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
                log.info("request %s is %s: %s completed, %s failed of %s", value["request_id"], value["status"],
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
                 producer_overrides: Mapping[str, Any] | None = None, limits: StoreLimits = DEFAULT_LIMITS,
                 telemetry: Telemetry | None = None, metrics_port: int | None = None,
                 unit: str | None = None) -> None:
        check_name(name)
        self.config = dict(config)
        self.name = name
        self.group = group or default_group(name)
        self.partitions = partitions
        self.limits = limits
        self.handler = StoreHandler(config, name, retention=retention, on_update=on_update,
                                    on_complete=on_complete, restore_timeout=restore_timeout, limits=limits,
                                    retention_check_interval=retention_check_interval)
        self.processor = TransactionalProcessor(
            config, [commands_topic(name)], self.group, self.handler,
            transactional_id_prefix=f"kw-store.{name}", instance_id=instance_id,
            commit_interval=commit_interval, max_batch=max_batch,
            punctuate_interval=min(1.0, retention_check_interval),  # also writes back corrupt requests soon
            transaction_timeout_ms=transaction_timeout_ms, consumer_overrides=consumer_overrides,
            producer_overrides=producer_overrides, telemetry=telemetry, unit=unit or f"store {name}",
            metrics_port=metrics_port)
        self.telemetry = self.processor.telemetry
        self.telemetry.families(StoreRequests).bind(name, self.handler)

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
    retention, retention_check_interval, on_update, on_complete, consumer_overrides, limits, ...).
    """
    check_reachable(config)
    processor = StoreProcessor(config, name, group, **options)
    if install_signal_handlers and threading.current_thread() is threading.main_thread():
        processor.install_signal_handlers()
    return processor.run(ready)
