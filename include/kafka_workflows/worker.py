"""The companion worker: consume requests in a group, call a handler, commit only what was handled.

At-least-once: a message's offset is stored only after its handler returned (or after it was
durably dead-lettered), and librdkafka commits stored offsets periodically, on revoke and on
close. When a handler raises, the partition is paused and rewound to the failed message; it is
resumed when its backoff is due, so one failing key never holds up the other partitions and no
thread sleeps. Retry topics and the full policy set build on this loop.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
import traceback
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition
from confluent_kafka import Message as KafkaMessage

from kafka_workflows import headers as h
from kafka_workflows.backoff import Backoff
from kafka_workflows.config import check_reachable, client_config
from kafka_workflows.errors import ConfigError, MessageDecodeError
from kafka_workflows.handlers import resolve_callable
from kafka_workflows.messages import Message, decode_value
from kafka_workflows.producer import RequestProducer
from kafka_workflows.topics import TopicSpec, dead_letter_topic, ensure_topics

log = logging.getLogger(__name__)

Handler = Callable[[Message], Any]
TP = tuple[str, int]


@dataclass
class _Blocked:
    offset: int
    failures: int
    due: float
    error: str


@dataclass
class WorkerStats:
    handled: int = 0
    failed: int = 0
    dead_lettered: int = 0
    blocked: dict[TP, _Blocked] = field(default_factory=dict)


class Worker:
    """Run `handler` over `topics` as a member of consumer group `group` until `stop()`."""

    def __init__(self, config: Mapping[str, Any], topics: Sequence[str], group: str,
                 handler: Handler | str, *, backoff: Backoff | None = None,
                 topic_partitions: int = 3, poll_timeout: float = 0.2,
                 consumer_overrides: Mapping[str, Any] | None = None) -> None:
        if not topics:
            raise ConfigError("worker needs at least one topic")
        if not group:
            raise ConfigError("worker needs a consumer group id")
        self.config = dict(config)
        self.topics = list(topics)
        self.group = group
        self.handler: Handler = resolve_callable(handler) if isinstance(handler, str) else handler
        self.handler_name = handler if isinstance(handler, str) else getattr(handler, "__qualname__", repr(handler))
        self.backoff = backoff or Backoff()
        self.topic_partitions = topic_partitions
        self.poll_timeout = poll_timeout
        self.consumer_overrides = dict(consumer_overrides or {})
        self.stats = WorkerStats()
        self._stop = threading.Event()
        self._dead_letters: RequestProducer | None = None

    # -- lifecycle -------------------------------------------------------------------------
    def stop(self, *_: object) -> None:
        """Ask the loop to finish the message in hand, commit and leave the group."""
        self._stop.set()

    def install_signal_handlers(self) -> None:
        signal.signal(signal.SIGTERM, self.stop)
        signal.signal(signal.SIGINT, self.stop)

    def prepare(self) -> None:
        """Everything that can fail before consuming: broker reachable, topics present."""
        check_reachable(self.config)
        specs = [TopicSpec(t, self.topic_partitions) for t in self.topics]
        specs += [TopicSpec(dead_letter_topic(t, self.group), self.topic_partitions) for t in self.topics]
        ensure_topics(self.config, specs)

    def run(self, ready: threading.Event | None = None) -> WorkerStats:
        self.prepare()
        consumer = Consumer(client_config(self.config, **{
            "group.id": self.group,
            "enable.auto.commit": True,
            "enable.auto.offset.store": False,  # store after the handler returned
            "auto.commit.interval.ms": 1000,
            "auto.offset.reset": "earliest",
            "partition.assignment.strategy": "cooperative-sticky",
            "isolation.level": "read_committed",
            **self.consumer_overrides,
        }))
        consumer.subscribe(self.topics, on_assign=self._on_assign, on_revoke=self._on_revoke,
                           on_lost=self._on_revoke)
        log.info("worker %s consuming %s with handler %s", self.group, self.topics, self.handler_name)
        if ready is not None:
            ready.set()
        try:
            while not self._stop.is_set():
                self._resume_due(consumer)
                for msg in consumer.consume(num_messages=200, timeout=self.poll_timeout):
                    if self._stop.is_set():
                        break  # not handled, not stored: the next owner gets it
                    self._process(consumer, msg)
        finally:
            consumer.close()  # commits stored offsets and leaves the group
            if self._dead_letters is not None:
                self._dead_letters.flush()
            log.info("worker %s stopped: %s handled, %s failed attempts, %s dead-lettered", self.group,
                     self.stats.handled, self.stats.failed, self.stats.dead_lettered)
        return self.stats

    # -- rebalance -------------------------------------------------------------------------
    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        log.info("assigned %s", [(p.topic, p.partition) for p in partitions])

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        for p in partitions:
            self.stats.blocked.pop((p.topic, p.partition), None)
        try:
            consumer.commit(asynchronous=False)
        except KafkaException as exc:
            if exc.args[0].code() != KafkaError._NO_OFFSET:
                log.warning("commit on revoke failed: %s", exc)

    # -- the loop --------------------------------------------------------------------------
    def _resume_due(self, consumer: Consumer) -> None:
        now = time.monotonic()
        due = [tp for tp, b in self.stats.blocked.items() if b.due <= now]
        if due:
            consumer.resume([TopicPartition(t, p) for t, p in due])
            for tp in due:
                self.stats.blocked[tp].due = float("inf")  # stays known until it succeeds

    def _process(self, consumer: Consumer, msg: KafkaMessage) -> None:
        err = msg.error()
        if err is not None:
            if err.code() == KafkaError._PARTITION_EOF:
                return
            if err.fatal():
                raise KafkaException(err)
            log.warning("consumer error: %s", err.str())
            return
        tp: TP = (msg.topic(), msg.partition())
        blocked = self.stats.blocked.get(tp)
        if blocked is not None and msg.offset() > blocked.offset:
            return  # prefetched past the failed message before the rewind took effect
        where = f"{msg.topic()}[{msg.partition()}]@{msg.offset()}"
        try:
            value = decode_value(msg.value(), where)
        except MessageDecodeError as exc:
            log.error("%s; sending it to the dead-letter topic without calling the handler", exc)
            self._dead_letter(msg, exc)
            consumer.store_offsets(message=msg)
            return
        message = Message(
            topic=msg.topic(), partition=msg.partition(), offset=msg.offset(),
            key=msg.key().decode("utf-8", "replace") if msg.key() is not None else None,
            value=value, headers=h.decode(msg.headers()), timestamp_ms=msg.timestamp()[1],
        )
        try:
            self.handler(message)
        except Exception as exc:  # noqa: BLE001 - any handler failure blocks and retries
            self._block(consumer, msg, exc)
            return
        self.stats.handled += 1
        if blocked is not None:
            del self.stats.blocked[tp]
            log.info("%s succeeded after %d failed attempt(s); partition unblocked", where, blocked.failures)
        consumer.store_offsets(message=msg)

    def _block(self, consumer: Consumer, msg: KafkaMessage, exc: Exception) -> None:
        tp: TP = (msg.topic(), msg.partition())
        previous = self.stats.blocked.get(tp)
        failures = previous.failures + 1 if previous is not None and previous.offset == msg.offset() else 1
        delay = self.backoff.delay(failures)
        self.stats.failed += 1
        self.stats.blocked[tp] = _Blocked(msg.offset(), failures, time.monotonic() + delay,
                                          f"{type(exc).__name__}: {exc}")
        consumer.pause([TopicPartition(*tp)])
        consumer.seek(TopicPartition(msg.topic(), msg.partition(), msg.offset()))
        log.warning("handler failed on %s[%d]@%d (attempt %d): %s: %s; partition paused for %.1fs",
                    msg.topic(), msg.partition(), msg.offset(), failures, type(exc).__name__, exc, delay)

    def _dead_letter(self, msg: KafkaMessage, exc: Exception) -> None:
        """Write the message with provenance headers to the DLQ and wait until it is durable."""
        if self._dead_letters is None:
            self._dead_letters = RequestProducer(self.config)
        original = h.decode(msg.headers())
        now_ms = int(time.time() * 1000)
        provenance = {
            **original,
            h.ORIGINAL_TOPIC: msg.topic(), h.ORIGINAL_PARTITION: msg.partition(),
            h.ORIGINAL_OFFSET: msg.offset(), h.CONSUMER_GROUP: self.group,
            h.ERROR_TYPE: type(exc).__name__, h.ERROR_MESSAGE: str(exc)[:1000],
            h.FIRST_FAILED_AT: original.get(h.FIRST_FAILED_AT, now_ms),
        }
        key = msg.key().decode("utf-8", "replace") if msg.key() is not None else None
        self._dead_letters.send(dead_letter_topic(msg.topic(), self.group), msg.value() or b"",
                                key=key, headers=provenance, raw=True)
        self._dead_letters.flush()
        self.stats.dead_lettered += 1
        log.debug("dead-lettered %s: %s", msg.topic(), traceback.format_exception_only(exc))
