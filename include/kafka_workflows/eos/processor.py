"""Exactly-once consume-transform-produce (pattern 5): outputs and input offsets in one transaction.

`TransactionalProcessor` consumes its input topics read_committed in a consumer group, hands
the messages to a `TransactionalHandler`, and produces what the handler returns together with
the consumed offsets (`send_offsets_to_transaction` with the consumer's group metadata) in one
Kafka transaction. Many input messages share one transaction: it commits every
`commit_interval` seconds or after `max_batch` messages, whichever comes first, or as soon as the
input is drained (a consume returned a short batch) while the handler says someone waits for an
output of the open transaction (`commit_soon`, e.g. the store's completion events): latency when
idle, the interval's batching under load.

Error handling follows librdkafka's transactional rules (kept in kafka/transactional.py):

- retriable (`err.retriable()`): the same call is retried until the transaction timeout;
- abortable (`err.txn_requires_abort()`): the transaction is aborted, every assigned partition
  is rewound to its committed offset (eos/positions.py) and the handler is told to reset its state
  (`on_reset`);
- fatal (`err.fatal()`, e.g. fenced by a newer producer with the same transactional.id): the
  producer is closed and recreated (`init_transactions` again), then the same rewind + reset.

A topic holds whatever any producer wrote: each record is checked once where it enters
(eos/inbound.py: `kw-` headers bounded, optional `max_record_bytes`), and a record that fails there
or that the handler raises on (a poison input) goes to `<topic>.<group>.dlq` inside the
transaction, with the worker's provenance headers, truncated to fit that topic when it must
(eos/poison.py), and the processor goes on; the counts stay exact because the dead letter commits
with the offsets.

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
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, OFFSET_END, Consumer, KafkaError, KafkaException, TopicPartition
from confluent_kafka import Message as KafkaMessage
from confluent_kafka.admin import AdminClient

from kafka_workflows.eos.checkpoint import TransactionCheckpoint
from kafka_workflows.eos.handler import TP, FunctionHandler, Output, TransactionalHandler
from kafka_workflows.eos.metrics import ProcessorMetrics
from kafka_workflows.eos.poison import PoisonGuard
from kafka_workflows.eos.positions import committed_offsets, seek_to_committed
from kafka_workflows.errors import ConfigError, KafkaWorkflowsError
from kafka_workflows.kafka.admin import TopicSpec, ensure_topics
from kafka_workflows.kafka.config import client_config
from kafka_workflows.kafka.deadline import CallHungError
from kafka_workflows.kafka.errors import is_fatal, kafka_error
from kafka_workflows.kafka.group_protocol import group_protocol_settings, is_incremental
from kafka_workflows.kafka.msgsize import PRODUCER_DEFAULT, message_limit
from kafka_workflows.kafka.reader import consume_ready
from kafka_workflows.kafka.transactional import TransactionalProducer
from kafka_workflows.observe import Telemetry
from kafka_workflows.retry.topics import dead_letter_topic

log = logging.getLogger(__name__)


class TransactionAbortedError(KafkaWorkflowsError):
    """A transaction was aborted (abortable error) and the work must be retried by the caller."""


class TransactionFatalError(KafkaWorkflowsError):
    """A transactional producer hit a fatal error it cannot recover from (e.g. repeatedly fenced)."""


@dataclass
class ProcessorStats:
    consumed: int = 0
    produced: int = 0
    commits: int = 0
    aborts: int = 0
    producer_restarts: int = 0
    dead_lettered: int = 0
    assigned: set[TP] = field(default_factory=set)


def default_instance_id() -> str:
    """Unique per process: never shared by two live processes (see the module docstring)."""
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"


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
                 producer_overrides: Mapping[str, Any] | None = None,
                 max_record_bytes: int | None = None, telemetry: Telemetry | None = None,
                 unit: str | None = None, metrics_port: int | None = None) -> None:
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
        self.handler = handler if isinstance(handler, TransactionalHandler) else FunctionHandler(handler)
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
        # Metrics and health in the process's telemetry (its own when none is given): `unit` names
        # this processor's health there, the same for every instance its supervisor builds.
        self.telemetry = telemetry or Telemetry()
        self.health = self.telemetry.unit(unit or f"processor {group}")
        self.metrics = ProcessorMetrics(self.telemetry, group, self.health)
        self.metrics_port = metrics_port
        self._dead_counted = 0  # poison dead letters already counted in a committed transaction
        self._stop = threading.Event()
        self._consumer: Consumer | None = None
        self._cooperative = False
        self._reset_offset = OFFSET_BEGINNING
        self._producer = TransactionalProducer(self.config, self.transactional_id,
                                               transaction_timeout_ms=transaction_timeout_ms,
                                               overrides=self.producer_overrides, on_recreate=self._on_recreate)
        self._txn = TransactionCheckpoint(self._producer, commit_interval=commit_interval, max_batch=max_batch)
        self._consecutive_aborts = 0
        self._restarts_since_commit = 0
        self._last_punctuate = 0.0
        producer_limit = int({**self.config, **self.producer_overrides}.get("message.max.bytes", PRODUCER_DEFAULT))
        self._poison = PoisonGuard(self.handler, group, max_record_bytes=max_record_bytes,
                                   default_limit=producer_limit)

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
            "statistics.interval.ms": 5000,
            "stats_cb": self.metrics.on_stats,
            **group_protocol_settings({**self.config, **self.consumer_overrides}),  # KIP-848 or classic
            **self.consumer_overrides,
        }
        if settings["isolation.level"] != "read_committed" or settings["enable.auto.commit"]:
            raise ConfigError("exactly-once needs isolation.level=read_committed and enable.auto.commit=false")
        self._cooperative = is_incremental({**self.config, **settings})
        self._reset_offset = OFFSET_END if str(settings["auto.offset.reset"]) in ("latest", "largest", "end") \
            else OFFSET_BEGINNING
        if self.metrics_port is not None:
            self.telemetry.serve(self.metrics_port)
        self.health.beat()
        try:
            self._ensure_dead_letter_topics()
            self._producer.start()
            self._consumer = Consumer(client_config(self.config, **settings))
            self._consumer.subscribe(self.topics, on_assign=self._on_assign, on_revoke=self._on_revoke,
                                     on_lost=self._on_lost)
            log.info("transactional processor %s (transactional.id %s) consuming %s",
                     self.group, self.transactional_id, self.topics)
            if ready is not None:
                ready.set()
            while not self._stop.is_set():
                room = self._txn.room()
                messages = consume_ready(self._consumer, room, self.poll_timeout)
                batch = self._accept(messages)
                if batch:
                    self._process(batch)
                self._maybe_punctuate()
                self._poll_producer()
                # Drained (a short batch) with a waited-for output in hand: commit now, not at the interval.
                if self._txn.expired() or (len(messages) < room and self._txn.open and self.handler.commit_soon()):
                    self._commit()
                self.health.beat(self._consumer)
            self._commit()
        finally:
            self._close()
        return self.stats

    def _close(self) -> None:
        consumer = self._consumer
        self.health.left()
        try:
            if consumer is not None:
                consumer.close()  # revokes: our on_revoke commits (or aborts) whatever is still open
        except KafkaException as exc:
            log.warning("closing the consumer of %s failed: %s", self.group, exc)
        finally:
            if self._txn.open:
                self._abort("shutting down with an uncommitted transaction")
            self._producer.close()
            self._consumer = None
            log.info("transactional processor %s stopped: %d consumed, %d produced, %d commits, %d aborts, "
                     "%d producer restarts", self.group, self.stats.consumed, self.stats.produced,
                     self.stats.commits, self.stats.aborts, self.stats.producer_restarts)

    def _ensure_dead_letter_topics(self) -> None:
        """`<topic>.<group>.dlq` of every input topic, with its partition count, and its record limit."""
        metadata = AdminClient(client_config(self.config)).list_topics(timeout=30).topics
        ensure_topics(self.config, [TopicSpec(dead_letter_topic(t, self.group), len(metadata[t].partitions))
                                    for t in self.topics if t in metadata and metadata[t].partitions])
        config = {**self.config, "message.max.bytes": self._poison.default_limit}
        for t in self.topics:
            topic = dead_letter_topic(t, self.group)
            try:
                self._poison.dead_letter_limits[topic] = message_limit(config, topic).max_bytes
            except KafkaException as exc:  # the producer's limit still applies
                log.warning("%s: cannot read the record limit of %s (%s); using the producer's %d bytes",
                            self.group, topic, exc, self._poison.default_limit)

    # -- producer --------------------------------------------------------------------------
    def _on_recreate(self, reason: str) -> None:
        """Called by the producer before it recreates itself after a fatal error."""
        self.stats.producer_restarts += 1
        self.metrics.producer_restarts.inc()
        self._dead_counted = self._poison.dead_lettered  # those dead letters were never committed
        self._restarts_since_commit += 1
        self._txn.discard()  # a fenced producer's transaction is gone
        if self._restarts_since_commit > self.max_producer_restarts:
            raise TransactionFatalError(
                f"transactional.id {self.transactional_id!r}: producer hit {self._restarts_since_commit} fatal "
                f"errors without a successful commit in between (last: {reason}); is another live process "
                "using the same instance id?")

    def _poll_producer(self) -> None:
        """Serve delivery reports; a fatal error (e.g. fenced) can surface here first."""
        try:
            self._producer.poll(0)
        except KafkaException as exc:
            self._on_transaction_error(exc, "polling the producer")

    # -- the transaction -------------------------------------------------------------------
    def _produce(self, outputs: Iterable[Output]) -> None:
        self.stats.produced += self._txn.produce(outputs)

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
        """Process a consumed batch in the open transaction; poison inputs are dead-lettered in it
        (eos/poison.py)."""
        try:
            self._txn.begin()
            outputs = self._poison.outputs(batch)
            if outputs is None:  # a custom process_batch raised: its messages come again one at a time
                self._abort("the handler raised")
                self._rewind(sorted(self.stats.assigned))
                return
            self._produce(outputs)
        except KafkaException as exc:
            self._on_transaction_error(exc, "producing outputs")
            return
        self._txn.store_offsets(batch)
        self.stats.consumed += len(batch)
        self.stats.dead_lettered = self._poison.dead_lettered
        self._poison.done(batch)

    def _maybe_punctuate(self) -> None:
        now = time.monotonic()
        if now - self._last_punctuate < self.punctuate_interval:
            return
        self._last_punctuate = now
        try:
            outputs = list(self.handler.punctuate(time.time()))
            if outputs:
                self._txn.begin()
                self._produce(outputs)
        except KafkaException as exc:
            self._on_transaction_error(exc, "producing punctuation outputs")

    def _commit(self) -> bool:
        """Commit the open transaction (outputs + offsets). False when it had to be aborted instead."""
        if not self._txn.open or self._consumer is None:
            return True
        try:
            self._produce(self.handler.before_commit())
            started = time.monotonic()
            batch = self._txn.commit(self._consumer.consumer_group_metadata())
        except KafkaException as exc:
            self._on_transaction_error(exc, "committing")
            return False
        except CallHungError:  # librdkafka#5456: the producer is abandoned; the runner rebuilds the unit
            self._txn.discard()
            raise
        self._consecutive_aborts = 0
        self._restarts_since_commit = 0
        self.stats.commits += 1
        dead, self._dead_counted = self._poison.dead_lettered - self._dead_counted, self._poison.dead_lettered
        self.metrics.on_commit(time.monotonic() - started, batch.consumed, batch.outputs, dead)
        self.handler.after_commit(batch)
        return True

    def _abort(self, why: str) -> None:
        if not self._txn.open:
            return
        log.warning("aborting the transaction of %s: %s", self.transactional_id, why)
        self._txn.abort()
        self.stats.aborts += 1
        self.metrics.aborted.inc()
        self._dead_counted = self._poison.dead_lettered

    def _on_transaction_error(self, exc: KafkaException, during: str) -> None:
        """Abortable -> abort; fatal -> new producer; either way rewind and reset the handler."""
        detail = self._producer.failure_detail(exc)
        if is_fatal(exc):
            self.stats.aborts += 1
            self.metrics.aborted.inc()
            self._producer.recreate(f"{during}: {detail}")  # discards the transaction (_on_recreate)
        else:
            err = kafka_error(exc)
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
        seek_to_committed(self._consumer, partitions, self._reset_offset, self.group, self._stop)
        self.handler.on_reset(partitions)

    # -- rebalance -------------------------------------------------------------------------
    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        tps: list[TP] = [(p.topic, p.partition) for p in partitions]
        if tps and self._txn.open:
            self._commit()  # restoring may take long: do not let the open transaction time out meanwhile
        committed = committed_offsets(consumer, partitions, self.group, self._stop) if partitions else []
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
        if self._txn.open:
            self._commit()
        if tps:
            log.info("%s revoked %s", self.group, tps)
            self.handler.on_revoke(tps)

    def _on_lost(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        tps: list[TP] = [(p.topic, p.partition) for p in partitions]
        self.stats.assigned.difference_update(tps)
        log.warning("%s lost %s (session timed out?); its open transaction cannot commit", self.group, tps)
        if self._txn.open:
            self._abort("partitions lost")
            self._rewind(sorted(self.stats.assigned))
        self.handler.on_revoke(tps)

