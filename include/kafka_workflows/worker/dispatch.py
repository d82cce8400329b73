"""Handing consumed messages to the handler, and carrying out what a failure becomes.

The hot path (`handle`): a message of a request topic on a partition nothing holds is handed to
the handler (its value decoded when first read: an undecodable one is dead-lettered then) and
counted with no more than that. Everything else (consumer errors, held partitions, retry topics,
handler failures) goes the general way, `process` and `on_failure`. The per-message cost of `handle` is what
bench/worker_throughput.py measures against a bare consume loop.

What a failure becomes is decided by `retry.decision.decide`; here it is carried out: a hold
(pause and rewind), a retry-topic write or a dead letter.
"""

from __future__ import annotations

import logging
import time
from bisect import bisect_left
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition
from confluent_kafka import Message as KafkaMessage

from kafka_workflows import headers as h
from kafka_workflows.errors import BatchItemFailed, MessageDecodeError
from kafka_workflows.messages import Message, MessageBatch, decode_value, where
from kafka_workflows.retry.decision import HOLD, RETRY, decide
from kafka_workflows.retry.policy import RetryPolicy
from kafka_workflows.worker.batches import BatchHandling
from kafka_workflows.worker.checkpoint import OffsetCheckpoint
from kafka_workflows.worker.holds import FOREVER, HoldTable
from kafka_workflows.worker.metrics import WorkerMetrics
from kafka_workflows.worker.writes import Writes

log = logging.getLogger(__name__)

TP = tuple[str, int]
# A retry due further ahead than this (a kw-retry-at written by someone else) is looked at again then.
MAX_RETRY_WAIT_S = 24 * 3600.0
Handler = Callable[[Message], Any] | Callable[[MessageBatch], Any]


@dataclass
class WorkerStats:
    handled: int = 0
    failed: int = 0
    retried: int = 0
    dead_lettered: int = 0


