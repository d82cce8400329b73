"""The companion worker: consume requests in a group, call a handler, commit only what is done.

At-least-once: offsets are stored at the end of each consumed batch (and every second during a
long one), only for messages whose handler returned or that were durably moved to a retry or
dead-letter topic (the producer is flushed first), and librdkafka commits stored offsets
periodically, on revoke and on close.

No thread ever sleeps for a retry. A blocking retry pauses the failing partition and rewinds it
to the failed message until its backoff is due; a retry-topic partition whose head is not due
yet (kw-retry-at) is paused the same way. Other partitions keep flowing meanwhile.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import threading
import time
import uuid
from bisect import bisect_left
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition
from confluent_kafka import Message as KafkaMessage
from pydantic_core import from_json

from kafka_workflows import headers as h
from kafka_workflows.config import check_reachable, client_config
from kafka_workflows.control import CONTROL_TOPIC, STATUS_TOPIC, ControlFollower, ensure_control_topics
from kafka_workflows.errors import BatchItemFailed, ConfigError, MessageDecodeError
from kafka_workflows.group_protocol import group_protocol_settings
from kafka_workflows.handlers import is_batch_handler, resolve_callable
from kafka_workflows.messages import Message, MessageBatch, decode_value, where
from kafka_workflows.metrics import WorkerMetrics
from kafka_workflows.policy import RetryPolicy
from kafka_workflows.producer import RequestProducer
from kafka_workflows.store import StoreClient, ensure_store_topics
from kafka_workflows.topics import TopicSpec, dead_letter_topic, ensure_topics, retry_topic, wait_for_topics

log = logging.getLogger(__name__)

Handler = Callable[[Message], Any] | Callable[[MessageBatch], Any]
TP = tuple[str, int]
FOREVER = float("inf")
# A consumed batch of slow messages can take minutes: store what is done at least this often, so
# a crash repeats seconds of work, not the whole batch.
PROGRESS_INTERVAL = 1.0


@dataclass
class Hold:
    """A paused partition: `blocked` behind a failing message, or `waiting` for a retry to be due."""

    kind: Literal["blocked", "waiting"]
    offset: int
    due: float  # time.monotonic() at which to resume; FOREVER once resumed
    raw: KafkaMessage
    failures: int = 0
    error: str = ""
    since: float = 0.0
    next_attempt_at: float = 0.0
    forced: bool = False  # an operator's unblock: handle now, whatever kw-retry-at says

    def describe(self) -> dict[str, Any]:
        return {"kind": self.kind, "topic": self.raw.topic(), "partition": self.raw.partition(),
                "offset": self.offset, "failures": self.failures, "error": self.error, "since": self.since,
                "next_attempt_at": self.next_attempt_at,
                "key": self.raw.key().decode("utf-8", "replace") if self.raw.key() is not None else None}


@dataclass
class WorkerStats:
    handled: int = 0
    failed: int = 0
    retried: int = 0
    dead_lettered: int = 0


class Worker:
    """Run `handler` over `topics` as a member of consumer group `group` until `stop()`."""

    def __init__(self, config: Mapping[str, Any], topics: Sequence[str], group: str,
                 handler: Handler | str, *, policy: RetryPolicy | None = None,
                 topic_partitions: int = 3, poll_timeout: float = 0.2, batch_size: int = 500,
                 metrics_port: int | None = None, status_interval: float = 2.0, store: str | None = None,
                 consumer_overrides: Mapping[str, Any] | None = None) -> None:
        if not topics:
            raise ConfigError("worker needs at least one topic")
        if not group:
            raise ConfigError("worker needs a consumer group id")
        if not 1 <= batch_size <= 100_000:
            raise ConfigError(f"batch size must be between 1 and 100000, got {batch_size}")
        self.config = dict(config)
        self.topics = list(topics)
        self.group = group
        self.handler: Handler = resolve_callable(handler) if isinstance(handler, str) else handler
        self.batch = is_batch_handler(self.handler)
        # The general path hands one message at a time, as a batch of one to a batch handler.
        self._call_one: Callable[[Message], Any] = (
            (lambda message: self.handler(MessageBatch.of(message))) if self.batch else self.handler)
        self.handler_name = handler if isinstance(handler, str) else getattr(handler, "__qualname__", repr(handler))
        self.policy = policy or RetryPolicy.default()
        self._backoff = self.policy.blocking.backoff() if self.policy.blocking else None
        self.retry_topics: dict[str, tuple[str, int]] = {
            retry_topic(t, group, n): (t, n) for t in self.topics for n in range(1, self.policy.retry_topic_count + 1)}
        self.topic_partitions = topic_partitions
        self.poll_timeout = poll_timeout
        self.batch_size = batch_size
        self.metrics_port = metrics_port
        self.status_interval = status_interval
        self.consumer_overrides = dict(consumer_overrides or {})
        self.member = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self.stats = WorkerStats()
        self.metrics = WorkerMetrics(group)
        self.held: dict[TP, Hold] = {}
        self._assignment: set[TP] = set()
        self._operator_paused = False
        self._stopping = False  # set from a signal handler or another thread; read once a message
        self._producer: RequestProducer | None = None
        self._unflushed = False
        self._write_failed = False  # a retry/dead-letter write failed: store no offset again
        self._progress_due = 0.0
        self._status_due = 0.0
        self._tallies: dict[str, list[float]] = {}  # this batch's handler latencies per topic
        self._batch_messages: dict[str, int] = {}  # messages they handled, for a batch handler
        # Jobs of a split request (kw-request-id + kw-job-index) report to this atomic store.
        self.store = store
        self._store_client: StoreClient | None = StoreClient(self.config, store) if store else None

    # -- lifecycle -------------------------------------------------------------------------
    def stop(self, *_: object) -> None:
        """Ask the loop to finish the message (or batch) in hand, commit and leave the group."""
        self._stopping = True

    def install_signal_handlers(self) -> None:
        signal.signal(signal.SIGTERM, self.stop)
        signal.signal(signal.SIGINT, self.stop)

    def prepare(self) -> None:
        """Everything that can fail before consuming: broker reachable, topics present."""
        check_reachable(self.config)
        ensure_topics(self.config, [TopicSpec(t, self.topic_partitions) for t in self.topics])
        metadata = wait_for_topics(self.config, self.topics)  # a new topic reaches every broker late
        derived = []
        for topic in self.topics:
            partitions = len(metadata[topic].partitions)
            derived.append(TopicSpec(dead_letter_topic(topic, self.group), partitions))
            derived += [TopicSpec(name, partitions, config={"retention.ms": str(7 * 24 * 3600 * 1000)})
                        for name, (base, _) in self.retry_topics.items() if base == topic]
        ensure_topics(self.config, derived)
        ensure_control_topics(self.config)
        if self.store is not None:
            ensure_store_topics(self.config, self.store)

    def run(self, ready: threading.Event | None = None) -> WorkerStats:
        self.prepare()
        if self.metrics_port is not None:
            self.metrics.serve(self.metrics_port)
        consumer = Consumer(client_config(self.config, **{
            "group.id": self.group,
            "enable.auto.commit": True,
            "enable.auto.offset.store": False,  # stored by us once a message is done
            "auto.commit.interval.ms": 1000,
            "auto.offset.reset": "earliest",
            **group_protocol_settings({**self.config, **self.consumer_overrides}),  # KIP-848 or classic
            "isolation.level": "read_committed",
            "statistics.interval.ms": 5000,
            # A resumed partition waits for the fetch long-poll in flight; keep it short so a
            # retry happens close to its due time.
            "fetch.wait.max.ms": 100,
            # librdkafka's default (1 s) stops fetching a partition for a whole second each time the
            # prefetch queue is full: a handler a little slower than the fetcher then idles most of
            # that second once it has drained the queue (bench/worker_throughput.py: 100k vs 330k msg/s).
            "fetch.queue.backoff.ms": 10,
            "stats_cb": self.metrics.on_stats,
            **self.consumer_overrides,
        }))
        control = ControlFollower(self.config)
        consumer.subscribe([*self.topics, *self.retry_topics], on_assign=self._on_assign,
                           on_revoke=self._on_revoke, on_lost=self._on_revoke)
        log.info("worker %s (%s) consuming %s with handler %s", self.group, self.member, self.topics,
                 self.handler_name)
        if ready is not None:
            ready.set()
        try:
            while not self._stopping:
                for record in control.poll(0):
                    self._apply(consumer, record)
                self._resume_due(consumer)
                done: dict[TP, int] = {}
                try:
                    batch = consumer.consume(num_messages=self.batch_size, timeout=self._timeout())
                    self._progress_due = time.perf_counter() + PROGRESS_INTERVAL
                    (self._handle_batches if self.batch else self._handle)(consumer, batch, done)
                finally:
                    self._store(consumer, done)
                self._publish_status()
        finally:
            self._publish_status(final=True)
            consumer.close()  # commits stored offsets and leaves the group
            control.close()
            if self._producer is not None:
                self._producer.flush()
            log.info("worker %s stopped: %s handled, %s failed attempts, %s retried, %s dead-lettered", self.group,
                     self.stats.handled, self.stats.failed, self.stats.retried, self.stats.dead_lettered)
        return self.stats

    def _store(self, consumer: Consumer, done: Mapping[TP, int]) -> None:
        """Make retry/dead-letter writes durable, then store the offsets of what is done."""
        if self._tallies or self._batch_messages:  # metrics are updated once a batch, not once a message
            handled = (self._batch_messages if self.batch else
                       {base: int(sum(tally[1:])) for base, tally in self._tallies.items()})
            for base, count in handled.items():
                self.metrics.child(self.metrics.handled, base).inc(count)
                self.stats.handled += count
            self.metrics.latency.merge({(self.group, base): tally for base, tally in self._tallies.items()})
            self._tallies.clear()
            self._batch_messages.clear()
        if self._write_failed:
            return  # the worker is stopping on that failure; what came after it must come back too
        if self._unflushed:
            # Raises DeliveryError: then nothing is stored, now or later, and the messages come back.
            # (A second flush would succeed, having nothing left to report: hence the flag.)
            try:
                if self._producer is not None:
                    self._producer.flush()
                if self._store_client is not None:
                    self._store_client.flush()
            except Exception:
                self._write_failed = True
                raise
            self._unflushed = False
        if done:
            consumer.store_offsets(offsets=[TopicPartition(t, p, o) for (t, p), o in done.items()])

    # -- rebalance -------------------------------------------------------------------------
    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self._assignment |= {(p.topic, p.partition) for p in partitions}
        if self._operator_paused and partitions:
            consumer.incremental_assign(partitions)
            consumer.pause(partitions)
        elif partitions:
            # librdkafka keeps a partition's pause flag across revoke and re-assignment, but holds
            # are dropped on revoke: a partition held before must not come back paused for good.
            consumer.resume(partitions)
        self._status_due = 0.0

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        for p in partitions:
            self.held.pop((p.topic, p.partition), None)
            self._assignment.discard((p.topic, p.partition))
        try:
            consumer.commit(asynchronous=False)
        except KafkaException as exc:
            if exc.args[0].code() != KafkaError._NO_OFFSET:
                log.warning("commit on revoke failed: %s", exc)
        self._status_due = 0.0

    # -- the loop --------------------------------------------------------------------------
    def _timeout(self) -> float:
        """Wait for messages no longer than until the next held partition is due."""
        due = min((hold.due for hold in self.held.values()), default=FOREVER)
        return max(0.0, min(self.poll_timeout, due - time.monotonic()))

    def _resume_due(self, consumer: Consumer) -> None:
        if self._operator_paused or not self.held:
            return
        now = time.monotonic()
        due = [tp for tp, hold in self.held.items() if hold.due <= now]
        if due:
            consumer.resume([TopicPartition(t, p) for t, p in due])
            for tp in due:
                self.held[tp].due = FOREVER  # stays known until its message is done

    def _handle(self, consumer: Consumer, batch: list[KafkaMessage], done: dict[TP, int]) -> None:
        """Handle a consumed batch, noting in `done` the next offset to store per partition.

        The hot path: a healthy JSON message of a request topic on a partition nothing holds is
        decoded, handed to the handler and counted with no more than that. Everything else (consumer
        errors, held partitions, retry topics, undecodable values, handler failures) goes the
        general way, `_process` and `_on_failure`. The per-message cost here is what
        bench/worker_throughput.py measures against a bare consume loop.
        """
        held, retry_topics, handler = self.held, self.retry_topics, self.handler
        clock, bounds, tallies = time.perf_counter, self.metrics.latency.bounds, self._tallies
        fastest = bounds[0]
        report = self._store_client is not None
        for msg in batch:
            if self._stopping:
                break  # not handled, not stored: the next owner gets it
            topic = msg.topic()
            tp = (topic, msg.partition())
            if msg.error() is not None or (held and tp in held) or topic in retry_topics:
                self._store_progress(consumer, done)
                if self._process(consumer, msg):
                    done[tp] = msg.offset() + 1
                continue
            try:
                message = Message(msg, from_json(msg.value()))
            except (ValueError, TypeError):  # not JSON: _process dead-letters it, saying why
                if self._process(consumer, msg):
                    done[tp] = msg.offset() + 1
                continue
            started = clock()
            if started >= self._progress_due:
                self._store_progress(consumer, done)
            try:
                handler(message)
            except Exception as exc:  # noqa: BLE001 - every handler failure goes through the policy
                if self._on_failure(consumer, msg, message.headers, None, exc):
                    done[tp] = msg.offset() + 1
                continue
            elapsed = clock() - started
            tally = tallies.get(topic)  # `_tally`, inlined: a method call a message is measurable here
            if tally is None:
                tally = tallies[topic] = self.metrics.latency.new_tally()
            tally[0] += elapsed
            tally[1 if elapsed <= fastest else 1 + bisect_left(bounds, elapsed)] += 1
            if report:
                self._report(message.headers, None)
            done[tp] = msg.offset() + 1

    def _handle_batches(self, consumer: Consumer, batch: list[KafkaMessage], done: dict[TP, int]) -> None:
        """`_handle` for a batch handler: runs of consecutive messages of one partition go to
        `_handle_run`; what needs the general way goes to `_process`, one message at a time."""
        held, retry_topics = self.held, self.retry_topics
        run: list[KafkaMessage] = []
        run_tp: TP | None = None
        for msg in batch:
            topic = msg.topic()
            tp = (topic, msg.partition())
            if msg.error() is not None or (held and tp in held) or topic in retry_topics:
                if run:
                    self._handle_run(consumer, run, done)
                    run, run_tp = [], None
                if self._stopping:
                    return
                self._store_progress(consumer, done)
                if self._process(consumer, msg):
                    done[tp] = msg.offset() + 1
            elif tp == run_tp:
                run.append(msg)
            else:
                if run:
                    self._handle_run(consumer, run, done)
                run, run_tp = [msg], tp
        if run:
            self._handle_run(consumer, run, done)

    def _handle_run(self, consumer: Consumer, records: list[KafkaMessage], done: dict[TP, int]) -> None:
        """Hand one partition's consecutive messages to the batch handler; see `batch_handler`."""
        if self._stopping:
            return  # not handled, not stored: the next owner gets them
        topic = records[0].topic()
        tp = (topic, records[0].partition())
        while records and not self._stopping:
            self._store_progress(consumer, done)
            started = time.perf_counter()
            try:
                self.handler(MessageBatch(records))
            except Exception as exc:  # noqa: BLE001 - every handler failure goes through the policy
                index, cause = _failed_index(records, exc)
                if index is None:
                    log.info("batch handler failed on %s (%s: %s) without naming a message; handling its %d "
                             "message(s) one at a time", where(records[0]), type(exc).__name__, exc, len(records))
                    for msg in records:
                        if self._stopping:
                            return
                        self._store_progress(consumer, done)
                        if self._process(consumer, msg):
                            done[tp] = msg.offset() + 1
                    return
                if index:  # done, though the call did not return: counted, not timed
                    self._batch_done(topic, records[:index], None, done)
                failing = records[index]
                headers = h.decode(failing.headers())
                if isinstance(cause, MessageDecodeError):  # decoding again cannot help
                    log.error("%s; dead-lettering it", cause)
                    self._dead_letter(failing, headers, None, cause)
                    moved_on = True
                else:
                    moved_on = self._on_failure(consumer, failing, headers, None, cause)
                if not moved_on:
                    return  # the partition is held at the failing message; the rest come again
                done[tp] = failing.offset() + 1
                records = records[index + 1:]
            else:
                self._batch_done(topic, records, time.perf_counter() - started, done)
                return

    def _batch_done(self, topic: str, records: list[KafkaMessage], elapsed: float | None,
                    done: dict[TP, int]) -> None:
        if elapsed is None:
            self._batch_messages[topic] = self._batch_messages.get(topic, 0) + len(records)
        else:
            self._tally(topic, elapsed, len(records))
        if self._store_client is not None:
            for msg in records:
                self._report(h.decode(msg.headers()), None)
        done[(topic, records[0].partition())] = records[-1].offset() + 1

    def _store_progress(self, consumer: Consumer, done: dict[TP, int]) -> None:
        """Within a long consumed batch, store what is done at least every PROGRESS_INTERVAL."""
        now = time.perf_counter()
        if now >= self._progress_due:
            self._store(consumer, done)
            done.clear()
            self._progress_due = now + PROGRESS_INTERVAL

    def _tally(self, base: str, elapsed: float, messages: int = 1) -> None:
        """A handler call that returned after `elapsed` seconds, having handled `messages`."""
        tally = self._tallies.get(base)
        if tally is None:
            tally = self._tallies[base] = self.metrics.latency.new_tally()
        tally[0] += elapsed
        tally[1 + bisect_left(self.metrics.latency.bounds, elapsed)] += 1
        if self.batch:
            self._batch_messages[base] = self._batch_messages.get(base, 0) + messages

    def _process(self, consumer: Consumer, msg: KafkaMessage) -> bool:
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
        headers = h.decode(msg.headers()) if origin is not None or hold is not None else None
        if origin is not None and headers is not None and not (hold is not None and hold.forced):
            wait = int(headers.get(h.RETRY_AT, "0")) / 1000 - time.time()
            if wait > 0:
                self._hold(consumer, msg, "waiting", wait)
                return False
        if hold is not None and hold.kind == "waiting":
            del self.held[tp]
            hold = None
        elif hold is not None and headers is not None and hold.failures:  # in-place retry: which attempt
            headers[h.ATTEMPT] = str(int(headers.get(h.ATTEMPT, "1")) + hold.failures)
        try:
            value = decode_value(msg.value(), where(msg))
        except MessageDecodeError as exc:
            log.error("%s; dead-lettering it without calling the handler", exc)
            self._dead_letter(msg, headers if headers is not None else h.decode(msg.headers()), origin, exc)
            return True
        message = Message(msg, value, headers)
        base = origin[0] if origin else msg.topic()
        started = time.perf_counter()
        try:
            self._call_one(message)
        except Exception as exc:  # noqa: BLE001 - every handler failure goes through the policy
            if isinstance(exc, BatchItemFailed):  # a batch handler naming its only message
                exc = exc.cause if isinstance(exc.cause, Exception) else exc
            return self._on_failure(consumer, msg, message.headers, origin, exc)
        self._tally(base, time.perf_counter() - started)
        if self._store_client is not None:
            self._report(message.headers, None)
        if hold is not None:
            del self.held[tp]
            self._status_due = 0.0
            log.info("%s[%d]@%d succeeded after %d failed attempt(s); partition unblocked",
                     msg.topic(), msg.partition(), msg.offset(), hold.failures)
        return True

    def _on_failure(self, consumer: Consumer, msg: KafkaMessage, headers: dict[str, str],
                    origin: tuple[str, int] | None, exc: Exception) -> bool:
        tp: TP = (msg.topic(), msg.partition())
        base = origin[0] if origin else msg.topic()
        self.stats.failed += 1
        self.metrics.failed.labels(self.group, base, type(exc).__name__).inc()
        hold = self.held.get(tp)
        same = hold is not None and hold.kind == "blocked" and hold.offset == msg.offset()
        failures = hold.failures + 1 if same and hold is not None else 1
        if self.policy.is_non_retryable(exc):
            log.warning("%s[%d]@%d: %s is not retryable; dead-lettering", *tp, msg.offset(), type(exc).__name__)
        elif origin is None and self._backoff is not None and self.policy.blocking is not None and (
                self.policy.blocking.attempts is None or failures < self.policy.blocking.attempts):
            delay = self._backoff.delay(failures)
            self._hold(consumer, msg, "blocked", delay, failures=failures, error=f"{type(exc).__name__}: {exc}")
            log.warning("handler failed on %s[%d]@%d (attempt %d): %s: %s; partition paused for %.2fs",
                        *tp, msg.offset(), failures, type(exc).__name__, exc, delay)
            return False
        elif (origin[1] + 1 if origin else 1) <= self.policy.retry_topic_count:
            self.held.pop(tp, None)
            self._send_retry(msg, headers, origin, exc)
            return True
        self.held.pop(tp, None)
        self._dead_letter(msg, headers, origin, exc)
        return True

    def _hold(self, consumer: Consumer, msg: KafkaMessage, kind: Literal["blocked", "waiting"], delay: float,
              failures: int = 0, error: str = "") -> None:
        tp = TopicPartition(msg.topic(), msg.partition())
        consumer.pause([tp])
        consumer.seek(TopicPartition(msg.topic(), msg.partition(), msg.offset()))
        previous = self.held.get((msg.topic(), msg.partition()))
        self.held[(msg.topic(), msg.partition())] = Hold(
            kind, msg.offset(), time.monotonic() + delay, msg, failures, error,
            since=previous.since if previous is not None and previous.offset == msg.offset() else time.time(),
            next_attempt_at=time.time() + delay)
        self.metrics.blocked.labels(self.group).set(sum(1 for x in self.held.values() if x.kind == "blocked"))
        if kind == "blocked":
            self._status_due = 0.0

    # -- retry and dead-letter topics ------------------------------------------------------
    def _producer_for_writes(self) -> RequestProducer:
        if self._producer is None:
            self._producer = RequestProducer(self.config)
        return self._producer

    def _provenance(self, msg: KafkaMessage, headers: dict[str, str], exc: BaseException) -> dict[str, object]:
        now_ms = int(time.time() * 1000)
        return {
            **headers,
            h.ORIGINAL_TOPIC: headers.get(h.ORIGINAL_TOPIC, msg.topic()),
            h.ORIGINAL_PARTITION: headers.get(h.ORIGINAL_PARTITION, msg.partition()),
            h.ORIGINAL_OFFSET: headers.get(h.ORIGINAL_OFFSET, msg.offset()),
            h.CONSUMER_GROUP: self.group,
            h.ERROR_TYPE: getattr(exc, "error_type", type(exc).__name__),
            h.ERROR_MESSAGE: str(exc)[:1000],
            h.FIRST_FAILED_AT: headers.get(h.FIRST_FAILED_AT, now_ms),
        }

    def _send_retry(self, msg: KafkaMessage, headers: dict[str, str], origin: tuple[str, int] | None,
                    exc: Exception) -> None:
        base, n = (origin[0], origin[1] + 1) if origin else (msg.topic(), 1)
        assert self.policy.non_blocking is not None
        interval = self.policy.non_blocking.intervals[n - 1]
        out = self._provenance(msg, headers, exc)
        out[h.ATTEMPT] = int(headers.get(h.ATTEMPT, "1")) + 1
        out[h.RETRY_AT] = int((time.time() + interval) * 1000)
        self._write(retry_topic(base, self.group, n), msg, out)
        self.stats.retried += 1
        self.metrics.child(self.metrics.retried, base).inc()
        log.info("%s[%d]@%d failed (%s); retry %d in %.1fs", msg.topic(), msg.partition(), msg.offset(),
                 type(exc).__name__, n, interval)

    def _dead_letter(self, msg: KafkaMessage, headers: dict[str, str], origin: tuple[str, int] | None,
                     exc: BaseException, extra: Mapping[str, object] | None = None) -> None:
        base = origin[0] if origin else msg.topic()
        out = {**self._provenance(msg, headers, exc), **(extra or {})}
        out.pop(h.RETRY_AT, None)
        self._write(dead_letter_topic(base, self.group), msg, out)
        if self._store_client is not None:
            self._report(headers, f"{out[h.ERROR_TYPE]}: {out[h.ERROR_MESSAGE]}")
        self.stats.dead_lettered += 1
        self.metrics.child(self.metrics.dead_lettered, base).inc()

    def _report(self, headers: Mapping[str, str], failure: str | None) -> None:
        """Tell the store a job is done (or failed for good). Flushed with the batch, before its
        offsets are stored; the store counts job indices, so a repeat after a crash changes nothing."""
        request_id, job = headers.get(h.REQUEST_ID), headers.get(h.JOB_INDEX)
        if request_id is None or job is None or self._store_client is None:
            return
        if failure is None:
            self._store_client.complete(request_id, int(job), flush=False)
        else:
            self._store_client.fail(request_id, int(job), failure[:500], flush=False)
        self._unflushed = True

    def _write(self, topic: str, msg: KafkaMessage, headers: Mapping[str, object]) -> None:
        key = msg.key().decode("utf-8", "replace") if msg.key() is not None else None
        self._producer_for_writes().send(topic, msg.value() or b"", key=key, headers=headers, raw=True)
        self._unflushed = True

    # -- operations ------------------------------------------------------------------------
    def _apply(self, consumer: Consumer, record: Mapping[str, Any]) -> None:
        if record.get("kind") != "command" or record.get("group") != self.group:
            return
        op, tp = record["op"], (record.get("topic"), record.get("partition"))
        result: str | None = None
        if op in ("skip", "unblock"):
            if tp not in self._assignment:
                return  # another member owns it and answers
            hold = self.held.get(tp)  # type: ignore[arg-type]
            wanted = record.get("offset")
            if hold is None or (wanted is not None and wanted != hold.offset):
                result = f"nothing held at {tp[0]}[{tp[1]}]" + (f"@{wanted}" if wanted is not None else "")
            elif op == "unblock":
                hold.due, hold.forced = 0.0, True
                result = f"retrying {tp[0]}[{tp[1]}]@{hold.offset} now"
            else:
                self._skip(consumer, tp, hold, record)  # type: ignore[arg-type]
                result = f"skipped {tp[0]}[{tp[1]}]@{hold.offset} to the dead-letter topic"
        elif op == "pause":
            self._operator_paused = True
            consumer.pause([TopicPartition(t, p) for t, p in self._assignment])
            result = f"paused {len(self._assignment)} partition(s)"
        elif op == "resume":
            self._operator_paused = False
            ready = [TopicPartition(t, p) for t, p in self._assignment
                     if (t, p) not in self.held or self.held[(t, p)].due == FOREVER]
            consumer.resume(ready)
            result = f"resumed {len(ready)} partition(s)"
        if result is None:
            return
        log.warning("operation %s by %s (%s): %s", op, record.get("by"), record.get("reason") or "no reason", result)
        self._producer_for_writes().send(CONTROL_TOPIC, {
            "kind": "applied", "command": record.get("id"), "op": op, "group": self.group, "worker": self.member,
            "result": result, "at": time.time()}, key=self.group)
        self._status_due = 0.0

    def _skip(self, consumer: Consumer, tp: TP, hold: Hold, record: Mapping[str, Any]) -> None:
        msg = hold.raw
        headers = h.decode(msg.headers())
        error = hold.error.split(":", 1)
        exc = _Skipped(error[1].strip() if len(error) > 1 else "skipped by an operator", error[0] or "Skipped")
        self._dead_letter(msg, headers, self.retry_topics.get(msg.topic()), exc, extra={
            "kw-skipped-by": record.get("by"), "kw-skip-reason": record.get("reason") or "",
            "kw-skipped-at": int(record.get("at", time.time()) * 1000)})
        del self.held[tp]
        self._store(consumer, {tp: hold.offset + 1})
        consumer.seek(TopicPartition(tp[0], tp[1], hold.offset + 1))
        if not self._operator_paused:
            consumer.resume([TopicPartition(*tp)])

    def _publish_status(self, final: bool = False) -> None:
        now = time.monotonic()
        if not final and now < self._status_due:
            return
        self._status_due = now + self.status_interval
        producer = self._producer_for_writes()
        key = f"{self.group}/{self.member}"
        if final:
            producer.tombstone(STATUS_TOPIC, key)  # a stopped worker leaves the status list
        else:
            producer.send(STATUS_TOPIC, {
                "worker": self.member, "group": self.group, "topics": self.topics, "at": time.time(),
                "paused": self._operator_paused, "assigned": sorted(f"{t}[{p}]" for t, p in self._assignment),
                "held": [hold.describe() for hold in self.held.values()], **self.stats.__dict__}, key=key)
        # Status is advisory: it is not flushed before offsets (only retry/dead-letter writes are).


class _Skipped(Exception):
    """Stands for the last error of a message an operator skipped; named after that error."""

    def __init__(self, message: str, error_type: str) -> None:
        super().__init__(message)
        self.error_type = error_type


def _failed_index(records: list[KafkaMessage], exc: Exception) -> tuple[int | None, Exception]:
    """Which message of a batch failed, and with what error, when the handler's exception says so."""
    if isinstance(exc, BatchItemFailed):
        if not 0 <= exc.index < len(records):
            log.warning("batch handler named message %d of a batch of %d; handling the batch one message at a time",
                        exc.index, len(records))
            return None, exc
        cause = exc.cause if isinstance(exc.cause, Exception) else exc
        if isinstance(cause, MessageDecodeError) and cause.record not in (None, records[exc.index]):
            log.warning("batch handler named message %d for a value that is not its own; handling the batch one "
                        "message at a time", exc.index)
            return None, exc
        return exc.index, cause
    # Anything else, an undecodable value read in the batch included, says nothing of the messages
    # before the failing one: a handler that writes a batch at its end has not written them.
    return None, exc
