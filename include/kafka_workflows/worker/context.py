"""The worker context: what every strategy (message, batch, concurrent) and the operator actions
share, handed to them explicitly (after Quix Streams' `ProcessingContext`).

group, policy and retry topics; the inbound boundary (worker/inbound.py); the partition holds; the
writes; the offset checkpoint (which owns the offsets to store); metrics and stats (with the handler
latencies tallied once a batch); `on_change` (publish status soon); the group's circuit breaker,
when declared (retry/breaker.py: told every failure by worker/outcomes.py and the successes once a
batch by `Tallies`); and the consumed batch's time budget (`cut`): a strategy stops handing messages
over once it is interrupted, and the loop gives back what was not handled.
"""

from __future__ import annotations

import logging
import time
from bisect import bisect_left
from collections.abc import Callable
from dataclasses import dataclass, field

from confluent_kafka import Consumer, TopicPartition
from confluent_kafka import Message as KafkaMessage

from kafka_workflows.ops.incidents import IncidentWatch
from kafka_workflows.retry.breaker import Breaker
from kafka_workflows.retry.policy import RetryPolicy
from kafka_workflows.worker.checkpoint import OffsetCheckpoint
from kafka_workflows.worker.holds import HoldTable
from kafka_workflows.worker.inbound import Boundary
from kafka_workflows.worker.metrics import WorkerMetrics
from kafka_workflows.worker.writes import Writes

log = logging.getLogger(__name__)

TP = tuple[str, int]


@dataclass
class WorkerStats:
    handled: int = 0
    failed: int = 0
    retried: int = 0
    dead_lettered: int = 0


class Tallies:
    """Handler latencies and successes of the batch in hand, merged into the metrics once a batch:
    prometheus_client's per-observation cost would be a third of the worker's per-message cost."""

    def __init__(self, group: str, metrics: WorkerMetrics, stats: WorkerStats) -> None:
        self.group, self.metrics, self.stats = group, metrics, stats
        self.latency: dict[str, list[float]] = {}  # per base topic
        self.messages: dict[str, int] = {}  # handled per base topic
        self.breaker: Breaker | None = None  # told the batch's successes

    def pending(self) -> int:
        """Handler successes of the batch in hand not merged yet."""
        return sum(self.messages.values())

    def flush(self) -> None:
        if not (self.latency or self.messages):
            return
        if self.breaker is not None:
            self.breaker.succeeded(self.pending())
        for base, count in self.messages.items():
            self.metrics.child(self.metrics.handled, base).inc(count)
            self.stats.handled += count
        self.metrics.latency.merge({(self.group, base): tally for base, tally in self.latency.items()})
        self.latency.clear()
        self.messages.clear()

    def call(self, base: str, elapsed: float, messages: int = 1) -> None:
        """A handler call that returned after `elapsed` seconds, having handled `messages`."""
        self.run(base, elapsed, 1, messages)

    def run(self, base: str, elapsed: float, calls: int, messages: int | None = None) -> None:
        """`calls` handler calls that returned after `elapsed` seconds together: each is observed
        at their mean."""
        tally = self.latency.get(base)
        if tally is None:
            tally = self.latency[base] = self.metrics.latency.new_tally()
        tally[0] += elapsed
        tally[1 + bisect_left(self.metrics.latency.bounds, elapsed / calls)] += calls
        self.messages[base] = self.messages.get(base, 0) + (calls if messages is None else messages)

    def count(self, base: str, messages: int) -> None:
        """Messages handled by a call that did not return (a batch that named a later failure)."""
        self.messages[base] = self.messages.get(base, 0) + messages


class BatchCut:
    """A consumed batch's time budget: after it (or on stop) the rest of the batch is given back."""

    def __init__(self) -> None:
        self.stopping = False  # set by Worker.stop, from a signal handler or another thread
        self.interrupted = False  # read once a message
        self.at: KafkaMessage | None = None  # the first message not handled when interrupted
        self.deadline = float("inf")  # perf_counter() time after which the batch is cut

    def begin(self, budget_s: float) -> None:
        self.deadline = time.perf_counter() + budget_s
        self.interrupted, self.at = self.stopping, None

    def stop(self) -> None:
        self.stopping = self.interrupted = True

    def mark(self, msg: KafkaMessage) -> None:
        """`msg` and what follows it in the batch were not handled."""
        if self.at is None:
            self.at = msg

    def rewind_rest(self, consumer: Consumer, batch: list[KafkaMessage], held: HoldTable) -> int:
        """After a cut (not a stop): seek each partition back to its first message not handled, so
        it is fetched again after the next consume(); returns how many messages that gives back."""
        cut, self.at = self.at, None
        self.interrupted = self.stopping
        if cut is None or self.stopping:
            return 0
        start = next(i for i, msg in enumerate(batch) if msg is cut)
        first: dict[TP, int] = {}
        for msg in batch[start:]:
            tp = (msg.topic(), msg.partition())
            if msg.error() is None and tp not in first and tp not in held:  # a hold rewound it already
                first[tp] = msg.offset()
        for (topic, partition), offset in first.items():
            consumer.seek(TopicPartition(topic, partition, offset))
        log.info("a consumed batch was cut (its time budget, or an open circuit breaker): %d message(s) of %d "
                 "partition(s) come again",
                 len(batch) - start, len(first))
        return len(batch) - start


@dataclass
class WorkerContext:
    group: str
    policy: RetryPolicy
    retry_topics: dict[str, tuple[str, int]]
    boundary: Boundary
    holds: HoldTable
    writes: Writes
    checkpoint: OffsetCheckpoint
    metrics: WorkerMetrics
    stats: WorkerStats
    on_change: Callable[[], None]  # a hold or a release: publish status soon
    tallies: Tallies = field(init=False)
    cut: BatchCut = field(default_factory=BatchCut)
    breaker: Breaker | None = None  # the group's circuit breaker (retry/breaker.py), when declared
    incidents: IncidentWatch | None = None  # when the group asks a human (ops/incidents.py), when declared

    def __post_init__(self) -> None:
        self.tallies = Tallies(self.group, self.metrics, self.stats)
        self.tallies.breaker = self.breaker

    def commit(self, consumer: Consumer) -> None:
        """Metrics of the batch, then the checkpoint: writes made durable, offsets stored."""
        self.tallies.flush()
        self.checkpoint.commit(consumer)

    def store_progress(self, consumer: Consumer) -> None:
        """Within a long batch: store what is done once a PROGRESS_INTERVAL passed; past the batch's
        budget, interrupt it (checked before the next message)."""
        now = time.perf_counter()
        if now >= self.checkpoint.progress_due:
            self.tallies.flush()
            self.checkpoint.store_progress(consumer)
            if now >= self.cut.deadline:
                self.cut.interrupted = True
