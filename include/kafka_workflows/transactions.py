"""Exactly-once consume-transform-produce (pattern 5): outputs and input offsets in one transaction.

`TransactionalProcessor` consumes its input topics read_committed in a consumer group, hands
the messages to a `TransactionalHandler`, and produces what the handler returns together with
the consumed offsets (`send_offsets_to_transaction` with the consumer's group metadata) in one
Kafka transaction. Many input messages share one transaction: it commits every
`commit_interval` seconds or after `max_batch` messages, whichever comes first.

Error handling follows librdkafka's transactional rules:

- retriable (`err.retriable()`): the same call is retried until the transaction timeout;
- abortable (`err.txn_requires_abort()`): the transaction is aborted, every assigned partition
  is rewound to its committed offset and the handler is told to reset its state (`on_reset`);
- fatal (`err.fatal()`, e.g. fenced by a newer producer with the same transactional.id): the
  producer is closed and recreated (`init_transactions` again), then the same rewind + reset.

Counts are never inferred from offsets: transaction markers and aborted records take offsets,
so positions are tracked as "offset of the last processed message + 1" per partition.

Zombie fencing is KIP-447's: the offsets go to the transaction with the consumer's group
metadata (generation and member id), so a processor that lost its partitions in a rebalance
cannot commit offsets for them any more, whatever its transactional.id. The transactional.id is
therefore free to be one per processor instance: `<prefix>.<group>.<instance_id>`. By default
`instance_id` is unique per process (host, pid, random suffix), which can never clash between
two live processes. Give a stable `instance_id` (a StatefulSet pod name, a slot number) when you
can: a restarted instance then aborts its crashed predecessor's open transaction at once in
`init_transactions`, instead of everyone reading those partitions waiting for
`transaction.timeout.ms` to expire it. Two *live* processes must never share an instance id:
they would fence each other in turn.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import threading
import time
import uuid
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from confluent_kafka import (
    OFFSET_BEGINNING,
    OFFSET_END,
    Consumer,
    KafkaError,
    KafkaException,
    Producer,
    TopicPartition,
)
from confluent_kafka import Message as KafkaMessage

from kafka_workflows import headers as h
from kafka_workflows.config import client_config
from kafka_workflows.deadline import CallHungError, call_with_deadline
from kafka_workflows.errors import ConfigError, KafkaWorkflowsError
from kafka_workflows.group_protocol import group_protocol_settings, is_incremental

log = logging.getLogger(__name__)

TP = tuple[str, int]
T = TypeVar("T")


class TransactionAbortedError(KafkaWorkflowsError):
    """A transaction was aborted (abortable error) and the work must be retried by the caller."""


class TransactionFatalError(KafkaWorkflowsError):
    """A transactional producer hit a fatal error it cannot recover from (e.g. repeatedly fenced)."""


@dataclass(frozen=True)
class Output:
    """One message a handler wants produced in the current transaction.

    `value=None` is a tombstone. `partition=None` lets the producer's partitioner
    (murmur2_random, the Java client's) place it by key.
    """

    topic: str
    key: str | bytes | None
    value: bytes | None
    headers: Mapping[str, object] | Sequence[tuple[str, bytes]] | None = None
    partition: int | None = None


@dataclass(frozen=True)
class CommittedBatch:
    """What one successful commit made visible: handed to `after_commit`."""

    transaction: int  # sequence number of this processor's commits, from 1
    offsets: dict[TP, int]  # next offset to consume, per input partition in this transaction
    consumed: int  # input messages in this transaction
    outputs: tuple[Output, ...]


class TransactionalHandler:
    """What a `TransactionalProcessor` calls. Override what you need; every hook has a default.

    State kept by a handler must be per input partition: `on_assign` restores it, `on_revoke`
    drops it, `on_reset` (after an aborted transaction) throws away what the aborted transaction
    changed and restores it. All hooks run on the processor's thread.
    """

    def process(self, message: KafkaMessage) -> Iterable[Output]:
        """Outputs for one input message (called in offset order per partition)."""
        return ()

    def process_batch(self, messages: list[KafkaMessage]) -> Iterable[Output]:
        """Outputs for a batch of input messages; the default calls `process` for each."""
        outputs: list[Output] = []
        for message in messages:
            outputs.extend(self.process(message))
        return outputs

    def before_commit(self) -> Iterable[Output]:
        """Last outputs of the open transaction (e.g. coalesced per-key updates)."""
        return ()

    def after_commit(self, batch: CommittedBatch) -> None:
        """Called only after a successful commit, with what was committed."""

    def punctuate(self, now: float) -> Iterable[Output]:
        """Called every `punctuate_interval` seconds; outputs join the open transaction."""
        return ()

    def on_assign(self, partitions: list[TP]) -> None:
        """Partitions became ours; their committed offsets are stable. Restore their state here."""

    def on_revoke(self, partitions: list[TP]) -> None:
        """Partitions go away (the open transaction was already committed or aborted). Drop their state."""

    def on_reset(self, partitions: list[TP]) -> None:
        """A transaction was aborted and these partitions rewound: restore their committed state."""
        self.on_revoke(partitions)
        self.on_assign(partitions)


class _FunctionHandler(TransactionalHandler):
    def __init__(self, fn: Callable[[KafkaMessage], Iterable[Output]]) -> None:
        self.fn = fn

    def process(self, message: KafkaMessage) -> Iterable[Output]:
        return self.fn(message)


@dataclass
class ProcessorStats:
    consumed: int = 0
    produced: int = 0
    commits: int = 0
    aborts: int = 0
    producer_restarts: int = 0
    assigned: set[TP] = field(default_factory=set)


def default_instance_id() -> str:
    """Unique per process: never shared by two live processes (see the module docstring)."""
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"


def _kafka_error(exc: BaseException) -> KafkaError | None:
    if isinstance(exc, KafkaException) and exc.args and isinstance(exc.args[0], KafkaError):
        return exc.args[0]
    return None


def retry_retriable(call: Callable[[], T], what: str, timeout: float) -> T:
    """Retry `call` while librdkafka says its error is retriable (and neither abortable nor fatal)."""
    deadline = time.monotonic() + timeout
    delay = 0.05
    while True:
        try:
            return call()
        except KafkaException as exc:
            err = _kafka_error(exc)
            if (err is None or not err.retriable() or err.txn_requires_abort() or err.fatal()
                    or time.monotonic() > deadline):
                raise
            log.info("%s: retriable error %s; retrying", what, err.str())
            time.sleep(delay)
            delay = min(delay * 2, 1.0)


class TransactionalProcessor:
    """Run `handler` over `topics` in consumer group `group` with exactly-once outputs until `stop()`.

    `handler` is a `TransactionalHandler` or a plain function `message -> Iterable[Output]`.
    """

    def __init__(self, config: Mapping[str, Any], topics: Sequence[str], group: str,
                 handler: TransactionalHandler | Callable[[KafkaMessage], Iterable[Output]], *,
                 transactional_id_prefix: str = "kw-eos", instance_id: str | None = None,
                 commit_interval: float = 1.0, max_batch: int = 100_000, poll_timeout: float = 0.1,
                 punctuate_interval: float = 1.0, transaction_timeout_ms: int = 10_000,
                 max_consecutive_aborts: int = 10, max_producer_restarts: int = 5,
                 consumer_overrides: Mapping[str, Any] | None = None,
                 producer_overrides: Mapping[str, Any] | None = None) -> None:
        if not topics:
            raise ConfigError("transactional processor needs at least one input topic")
        if not group:
            raise ConfigError("transactional processor needs a consumer group id")
        if commit_interval <= 0 or max_batch < 1:
            raise ConfigError(f"commit_interval must be > 0 and max_batch >= 1, got {commit_interval}, {max_batch}")
        if transaction_timeout_ms < 1000 * commit_interval * 2:
            raise ConfigError(f"transaction_timeout_ms={transaction_timeout_ms} must be at least twice the "
                              f"commit interval ({commit_interval}s) or transactions time out while open")
        self.config = dict(config)
        self.topics = list(topics)
        self.group = group
        self.handler = handler if isinstance(handler, TransactionalHandler) else _FunctionHandler(handler)
        self.instance_id = instance_id or default_instance_id()
        self.transactional_id = f"{transactional_id_prefix}.{group}.{self.instance_id}"
        self.commit_interval = commit_interval
        self.max_batch = max_batch
        self.poll_timeout = poll_timeout
        self.punctuate_interval = punctuate_interval
        self.transaction_timeout_ms = transaction_timeout_ms
        self.max_consecutive_aborts = max_consecutive_aborts
        self.max_producer_restarts = max_producer_restarts
        self.consumer_overrides = dict(consumer_overrides or {})
        self.producer_overrides = dict(producer_overrides or {})
        self.stats = ProcessorStats()
        self._stop = threading.Event()
        self._producer: Producer | None = None
        self._consumer: Consumer | None = None
        self._cooperative = False
        self._reset_offset = OFFSET_BEGINNING
        # The open transaction.
        self._txn_open = False
        self._txn_started = 0.0
        self._txn_positions: dict[TP, int] = {}
        self._txn_consumed = 0
        self._txn_outputs: list[Output] = []
        self._delivery_errors: list[str] = []
        self._consecutive_aborts = 0
        self._restarts_since_commit = 0
        self._last_punctuate = 0.0
        self._commit_seq = 0

    # -- lifecycle -------------------------------------------------------------------------
    def stop(self, *_: object) -> None:
        """Finish the batch in hand, commit the open transaction, leave the group."""
        self._stop.set()

    def install_signal_handlers(self) -> None:
        """SIGTERM/SIGINT stop the loop gracefully (main thread only)."""
        signal.signal(signal.SIGTERM, self.stop)
        signal.signal(signal.SIGINT, self.stop)

    def run(self, ready: threading.Event | None = None) -> ProcessorStats:
        """Consume, process and commit until `stop()`; returns the stats. Raises on unrecoverable errors."""
        settings: dict[str, Any] = {
            "group.id": self.group,
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "auto.offset.reset": "earliest",
            "isolation.level": "read_committed",
            **group_protocol_settings({**self.config, **self.consumer_overrides}),  # KIP-848 or classic
            **self.consumer_overrides,
        }
        if settings["isolation.level"] != "read_committed" or settings["enable.auto.commit"]:
            raise ConfigError("exactly-once needs isolation.level=read_committed and enable.auto.commit=false")
        self._cooperative = is_incremental({**self.config, **settings})
        self._reset_offset = OFFSET_END if str(settings["auto.offset.reset"]) in ("latest", "largest", "end") \
            else OFFSET_BEGINNING
        try:
            self._producer = self._new_producer()
            self._consumer = Consumer(client_config(self.config, **settings))
            self._consumer.subscribe(self.topics, on_assign=self._on_assign, on_revoke=self._on_revoke,
                                     on_lost=self._on_lost)
            log.info("transactional processor %s (transactional.id %s) consuming %s",
                     self.group, self.transactional_id, self.topics)
            if ready is not None:
                ready.set()
            while not self._stop.is_set():
                room = max(1, min(1000, self.max_batch - self._txn_consumed))
                messages = self._consumer.consume(num_messages=room, timeout=self.poll_timeout)
                batch = self._accept(messages)
                if batch:
                    self._process(batch)
                self._maybe_punctuate()
                self._poll_producer()
                if self._txn_open and (self._txn_consumed >= self.max_batch
                                       or time.monotonic() - self._txn_started >= self.commit_interval):
                    self._commit()
            self._commit()
        finally:
            self._close()
        return self.stats

    def _close(self) -> None:
        consumer, producer = self._consumer, self._producer
        try:
            if consumer is not None:
                consumer.close()  # revokes: our on_revoke commits (or aborts) whatever is still open
        except KafkaException as exc:
            log.warning("closing the consumer of %s failed: %s", self.group, exc)
        finally:
            if self._txn_open and producer is not None:
                self._abort("shutting down with an uncommitted transaction")
            if producer is not None:
                producer.close()
            self._consumer = self._producer = None
            log.info("transactional processor %s stopped: %d consumed, %d produced, %d commits, %d aborts, "
                     "%d producer restarts", self.group, self.stats.consumed, self.stats.produced,
                     self.stats.commits, self.stats.aborts, self.stats.producer_restarts)

    # -- producer --------------------------------------------------------------------------
    def _new_producer(self) -> Producer:
        settings = {
            "transactional.id": self.transactional_id,
            "enable.idempotence": True,
            "acks": "all",
            "linger.ms": 5,
            "transaction.timeout.ms": self.transaction_timeout_ms,
            "partitioner": "murmur2_random",  # the Java client's: keys land where Java producers put them
            **self.producer_overrides,
        }
        producer = Producer(client_config(self.config, **settings))
        self._retry(lambda: producer.init_transactions(30), "init_transactions")
        return producer

    def _restart_producer(self, reason: str) -> None:
        self.stats.producer_restarts += 1
        self._restarts_since_commit += 1
        if self._restarts_since_commit > self.max_producer_restarts:
            raise TransactionFatalError(
                f"transactional.id {self.transactional_id!r}: producer hit {self._restarts_since_commit} fatal "
                f"errors without a successful commit in between (last: {reason}); is another live process "
                "using the same instance id?")
        log.error("transactional producer %s hit a fatal error (%s); recreating it", self.transactional_id, reason)
        old, self._producer = self._producer, None
        if old is not None:
            try:
                with warnings.catch_warnings():  # close() warns that the fenced producer cannot abort
                    warnings.simplefilter("ignore")
                    old.purge()
                    old.close()
            except Exception as exc:  # noqa: BLE001 - a fatal producer may refuse anything; we drop it anyway
                log.debug("closing the failed producer: %s", exc)
        self._txn_open = False
        self._producer = self._new_producer()

    def _retry(self, call: Callable[[], T], what: str) -> T:
        return retry_retriable(call, what, max(30.0, self.transaction_timeout_ms / 1000))

    def _poll_producer(self) -> None:
        """Serve delivery reports; a fatal error (e.g. fenced) can surface here first."""
        try:
            assert self._producer is not None
            self._producer.poll(0)
        except KafkaException as exc:
            self._on_transaction_error(exc, "polling the producer")

    def _on_delivery(self, err: KafkaError | None, msg: KafkaMessage) -> None:
        if err is not None:  # the transaction is now abortable; commit_transaction will say so
            self._delivery_errors.append(f"{msg.topic()}: {err.str()}")

    # -- the transaction -------------------------------------------------------------------
    def _begin(self) -> None:
        if self._txn_open:
            return
        assert self._producer is not None
        try:
            self._producer.begin_transaction()
        except KafkaException as exc:
            err = _kafka_error(exc)
            if err is not None and err.fatal():
                self._restart_producer(err.str())
                self._producer.begin_transaction()
            else:
                raise
        self._txn_open = True
        self._txn_started = time.monotonic()
        self._txn_positions = {}
        self._txn_consumed = 0
        self._txn_outputs = []
        self._delivery_errors = []

    def _produce(self, outputs: Iterable[Output]) -> None:
        assert self._producer is not None
        for out in outputs:
            key = out.key.encode() if isinstance(out.key, str) else out.key
            wire_headers = (h.encode(out.headers) if isinstance(out.headers, Mapping)
                            else list(out.headers or ()))
            kwargs: dict[str, Any] = {"key": key, "headers": wire_headers, "on_delivery": self._on_delivery}
            if out.partition is not None:
                kwargs["partition"] = out.partition
            while True:
                try:
                    self._producer.produce(out.topic, out.value, **kwargs)
                    break
                except BufferError:  # local queue full: serve delivery reports and try again
                    self._producer.poll(0.05)
            self._txn_outputs.append(out)
            self.stats.produced += 1

    def _accept(self, messages: list[KafkaMessage]) -> list[KafkaMessage]:
        batch = []
        for msg in messages:
            err = msg.error()
            if err is not None:
                if err.code() == KafkaError._PARTITION_EOF:
                    continue
                if err.fatal():
                    raise KafkaException(err)
                log.warning("consumer error in %s: %s", self.group, err.str())
                continue
            if (msg.topic(), msg.partition()) in self.stats.assigned:
                batch.append(msg)
        return batch

    def _process(self, batch: list[KafkaMessage]) -> None:
        try:
            self._begin()
            outputs = list(self.handler.process_batch(batch))
            self._produce(outputs)
        except KafkaException as exc:
            self._on_transaction_error(exc, "producing outputs")
            return
        except Exception:
            # A handler bug: nothing of this transaction may become visible.
            self._abort("the handler raised")
            raise
        for msg in batch:
            self._txn_positions[(msg.topic(), msg.partition())] = msg.offset() + 1
        self._txn_consumed += len(batch)
        self.stats.consumed += len(batch)

    def _maybe_punctuate(self) -> None:
        now = time.monotonic()
        if now - self._last_punctuate < self.punctuate_interval:
            return
        self._last_punctuate = now
        try:
            outputs = list(self.handler.punctuate(time.time()))
            if outputs:
                self._begin()
                self._produce(outputs)
        except KafkaException as exc:
            self._on_transaction_error(exc, "producing punctuation outputs")

    def _commit(self) -> bool:
        """Commit the open transaction (outputs + offsets). False when it had to be aborted instead."""
        if not self._txn_open or self._producer is None or self._consumer is None:
            return True
        producer, consumer = self._producer, self._consumer
        started = time.monotonic()
        try:
            self._produce(self.handler.before_commit())
            if self._txn_positions:
                offsets = [TopicPartition(t, p, o) for (t, p), o in self._txn_positions.items()]
                metadata = consumer.consumer_group_metadata()
                self._retry(lambda: call_with_deadline(producer.send_offsets_to_transaction, offsets, metadata, 30,
                                                       deadline=40, what="send_offsets_to_transaction"),
                            "send_offsets_to_transaction")
            self._retry(lambda: producer.commit_transaction(60), "commit_transaction")
        except KafkaException as exc:
            self._on_transaction_error(exc, "committing")
            return False
        except CallHungError:  # librdkafka#5456: drop the producer untouched; the supervisor rebuilds the unit
            self._producer, self._txn_open = None, False
            raise
        self._txn_open = False
        self._commit_seq += 1
        self._consecutive_aborts = 0
        self._restarts_since_commit = 0
        self.stats.commits += 1
        log.debug("%s committed transaction %d: %d consumed, %d produced, open %.0f ms, commit %.0f ms",
                  self.transactional_id, self._commit_seq, self._txn_consumed, len(self._txn_outputs),
                  1000 * (started - self._txn_started), 1000 * (time.monotonic() - started))
        batch = CommittedBatch(self._commit_seq, dict(self._txn_positions), self._txn_consumed,
                               tuple(self._txn_outputs))
        self._txn_positions, self._txn_outputs, self._txn_consumed = {}, [], 0
        self.handler.after_commit(batch)
        return True

    def _abort(self, why: str) -> None:
        if not self._txn_open or self._producer is None:
            self._txn_open = False
            return
        producer = self._producer
        log.warning("aborting the transaction of %s: %s", self.transactional_id, why)
        try:
            self._retry(lambda: producer.abort_transaction(30), "abort_transaction")
            self._txn_open = False
        except KafkaException as exc:
            err = _kafka_error(exc)
            self._restart_producer(err.str() if err is not None else str(exc))  # also aborts, via init_transactions
        self.stats.aborts += 1
        self._txn_positions, self._txn_outputs, self._txn_consumed = {}, [], 0

    def _on_transaction_error(self, exc: KafkaException, during: str) -> None:
        """Abortable -> abort; fatal -> new producer; either way rewind and reset the handler."""
        err = _kafka_error(exc)
        detail = err.str() if err is not None else str(exc)
        if self._delivery_errors:
            detail += f" (delivery failures: {'; '.join(self._delivery_errors[:3])})"
        if err is not None and err.fatal():
            self.stats.aborts += 1
            self._txn_positions, self._txn_outputs, self._txn_consumed = {}, [], 0
            self._restart_producer(f"{during}: {detail}")
        else:
            if err is not None and not err.txn_requires_abort():
                log.warning("%s: non-abortable error %s; aborting anyway", during, detail)
            self._abort(f"{during}: {detail}")
        self._consecutive_aborts += 1
        if self._consecutive_aborts > self.max_consecutive_aborts:
            raise TransactionAbortedError(
                f"{self.group}: {self._consecutive_aborts} transactions in a row were aborted "
                f"(last while {during}: {detail}); giving up")
        self._rewind(sorted(self.stats.assigned))
        time.sleep(min(0.05 * 2 ** self._consecutive_aborts, 5.0))

    def _rewind(self, partitions: list[TP]) -> None:
        """Seek `partitions` to their committed offsets and tell the handler to restore their state."""
        if not partitions or self._consumer is None:
            return
        committed = self._committed([TopicPartition(t, p) for t, p in partitions])
        for tp in committed:
            offset = tp.offset if tp.offset >= 0 else self._reset_offset
            try:
                self._consumer.seek(TopicPartition(tp.topic, tp.partition, offset))
            except KafkaException as exc:
                # Not fetching yet (just assigned): it starts from the committed offset anyway.
                log.debug("seek %s[%d] to %d: %s", tp.topic, tp.partition, offset, exc)
        log.info("rewound %s to their committed offsets", partitions)
        self.handler.on_reset(partitions)

    def _committed(self, partitions: list[TopicPartition]) -> list[TopicPartition]:
        """Committed offsets; read_committed makes the broker answer only once they are stable (KIP-447)."""
        assert self._consumer is not None
        started = last_warning = time.monotonic()
        while True:
            try:
                return self._consumer.committed(partitions, timeout=10)
            except KafkaException as exc:
                err = _kafka_error(exc)
                if err is None or err.fatal() or self._stop.is_set():
                    raise
                now = time.monotonic()
                if now - last_warning >= 10:
                    last_warning = now
                    log.warning("%s: committed offsets of %s not available after %.0fs (%s): a previous "
                                "owner's transaction still open, or the group coordinator not ready; waiting",
                                self.group, [(p.topic, p.partition) for p in partitions], now - started, err.str())
                time.sleep(0.2)

    # -- rebalance -------------------------------------------------------------------------
    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        tps: list[TP] = [(p.topic, p.partition) for p in partitions]
        if tps and self._txn_open:
            self._commit()  # restoring may take long: do not let the open transaction time out meanwhile
        committed = self._committed(partitions) if partitions else []
        if tps:
            log.info("%s assigned %s", self.group, tps)
            try:
                self.handler.on_assign(tps)
            except Exception:
                if not self._stop.is_set():
                    raise
                # Stopping while restoring: these partitions never count as ours, so none of
                # their messages is processed or committed with half-restored state.
                log.info("%s: stopped while restoring %s", self.group, tps)
                tps = []
        self.stats.assigned.update(tps)  # only now: messages of a partition wait for its restore
        if self._cooperative:
            consumer.incremental_assign(committed)
        else:
            consumer.assign(committed)

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        tps: list[TP] = [(p.topic, p.partition) for p in partitions]
        self.stats.assigned.difference_update(tps)  # a failed commit rewinds only what stays ours
        if self._txn_open:
            self._commit()
        if tps:
            log.info("%s revoked %s", self.group, tps)
            self.handler.on_revoke(tps)

    def _on_lost(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        tps: list[TP] = [(p.topic, p.partition) for p in partitions]
        self.stats.assigned.difference_update(tps)
        log.warning("%s lost %s (session timed out?); its open transaction cannot commit", self.group, tps)
        if self._txn_open:
            self._abort("partitions lost")
            self._rewind(sorted(self.stats.assigned))
        self.handler.on_revoke(tps)
