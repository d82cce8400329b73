"""A background thread that reads topics from their beginning and then follows them.

A `TopicFollower` assigns (never joins a group, never commits) every partition of the topics
`topics()` names, re-checked every `refresh` seconds so new topics (a new dead-letter topic) are
picked up, reads them read_committed and hands every record to `apply()`. `caught_up` is set once
every partition assigned at start reached its end. A record that `apply()` cannot handle is
logged and skipped: no record stops the follower. A broker that goes away is ridden out by
librdkafka; the thread only ends on `stop()`.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Mapping
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, TopicPartition
from confluent_kafka import Message as KafkaMessage

from kafka_workflows.kafka.config import client_config

log = logging.getLogger(__name__)


class TopicFollower:
    """Subclasses implement `topics(names)` (which existing topics to follow) and `apply(msg)`."""

    name = "follower"

    def __init__(self, config: Mapping[str, Any], *, refresh: float = 10.0) -> None:
        self.config = dict(config)
        self.refresh = refresh
        self.caught_up = threading.Event()
        self.error: str | None = None
        self.records = 0
        self.lock = threading.Lock()
        self._assigned: set[str] = set()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    # -- for subclasses --------------------------------------------------------------------
    def topics(self, names: set[str]) -> set[str]:
        raise NotImplementedError

    def apply(self, msg: KafkaMessage) -> None:
        raise NotImplementedError

    # -- lifecycle -------------------------------------------------------------------------
    def start(self) -> TopicFollower:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name=f"kw-{self.name}", daemon=True)
            self._thread.start()
        return self

    def stop(self, timeout: float = 10.0) -> None:
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def wait_caught_up(self, timeout: float) -> bool:
        return self.caught_up.wait(timeout)

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "caught_up": self.caught_up.is_set(), "records": self.records,
                "topics": sorted(self._assigned), "error": self.error}

    # -- the thread ------------------------------------------------------------------------
    def _run(self) -> None:
        consumer = Consumer(client_config(self.config, **{
            "group.id": f"kw-monitor-{self.name}-{uuid.uuid4().hex[:8]}", "enable.auto.commit": False,
            "isolation.level": "read_committed", "enable.partition.eof": True,
            "auto.offset.reset": "earliest", "fetch.wait.max.ms": 500}))
        pending: set[tuple[str, int]] = set()
        next_refresh = 0.0
        try:
            while not self._stopping.is_set():
                if time.monotonic() >= next_refresh:
                    pending |= self._assign_new(consumer)
                    next_refresh = time.monotonic() + self.refresh
                    if not pending and not self.caught_up.is_set():
                        self.caught_up.set()
                if not self._assigned:
                    self._stopping.wait(min(self.refresh, 1.0))
                    next_refresh = min(next_refresh, time.monotonic() + 1.0)
                    continue
                for msg in consumer.consume(num_messages=1000, timeout=0.2):
                    err = msg.error()
                    if err is None:
                        self.records += 1
                        try:
                            self.apply(msg)
                        except Exception:  # one bad record never stops the follower
                            log.exception("%s: record %s[%d]@%d ignored", self.name, msg.topic(), msg.partition(),
                                          msg.offset())
                    elif err.code() == KafkaError._PARTITION_EOF:
                        pending.discard((msg.topic(), msg.partition()))
                        if not pending:
                            self.caught_up.set()
                    elif err.code() == KafkaError.UNKNOWN_TOPIC_OR_PART:
                        pending.discard((msg.topic(), msg.partition()))
                    else:
                        log.warning("%s: %s", self.name, err.str())
        except Exception as exc:
            log.exception("%s stopped", self.name)
            self.error = f"{type(exc).__name__}: {exc}"
        finally:
            consumer.close()

    def _assign_new(self, consumer: Consumer) -> set[tuple[str, int]]:
        try:
            metadata = consumer.list_topics(timeout=10)
        except Exception as exc:  # noqa: BLE001 - the broker is away: try again at the next refresh
            log.warning("%s: listing topics failed: %s", self.name, exc)
            return set()
        names = {n for n, t in metadata.topics.items() if t.error is None}
        new = sorted(self.topics(names) - self._assigned)
        if not new:
            return set()
        added = [TopicPartition(t, p, OFFSET_BEGINNING) for t in new for p in metadata.topics[t].partitions]
        consumer.incremental_assign(added)
        self._assigned.update(new)
        return {(tp.topic, tp.partition) for tp in added}
