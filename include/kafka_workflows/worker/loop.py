"""The companion worker: consume requests in a group, call a handler, commit only what is done.

The worker's rooms: this loop (lifecycle, consumer settings, rebalance, control and status); the
inbound boundary (worker/inbound.py: every consumed record parsed and bounded once, its origin
decided here); one strategy per kind of handler (worker/dispatch.py: a message handler one at a
time, batches.py: a @batch_handler, concurrent.py: concurrency > 1), each given the worker
context (worker/context.py) instead of sharing one another's state; the outcome executor
(worker/outcomes.py: done, hold, retry, dead letter, skip, written once); the holds
(worker/holds.py: paused partitions), the offset checkpoint (worker/checkpoint.py: at-least-once,
it owns the offsets to store) and the writes (worker/writes.py: retries, dead letters made to fit,
store reports). Operator commands are applied by worker/operations.py; retries are decided by
retry/decision.py.

No thread ever sleeps for a retry. A blocking retry pauses the failing partition and rewinds it
to the failed message until its backoff is due; a retry-topic partition whose head is not due
yet (kw-retry-at) is paused the same way. Other partitions keep flowing meanwhile.

The group's circuit breaker (retry/breaker.py, `breaker:` in the spec), when declared, is judged
by worker/outcomes.py on every failure and by the tallies on every batch's successes; this loop
carries out its state (`_sync_breaker`): open, every assigned partition is paused (and the held
ones rewound to their message); half-open, the held messages come due as probes (or, with none
held, the partitions resume); closed, the partitions resume. A worker's own trip or probe success
is told to the group (a signed `open`/`close` command with `auto`, and the group's state
`breaker/<group>` in the status topic): a worker that joins an open group starts open.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import socket
import threading
import time
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition

from kafka_workflows.errors import ConfigError
from kafka_workflows.handlers import is_batch_handler, resolve_callable
from kafka_workflows.kafka.admin import TopicSpec, ensure_topics, wait_for_topics
from kafka_workflows.kafka.config import check_reachable, client_config
from kafka_workflows.kafka.errors import error_code
from kafka_workflows.kafka.group_protocol import group_protocol_settings
from kafka_workflows.kafka.reader import consume_ready
from kafka_workflows.observe import Telemetry
from kafka_workflows.ops.control import STATUS_TOPIC, ControlFollower, ensure_control_topics, send_breaker_state, sign
from kafka_workflows.ops.incidents import IncidentPolicy, IncidentWatch, incident_key
from kafka_workflows.ops.status import StatusPublisher, group_state
from kafka_workflows.retry.breaker import CLOSED, HALF_OPEN, OPEN, Breaker, BreakerPolicy
from kafka_workflows.retry.policy import RetryPolicy
from kafka_workflows.retry.topics import dead_letter_topic, retry_topic
from kafka_workflows.store.topics import ensure_store_topics
from kafka_workflows.worker.batches import BatchStrategy
from kafka_workflows.worker.checkpoint import OffsetCheckpoint
from kafka_workflows.worker.concurrent import DEFAULT_MAX_BYTES, ConcurrentStrategy, default_max_in_flight
from kafka_workflows.worker.context import WorkerContext, WorkerStats
from kafka_workflows.worker.dispatch import Handler, MessageStrategy
from kafka_workflows.worker.holds import FOREVER, HoldTable
from kafka_workflows.worker.inbound import Boundary
from kafka_workflows.worker.metrics import WorkerMetrics
from kafka_workflows.worker.operations import Operations
from kafka_workflows.worker.outcomes import BREAKER_HOLD, Outcomes
from kafka_workflows.worker.pacing import BatchPacing
from kafka_workflows.worker.runners import blocking_call, is_async
from kafka_workflows.worker.writes import Writes

log = logging.getLogger(__name__)

TP = tuple[str, int]
RETRY_TOPIC_RETENTION_MS = 7 * 24 * 3600 * 1000


class Worker:
    """Run `handler` over `topics` as a member of consumer group `group` until `stop()`.

    :param config: librdkafka settings (at least bootstrap.servers).
    :param topics: the request topics.
    :param group: the consumer group; retry and dead-letter topics are named after it.
    :param handler: a callable or its dotted path; `@batch_handler` ones get a MessageBatch.
    :param policy: the retry policy (default: blocking retries forever, 1 s to 60 s).
    :param topic_partitions: partitions of the topics the worker creates when missing.
    :param poll_timeout: the longest wait for messages, in seconds.
    :param batch_size: messages consumed at a time: the largest batch a batch handler gets.
    :param metrics_port: serve Prometheus metrics on this port.
    :param status_interval: seconds between status records on the status topic.
    :param store: report each job's completion or failure to this atomic store.
    :param consumer_overrides: librdkafka consumer settings that win over the worker's.
    :param metrics: the metrics of a worker this one replaces (a restart keeps counting there).
    :param telemetry: the process's metrics registry and probes (observe/); the worker's own when
        neither this nor `metrics` is given. Its health there is named `unit` (default `worker <group>`).
    :param concurrency: message handler calls at once, across keys, each key in order (1: one at a
        time per worker, today's path; see worker/concurrent.py).
    :param max_in_flight: with concurrency, messages admitted and not done before fetching pauses.
    :param max_in_flight_bytes: the same cap in bytes of keys and values.
    :param breaker: the group's circuit breaker settings (retry/breaker.py); None: no breaker.
    :param codecs: topic -> schemas.codec.Codec for the topics whose values have a schema: decoded once
        at the boundary; a value that does not decode is dead-lettered at once.
    :param incidents: when the group asks a human (ops/incidents.py): a key or partition held too long,
        an error fingerprint's spike; published to the status topic. None: never.
    """

    def __init__(self, config: Mapping[str, Any], topics: Sequence[str], group: str,
                 handler: Handler | str, *, policy: RetryPolicy | None = None,
                 topic_partitions: int = 3, poll_timeout: float = 0.2, batch_size: int = 500,
                 metrics_port: int | None = None, status_interval: float = 2.0, store: str | None = None,
                 consumer_overrides: Mapping[str, Any] | None = None,
                 metrics: WorkerMetrics | None = None, concurrency: int = 1,
                 max_in_flight: int | None = None, max_in_flight_bytes: int = DEFAULT_MAX_BYTES,
                 breaker: BreakerPolicy | None = None, telemetry: Telemetry | None = None,
                 unit: str | None = None, codecs: Mapping[str, Any] | None = None,
                 incidents: IncidentPolicy | None = None) -> None:
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
        self.handler_name = handler if isinstance(handler, str) else getattr(handler, "__qualname__", repr(handler))
        if not 1 <= concurrency <= 10_000:
            raise ConfigError(f"concurrency must be between 1 and 10000, got {concurrency}")
        if concurrency > 1 and self.batch:
            raise ConfigError(f"handler {self.handler_name}: concurrency is for message handlers; a @batch_handler "
                              "gets runs of one partition (leave concurrency at 1)")
        self.concurrency = concurrency
        self.policy = policy or RetryPolicy.default()
        self.retry_topics: dict[str, tuple[str, int]] = {
            retry_topic(t, group, n): (t, n) for t in self.topics for n in range(1, self.policy.retry_topic_count + 1)}
        self.topic_partitions = topic_partitions
        self.poll_timeout = poll_timeout
        self.batch_size = batch_size
        self.metrics_port = metrics_port
        self.consumer_overrides = dict(consumer_overrides or {})
        self.member = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self.store = store
        self.stats = WorkerStats()
        self.metrics = metrics or WorkerMetrics(group, telemetry)
        self.health = self.metrics.telemetry.unit(unit or f"worker {group}")
        self.held = HoldTable()
        self._assignment: set[TP] = set()
        self.writes = Writes(self.config, group, store)
        self.checkpoint = OffsetCheckpoint(self.writes)
        self.status = StatusPublisher(self.config, group, self.member, status_interval,
                                      on_failure=self.metrics.status_failures.labels(group).inc)
        self.breaker = Breaker(breaker, self._breaker_changed) if breaker is not None else None
        self._breaker_paused = False  # the partitions are paused for the breaker
        self._breaker_state = CLOSED  # as the loop last carried it out
        self._breaker_opened = 0  # breaker.opened when the loop last paused for it
        self._breaker_told: list[tuple[str, str]] = []  # (op, reason) of this worker's own transitions, to tell
        boundary = Boundary(self.retry_topics, store is not None, codecs)
        self.ctx = WorkerContext(group, self.policy, self.retry_topics, boundary, self.held, self.writes,
                                 self.checkpoint, self.metrics, self.stats, self.status.soon,
                                 breaker=self.breaker)
        if incidents is not None:
            self.ctx.incidents = IncidentWatch(incidents, group, self.member)
        self._incidents_checked = 0.0
        self.outcomes = Outcomes(self.ctx)
        one_at_a_time = blocking_call(self.handler) if is_async(self.handler) else self.handler  # type: ignore[arg-type]
        self.dispatch = MessageStrategy(self.ctx, self.outcomes, one_at_a_time, self.batch)
        self.operations = Operations(self.ctx, self.outcomes, self.member, self._assignment, self.status.send,
                                     self._ignored, breaker_paused=lambda: self._breaker_paused)
        self._stopping = False  # set from a signal handler or another thread; read once a batch
        self.batches: BatchStrategy | None = (
            BatchStrategy(self.ctx, self.outcomes, self.handler, self.dispatch) if self.batch else None)
        # -- concurrency (issue 13): the key-ordered engine, when on ------------------------
        self.keyed: ConcurrentStrategy | None = None
        if concurrency > 1:
            self.keyed = ConcurrentStrategy(
                self.ctx, self.outcomes, self.handler, concurrency,
                max_in_flight or default_max_in_flight(concurrency), max_in_flight_bytes, self._assignment,
                lambda: self.operations.paused or self._breaker_paused)
            self.operations.keyed = self.keyed
            # librdkafka's prefetch queue is capped like the work in flight (its defaults: 100k, 64 MiB).
            self.consumer_overrides = {"queued.max.messages.kbytes": max(1024, max_in_flight_bytes // 1024),
                                       "queued.min.messages": max_in_flight or default_max_in_flight(concurrency),
                                       **self.consumer_overrides}

    # -- lifecycle -------------------------------------------------------------------------
    def stop(self, *_: object) -> None:
        """Ask the loop to finish the message (or batch) in hand, commit and leave the group."""
        self._stopping = True
        self.ctx.cut.stop()

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
            derived += [TopicSpec(name, partitions, config={"retention.ms": str(RETRY_TOPIC_RETENTION_MS)})
                        for name, (base, _) in self.retry_topics.items() if base == topic]
        ensure_topics(self.config, derived)
        self.writes.learn_limits(dead_letter_topic(topic, self.group) for topic in self.topics)
        ensure_control_topics(self.config)
        if self.store is not None:
            ensure_store_topics(self.config, self.store)

    def consumer_settings(self) -> dict[str, Any]:
        return client_config(self.config, **{
            "group.id": self.group,
            "enable.auto.commit": True,
            "enable.auto.offset.store": False,  # stored by us once a message is done
            "auto.commit.interval.ms": 1000,
            "auto.offset.reset": "earliest",
            **group_protocol_settings({**self.config, **self.consumer_overrides}),  # KIP-848 or classic
            "isolation.level": "read_committed",
            "statistics.interval.ms": 5000,
            # A resumed partition waits for the fetch long-poll in flight, so a retry comes up to this
            # late; new records end a long-poll at once. Each idle consumer asks the broker this often:
            # at 100 ms, the stack's idle consumers alone kept a tenth of a core busy in the broker.
            "fetch.wait.max.ms": 250,
            # librdkafka's default (1 s) stops fetching a partition for a whole second each time the
            # prefetch queue is full: a handler a little slower than the fetcher then idles most of
            # that second once it has drained the queue (bench/worker_throughput.py: 100k vs 330k msg/s).
            "fetch.queue.backoff.ms": 10,
            "stats_cb": self._on_stats,
            **self.consumer_overrides,
        })

    def _on_stats(self, stats_json: str) -> None:
        """librdkafka stats_cb (on the loop's thread): lag metrics, and whether a broker is reachable."""
        stats = json.loads(stats_json)
        self.metrics.on_stats(stats)
        self.health.on_stats(stats)

    def _ignored(self, why: str) -> None:
        """A control record of the wrong shape: logged and counted, never raised."""
        self.metrics.control_ignored.labels(self.group).inc()
        log.warning("%s", why)

    def run(self, ready: threading.Event | None = None) -> WorkerStats:
        if self.metrics_port is not None:  # first: the probes answer (not ready) while preparing
            self.metrics.serve(self.metrics_port)
        self.health.beat()
        self.prepare()
        control = ControlFollower(self.config, on_ignored=self._ignored)  # before reading the state: no gap
        group = group_state(self.config, self.group)
        self.operations.paused, self.operations.paused_until = group.paused, group.paused_until
        if self.operations.paused:
            log.warning("group %s is paused by an operator: this worker starts paused (kafka-workflows resume)",
                        self.group)
        if group.nonblocking:
            self.operations.set_nonblocking(True)
            log.warning("group %s is switched to non-blocking retries: this worker starts so (kafka-workflows "
                        "blocking)", self.group)
        if self.breaker is not None:
            state = group.breaker
            if state is not None:
                self.breaker.open(f"the group's breaker is open ({state.get('reason') or 'no reason'})",
                                  forced=state.get("forced") is True)
                log.warning("group %s's circuit breaker is open: this worker starts open", self.group)
        settings = self.consumer_settings()
        consumer = Consumer(settings)
        self.pacing = BatchPacing(self.batch_size, float(settings.get("max.poll.interval.ms", 300_000)) / 1000)
        consumer.subscribe([*self.topics, *self.retry_topics], on_assign=self._on_assign,
                           on_revoke=self._on_revoke, on_lost=self._on_revoke)
        log.info("worker %s (%s) consuming %s with handler %s", self.group, self.member, self.topics,
                 self.handler_name)
        if ready is not None:
            ready.set()
        handle = (self.batches.handle if self.batches is not None else
                  self.keyed.handle if self.keyed is not None else self.dispatch.handle)
        try:
            while not self._stopping:
                for record in control.poll(0):
                    self.operations.apply(consumer, record)
                self.operations.tick(consumer)
                if self.breaker is not None:
                    self._sync_breaker(consumer)
                if not self.operations.paused and self._breaker_state != OPEN:
                    self.held.resume_due(consumer)
                try:
                    # Not consume(n, timeout): that waits the whole timeout unless n records are queued, and
                    # large records (a split's jobs) never queue 500: every batch idled 0.2 s (bench/import_e2e.py).
                    batch = consume_ready(consumer, self.pacing.size, self._timeout())
                    self.checkpoint.start_batch()
                    self.ctx.cut.begin(self.pacing.budget_s)
                    started = time.monotonic()
                    handle(consumer, batch)
                    given_back = self.ctx.cut.rewind_rest(consumer, batch, self.held)
                    self.pacing.observe(len(batch) - given_back, time.monotonic() - started)
                finally:
                    self.ctx.commit(consumer)
                if self.breaker is not None:
                    self._sync_breaker(consumer)
                self._publish_status()
                self._publish_incidents()
                self.health.beat(consumer)
        finally:
            # Every step runs, whichever raises (the first error is raised after the rest): a worker
            # that stops on an error, and is restarted by its runner, must not leave clients behind.
            self.health.left()
            with contextlib.ExitStack() as steps:  # an ExitStack runs its callbacks last-registered first
                steps.callback(self.status.close)
                steps.callback(self.writes.close)  # flushes: a failed write raises here
                steps.callback(control.close)
                steps.callback(consumer.close)  # commits stored offsets and leaves the group
                steps.callback(self._publish_status, final=True)
                if self.keyed is not None:
                    steps.callback(self.keyed.close, consumer)  # running calls finish (or are abandoned)
            log.info("worker %s stopped: %s handled, %s failed attempts, %s retried, %s dead-lettered", self.group,
                     self.stats.handled, self.stats.failed, self.stats.retried, self.stats.dead_lettered)
        return self.stats

    def _timeout(self) -> float:
        """Wait for messages no longer than until the next held partition is due."""
        keyed = self.keyed.timeout() if self.keyed is not None else self.poll_timeout
        if self._breaker_state == OPEN:
            return self.poll_timeout  # nothing comes due while the breaker is open
        return max(0.0, min(self.poll_timeout, keyed, self.held.next_due() - time.monotonic()))

    def _publish_incidents(self) -> None:
        """New incidents (ops/incidents.py) to the status topic: spikes as they come, holds once a second."""
        watch = self.ctx.incidents
        if watch is None:
            return
        found, watch.pending = watch.pending, []
        now = time.monotonic()
        if now - self._incidents_checked >= 1.0:
            self._incidents_checked = now
            found += watch.check([*self.held.describe(), *(self.keyed.describe_holds() if self.keyed else ())])
        for incident in found:
            log.warning("group %s: incident (%s) published for a human to answer", self.group, incident["reason"])
            self.metrics.incidents.labels(self.group, incident["reason"]).inc()
            self.status.send(STATUS_TOPIC, sign(incident), incident_key(self.group))

    def _publish_status(self, final: bool = False) -> None:
        self.status.publish(lambda: {
            "worker": self.member, "group": self.group, "topics": self.topics, "at": time.time(),
            "paused": self.operations.paused,
            **({"breaker": self.breaker.describe()} if self.breaker is not None else {}),
            "assigned": sorted(f"{t}[{p}]" for t, p in self._assignment),
            "held": [*self.held.describe(), *(self.keyed.describe_holds() if self.keyed is not None else ())],
            **self.stats.__dict__}, final=final)

    # -- the circuit breaker ---------------------------------------------------------------
    def _breaker_changed(self, old: str, new: str, reason: str, automatic: bool) -> None:
        """A transition of this worker's breaker (from the loop thread): metrics, status; this
        worker's own trip (closed -> open) and probe success are told to the group."""
        self.metrics.breaker_state(self.group, new)
        if new == OPEN:
            self.metrics.breaker_opened.labels(self.group).inc()
        log.warning("group %s: circuit breaker %s -> %s (%s)", self.group, old, new, reason)
        if automatic and ((old == CLOSED and new == OPEN) or (old == HALF_OPEN and new == CLOSED)):
            self._breaker_told.append(("open" if new == OPEN else "close", reason))
        self.status.soon()

    def _sync_breaker(self, consumer: Consumer) -> None:
        """Carry out the breaker's state on the partitions (see the module docstring)."""
        breaker = self.breaker
        assert breaker is not None
        for op, reason in self._breaker_told:
            send_breaker_state(self.config, self.group, op, reason, by=f"breaker@{self.member}",
                               send=self.status.send)
        self._breaker_told.clear()
        state = self._breaker_state = breaker.state
        tps = [TopicPartition(t, p) for t, p in self._assignment]
        if state == OPEN:
            if breaker.opened != self._breaker_opened:  # (again) opened since the last look
                self._breaker_opened = breaker.opened
                self._breaker_paused = True
                consumer.pause(tps)
                until = time.monotonic() + min(breaker.wait(), 24 * 3600.0)
                for (topic, partition), hold in self.held.items():  # held messages wait for the probe time
                    if hold.due == FOREVER:  # resumed already: its message may have been fetched and dropped
                        consumer.seek(TopicPartition(topic, partition, hold.offset))
                        hold.due = until
                    else:
                        hold.due = max(hold.due, until)
            return
        if not self._breaker_paused:
            return
        if state == HALF_OPEN:
            if any(hold.kind == "blocked" for hold in self.held.values()) or (
                    self.keyed is not None and self.keyed.scheduler.holds):
                return  # the held messages are the probes: they come due, the rest waits
        else:  # closed: what the breaker held is retried now
            now = time.monotonic()
            for hold in self.held.values():
                if hold.due != FOREVER and hold.error.startswith(BREAKER_HOLD):
                    hold.due = now
            if self.keyed is not None:
                for key_hold in self.keyed.scheduler.holds.values():
                    if key_hold.error.startswith(BREAKER_HOLD):
                        key_hold.due = now
        self._breaker_paused = False
        if not self.operations.paused:
            consumer.resume([tp for tp in tps if (tp.topic, tp.partition) not in self.held])

    # -- rebalance -------------------------------------------------------------------------
    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self._assignment |= {(p.topic, p.partition) for p in partitions}
        if (self.operations.paused or self._breaker_paused) and partitions:
            consumer.incremental_assign(partitions)
            consumer.pause(partitions)
        elif partitions:
            # librdkafka keeps a partition's pause flag across revoke and re-assignment, but holds
            # are dropped on revoke: a partition held before must not come back paused for good.
            consumer.resume(partitions)
        self.status.soon()

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        if self.keyed is not None:  # in-flight work: finished and stored, or abandoned (not stored)
            self.keyed.revoke(consumer, {(p.topic, p.partition) for p in partitions})
        for p in partitions:
            self.held.pop((p.topic, p.partition), None)
            self._assignment.discard((p.topic, p.partition))
        try:
            consumer.commit(asynchronous=False)
        except KafkaException as exc:
            if error_code(exc) != KafkaError._NO_OFFSET:
                log.warning("commit on revoke failed: %s", exc)
        self.status.soon()
