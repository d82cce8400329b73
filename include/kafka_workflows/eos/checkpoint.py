"""The open transaction of an exactly-once processor: what it consumed, what it produced, since when.

Like Quix Streams' Checkpoint, one object holds the transaction boundary: `store_offsets` notes
the consumed messages (position = offset of the last one + 1, never inferred from counts:
transaction markers take offsets), `expired()` says when to commit (every `commit_interval`
seconds or after `max_batch` messages), and `commit()` sends the offsets with the consumer's group
metadata (KIP-447 fencing) and commits outputs and offsets together.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable

from confluent_kafka import Message as KafkaMessage
from confluent_kafka import TopicPartition

from kafka_workflows.eos.handler import TP, CommittedBatch, Output
from kafka_workflows.kafka.transactional import TransactionalProducer

log = logging.getLogger(__name__)


class TransactionCheckpoint:
    """At most one open transaction at a time; reusable after `commit()` or `discard()`."""

    def __init__(self, producer: TransactionalProducer, *, commit_interval: float, max_batch: int) -> None:
        self.producer = producer
        self.commit_interval = commit_interval
        self.max_batch = max_batch
        self.open = False
        self.started = 0.0
        self.positions: dict[TP, int] = {}
        self.consumed = 0
        self.outputs: list[Output] = []
        self.commits = 0  # sequence number of the last successful commit

    def begin(self) -> None:
        if self.open:
            return
        self.producer.begin()
        self.open = True
        self.started = time.monotonic()
        self.positions, self.outputs, self.consumed = {}, [], 0

    def produce(self, outputs: Iterable[Output]) -> int:
        """Produce `outputs` in the open transaction; returns how many."""
        n = 0
        for out in outputs:
            self.producer.produce(out.topic, out.value, out.key, out.headers, out.partition)
            self.outputs.append(out)
            n += 1
        return n

    def store_offsets(self, messages: list[KafkaMessage]) -> None:
        for msg in messages:
            self.positions[(msg.topic(), msg.partition())] = msg.offset() + 1
        self.consumed += len(messages)

    def room(self) -> int:
        """How many more messages to consume before the transaction is full (at most 1000 at a time)."""
        return max(1, min(1000, self.max_batch - self.consumed))

    def expired(self) -> bool:
        return self.open and (self.consumed >= self.max_batch
                              or time.monotonic() - self.started >= self.commit_interval)

    def commit(self, group_metadata: object) -> CommittedBatch:
        """Send the offsets and commit; raises librdkafka's KafkaException (the caller aborts or recreates)."""
        started = time.monotonic()
        if self.positions:
            self.producer.send_offsets([TopicPartition(t, p, o) for (t, p), o in self.positions.items()],
                                       group_metadata)
        self.producer.commit()
        self.commits += 1
        log.debug("%s committed transaction %d: %d consumed, %d produced, open %.0f ms, commit %.0f ms",
                  self.producer.transactional_id, self.commits, self.consumed, len(self.outputs),
                  1000 * (started - self.started), 1000 * (time.monotonic() - started))
        batch = CommittedBatch(self.commits, dict(self.positions), self.consumed, tuple(self.outputs))
        self.discard()
        return batch

    def abort(self) -> None:
        """Abort the open transaction (the producer recreates itself when even that fails)."""
        if self.open:
            self.producer.abort()
        self.discard()

    def discard(self) -> None:
        """Forget the transaction (committed, aborted, or lost with a fenced producer)."""
        self.open = False
        self.positions, self.outputs, self.consumed = {}, [], 0