class Dispatcher(BatchHandling):
    """One worker's message handling: what `Worker.run` calls with each consumed batch."""

    def __init__(self, group: str, handler: Handler, batch: bool, policy: RetryPolicy,
                 retry_topics: dict[str, tuple[str, int]], holds: HoldTable, writes: Writes,
                 checkpoint: OffsetCheckpoint, metrics: WorkerMetrics, stats: WorkerStats,
                 on_change: Callable[[], None]) -> None:
        self.group = group
        self.handler = handler
        self.batch = batch
        # The general path hands one message at a time, as a batch of one to a batch handler.
        self._call_one: Callable[[Message], Any] = (
            (lambda message: handler(MessageBatch.of(message))) if batch else handler)  # type: ignore[arg-type]
        self.policy = policy
        self.retry_topics = retry_topics
        self.held = holds
        self.writes = writes
        self.checkpoint = checkpoint
        self.metrics = metrics
        self.stats = stats
        self._on_change = on_change  # a hold or a release: publish status soon
        self.stopping = False  # set by Worker.stop, from a signal handler or another thread
        # Read once a message: set by stop(), or when the consumed batch ran past its time budget.
        self.interrupted = False
        self.cut_at: KafkaMessage | None = None  # the first message not handled when interrupted
        self._batch_deadline = float("inf")  # perf_counter() time after which the batch is cut
        self._tallies: dict[str, list[float]] = {}  # this batch's handler latencies per topic
        self._batch_messages: dict[str, int] = {}  # messages handled per topic

    # -- metrics, once a batch -------------------------------------------------------------
    def flush_tallies(self) -> None:
        """Metrics are updated once a batch, not once a message."""
        if not (self._tallies or self._batch_messages):
            return
        for base, count in self._batch_messages.items():
            self.metrics.child(self.metrics.handled, base).inc(count)
            self.stats.handled += count
        self.metrics.latency.merge({(self.group, base): tally for base, tally in self._tallies.items()})
        self._tallies.clear()
        self._batch_messages.clear()

    def _tally(self, base: str, elapsed: float, messages: int = 1) -> None:
        """A handler call that returned after `elapsed` seconds, having handled `messages`."""
        tally = self._tallies.get(base)
        if tally is None:
            tally = self._tallies[base] = self.metrics.latency.new_tally()
        tally[0] += elapsed
        tally[1 + bisect_left(self.metrics.latency.bounds, elapsed)] += 1
        self._batch_messages[base] = self._batch_messages.get(base, 0) + messages

    def _tally_run(self, base: str, elapsed: float, calls: int) -> None:
        """`calls` message handler calls that returned after `elapsed` seconds together: each is
        observed at their mean."""
        tally = self._tallies.get(base)
        if tally is None:
            tally = self._tallies[base] = self.metrics.latency.new_tally()
        tally[0] += elapsed
        tally[1 + bisect_left(self.metrics.latency.bounds, elapsed / calls)] += calls
        self._batch_messages[base] = self._batch_messages.get(base, 0) + calls

    def store(self, consumer: Consumer, done: dict[TP, int]) -> None:
        self.flush_tallies()
        self.checkpoint.store(consumer, done)

    def _store_progress(self, consumer: Consumer, done: dict[TP, int]) -> None:
        now = time.perf_counter()
        if now >= self.checkpoint.progress_due:
            self.flush_tallies()
            self.checkpoint.store_progress(consumer, done)
            if now >= self._batch_deadline:
                self.interrupted = True  # checked before the next message

    # -- batches that outlast their budget ---------------------------------------------------
    def begin_batch(self, budget_s: float) -> None:
        """A consumed batch starts; after `budget_s` seconds what is left of it is handed back."""
        self._batch_deadline = time.perf_counter() + budget_s
        self.interrupted, self.cut_at = self.stopping, None

    def rewind_rest(self, consumer: Consumer, batch: list[KafkaMessage]) -> int:
        """After a cut (not a stop): seek each partition back to its first message not handled, so
        it is fetched again after the next consume(); returns how many messages that gives back."""
        cut, self.cut_at = self.cut_at, None
        self.interrupted = self.stopping
        if cut is None or self.stopping:
            return 0
        start = next(i for i, msg in enumerate(batch) if msg is cut)
        first: dict[TP, int] = {}
        for msg in batch[start:]:
            tp = (msg.topic(), msg.partition())
            if msg.error() is None and tp not in first and tp not in self.held:  # a hold rewound it already
                first[tp] = msg.offset()
        for (topic, partition), offset in first.items():
            consumer.seek(TopicPartition(topic, partition, offset))
        log.info("a consumed batch outlasted its time budget: %d message(s) of %d partition(s) come again",
                 len(batch) - start, len(first))
        return len(batch) - start

    # -- message handlers ------------------------------------------------------------------
    def handle(self, consumer: Consumer, batch: list[KafkaMessage], done: dict[TP, int]) -> None:
        """Handle a consumed batch, noting in `done` the next offset to store per partition.

        The value is decoded when the handler first reads it (an undecodable one is dead-lettered
        then). Consecutive successes on one partition make a run: the run is timed as a whole (the
        histogram gets its mean for each of its calls) and its offset noted once, at its end.
        """
        held, retry_topics, handler = self.held, self.retry_topics, self.handler
        clock, checkpoint = time.perf_counter, self.checkpoint
        report = self.writes.store_client is not None
        run_topic: str | None = None  # the run: its partition, start, size and last message
        run_partition, run_started, run, last = -1, 0.0, 0, None
        due = checkpoint.progress_due
        for msg in batch:
            if self.interrupted:
                self.cut_at = msg  # not handled, not stored: fetched again, or the next owner gets it
                break
            topic, partition = msg.topic(), msg.partition()
            if msg.error() is not None or (held and (topic, partition) in held) or topic in retry_topics:
                if run:
                    self._run_done(run_topic, run_partition, last, clock() - run_started, run, done)  # type: ignore[arg-type]
                    run = 0
                self._store_progress(consumer, done)
                if self.process(consumer, msg):
                    done[(topic, partition)] = msg.offset() + 1
                run_topic, due = None, checkpoint.progress_due
                continue
            message = Message(msg)
            if report and not h.valid_int_header(message.headers, h.JOB_INDEX):  # never reaches the handler
                if run:
                    self._run_done(run_topic, run_partition, last, clock() - run_started, run, done)  # type: ignore[arg-type]
                    run = 0
                if self.process(consumer, msg):
                    done[(topic, partition)] = msg.offset() + 1
                run_topic, due = None, checkpoint.progress_due
                continue
            started = clock()
            if partition != run_partition or topic != run_topic or started >= due:  # a new run
                if run:
                    self._run_done(run_topic, run_partition, last, started - run_started, run, done)  # type: ignore[arg-type]
                    run = 0
                if started >= due:  # a long batch stores its progress as it goes
                    self._store_progress(consumer, done)
                    started, due = clock(), checkpoint.progress_due
                run_topic, run_partition, run_started = topic, partition, started
            try:
                handler(message)
            except Exception as exc:  # noqa: BLE001 - every handler failure goes through the policy
                if run:  # the run before the failed call; the failed call is not observed (it did not return)
                    self._run_done(topic, partition, last, started - run_started, run, done)  # type: ignore[arg-type]
                    run = 0
                run_topic = None
                if isinstance(exc, MessageDecodeError) and exc.record is msg:  # decoding again cannot help
                    log.error("%s; dead-lettering it", exc)
                    self.dead_letter(msg, message.headers, None, exc)
                    done[(topic, partition)] = msg.offset() + 1
                elif self.on_failure(consumer, msg, message.headers, None, exc):
                    done[(topic, partition)] = msg.offset() + 1
                due = checkpoint.progress_due
                continue
            run += 1
            if report:
                self.writes.report(message.headers, None)
            last = msg
        if run:
            self._run_done(run_topic, run_partition, last, clock() - run_started, run, done)  # type: ignore[arg-type]

    def _run_done(self, topic: str, partition: int, last: KafkaMessage, elapsed: float, calls: int,
                  done: dict[TP, int]) -> None:
        """A run of `calls` successes on one partition, ending at `last`, took `elapsed` seconds."""
        self._tally_run(topic, elapsed, calls)
        done[(topic, partition)] = last.offset() + 1

    # -- the general way -------------------------------------------------------------------
    def process(self, consumer: Consumer, msg: KafkaMessage) -> bool:
        """Handle one message the general way; True when its offset may be stored."""
        err = msg.error()
        if err is not None:
            if err.code() != KafkaError._PARTITION_EOF:
                if err.fatal():
                    raise KafkaException(err)
                log.warning("consumer error: %s", err.str())
            return False
        tp: TP = (msg.topic(), msg.partition())
        hold = self.held.get(tp)
        if hold is not None and (hold.due != FOREVER or msg.offset() != hold.offset):
            return False  # fetched before the pause and rewind took effect
        origin = self.retry_topics.get(msg.topic())
        # Fast path (no hold, main topic): headers stay undecoded unless the handler reads them.
        report = self.writes.store_client is not None
        headers = h.decode(msg.headers()) if origin is not None or hold is not None or report else None
        try:
            if origin is not None and headers is not None and not (hold is not None and hold.forced):
                wait = h.int_header(headers, h.RETRY_AT, 0) / 1000 - time.time()
                if wait > 0:
                    self.held.hold(consumer, msg, "waiting", min(wait, MAX_RETRY_WAIT_S))
                    return False
            if hold is not None and hold.kind == "waiting":
                del self.held[tp]
                hold = None
            elif hold is not None and headers is not None and hold.failures:  # in-place retry: which attempt
                headers[h.ATTEMPT] = str(h.attempt_of(headers) + hold.failures)
            if report and headers is not None:
                h.int_header(headers, h.JOB_INDEX, -1)
        except h.HeaderError as exc:
            self.held.pop(tp, None)
            self._untrusted(msg, headers or {}, origin, exc)
            return True
        try:
            value = decode_value(msg.value(), where(msg))
        except MessageDecodeError as exc:
            log.error("%s; dead-lettering it without calling the handler", exc)
            self.dead_letter(msg, headers if headers is not None else h.decode(msg.headers()), origin, exc)
            return True
        message = Message(msg, value, headers)
        base = origin[0] if origin else msg.topic()
        started = time.perf_counter()
        try:
            self._call_one(message)
        except Exception as exc:  # noqa: BLE001 - every handler failure goes through the policy
            if isinstance(exc, BatchItemFailed):  # a batch handler naming its only message
                exc = exc.cause if isinstance(exc.cause, Exception) else exc
            return self.on_failure(consumer, msg, message.headers, origin, exc)
        self._tally(base, time.perf_counter() - started)
        if self.writes.report(message.headers, None) is not None:
            self._untrusted(msg, message.headers, origin)
        if hold is not None:
            del self.held[tp]
            self._on_change()
            log.info("%s[%d]@%d succeeded after %d failed attempt(s); partition unblocked",
                     msg.topic(), msg.partition(), msg.offset(), hold.failures)
        return True

    def on_failure(self, consumer: Consumer, msg: KafkaMessage, headers: dict[str, str],
                   origin: tuple[str, int] | None, exc: Exception) -> bool:
        """Carry out what `decide` makes of this failure; True when the message moved on."""
        tp: TP = (msg.topic(), msg.partition())
        base = origin[0] if origin else msg.topic()
        self.stats.failed += 1
        self.metrics.failed.labels(self.group, base, type(exc).__name__).inc()
        hold = self.held.get(tp)
        same = hold is not None and hold.kind == "blocked" and hold.offset == msg.offset()
        failures = hold.failures + 1 if same and hold is not None else 1
        decision = decide(self.policy, exc, failures=failures, retry_round=origin[1] if origin else None)
        if decision.kind == HOLD:
            self.held.hold(consumer, msg, "blocked", decision.delay, failures=failures,
                           error=f"{type(exc).__name__}: {exc}")
            self.metrics.blocked.labels(self.group).set(self.held.blocked())
            self._on_change()
            log.warning("handler failed on %s[%d]@%d (attempt %d): %s: %s; partition paused for %.2fs",
                        *tp, msg.offset(), failures, type(exc).__name__, exc, decision.delay)
            return False
        self.held.pop(tp, None)
        if decision.kind == RETRY:
            try:
                self.writes.retry(msg, headers, base, exc, decision.round, decision.delay)
            except h.HeaderError as untrusted:  # its attempt count cannot be carried on
                self._untrusted(msg, headers, origin, untrusted)
                return True
            self.stats.retried += 1
            self.metrics.child(self.metrics.retried, base).inc()
            log.info("%s[%d]@%d failed (%s); retry %d in %.1fs", msg.topic(), msg.partition(), msg.offset(),
                     type(exc).__name__, decision.round, decision.delay)
            return True
        log.warning("%s[%d]@%d: %s; dead-lettering", *tp, msg.offset(), decision.reason)
        self.dead_letter(msg, headers, origin, exc)
        return True

    def _untrusted(self, msg: KafkaMessage, headers: dict[str, str], origin: tuple[str, int] | None,
                   error: h.HeaderError | None = None) -> None:
        """A message whose kw- headers cannot be trusted goes to the dead-letter topic, saying which."""
        if error is None:
            try:
                h.int_header(headers, h.JOB_INDEX, -1)
                return
            except h.HeaderError as exc:
                error = exc
        log.error("%s: %s; dead-lettering it", where(msg), error)
        self.metrics.headers_untrusted.labels(self.group, origin[0] if origin else msg.topic()).inc()
        self.dead_letter(msg, headers, origin, error)

    def dead_letter(self, msg: KafkaMessage, headers: dict[str, str], origin: tuple[str, int] | None,
                    exc: BaseException, extra: dict[str, object] | None = None) -> None:
        base = origin[0] if origin else msg.topic()
        self.writes.dead_letter(msg, headers, base, exc, extra)
        self.stats.dead_lettered += 1
        self.metrics.child(self.metrics.dead_lettered, base).inc()
