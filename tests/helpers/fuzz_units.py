"""Units under their supervisor in a thread, and a reader of what they wrote: the fuzz's instruments.

`SupervisedUnit` runs a worker or processor the way `kafka-workflows worker` does (`Supervised`, with
`shared_metrics` for workers): a unit that gives up is rebuilt by the supervisor, and the test sees it
(`restarts`, or the thread gone when even the rebuild failed). `Collector` reads topics from the
beginning, read_committed, in a thread of its own, and keeps per topic what the fuzz counts by.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, TopicPartition

from kafka_workflows.supervise import Runnable, Supervised
from tests.helpers.fuzz_records import MARKER

ABORTS_IN_A_LOOP = 3


class _GaveUp(logging.Handler):
    """Keeps the first "<unit> gave up (<error>); restarting it" line the supervisor logs for each unit."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.first: dict[str, str] = {}

    def emit(self, record: logging.LogRecord) -> None:
        if record.args and isinstance(record.args, tuple) and "gave up" in str(record.msg):
            self.first.setdefault(str(record.args[0]), f"{record.args[1]}: {str(record.args[2])[:160]}")


GAVE_UP = _GaveUp()
logging.getLogger("kafka_workflows.supervise").addHandler(GAVE_UP)


class SupervisedUnit:
    """`Supervised(name, factory)` run in a daemon thread; `trouble()` says what went wrong, if anything."""

    def __init__(self, name: str, factory: Callable[[], Runnable], start_timeout: float = 60.0) -> None:
        self.name = name
        self.supervised = Supervised(name, factory, initial_delay=0.5, max_delay=5.0)
        self.error: BaseException | None = None
        ready = threading.Event()
        self.thread = threading.Thread(target=self._run, args=(ready,), name=name, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + start_timeout
        while not ready.wait(0.2):
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise AssertionError(f"{name} did not start: {self.error!r}")

    def _run(self, ready: threading.Event) -> None:
        try:
            self.supervised.run(ready)
        except BaseException as exc:  # noqa: BLE001 - what killed the unit is the finding
            self.error = exc

    @property
    def current(self) -> Any:
        return self.supervised.current

    def trouble(self) -> str | None:
        """The unit gone, rebuilt by its supervisor, or (an exactly-once one) aborting transactions in a row:
        the fuzz's transforms never raise out of a transaction, so each abort is a record it could not carry."""
        gave_up = GAVE_UP.first.get(self.name)
        why = f" after it gave up on {gave_up}" if gave_up else ""
        if not self.thread.is_alive() and self.error is not None:
            return f"the unit is gone for good{why} ({type(self.error).__name__}: {str(self.error)[:200]})"
        if self.supervised.restarts or gave_up:
            return f"restarted by its supervisor ({self.supervised.restarts} time(s) so far){why}"
        stats = getattr(getattr(self.current, "processor", self.current), "stats", None)
        if getattr(stats, "aborts", 0) >= ABORTS_IN_A_LOOP:
            return f"aborted {stats.aborts} transactions"  # type: ignore[union-attr]
        return None

    def stop(self, timeout: float = 30.0) -> None:
        with contextlib.suppress(Exception):
            self.supervised.stop()
        self.thread.join(timeout)


@dataclass
class Seen:
    """One record a collector read."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    size: int
    headers: dict[str, bytes]
    value: bytes | None = field(repr=False, default=None)

    @property
    def marker(self) -> str | None:
        raw = self.headers.get(MARKER)
        return raw.decode("utf-8", "replace") if raw is not None else None


class Collector:
    """Reads `topics` (every partition, from the beginning) until `close()`; values kept when small."""

    def __init__(self, config: Mapping[str, Any], topics: Iterable[str], keep_values_under: int = 10_000) -> None:
        self.topics = list(topics)
        self.keep_values_under = keep_values_under
        self.seen: dict[str, list[Seen]] = defaultdict(list)
        self.lock = threading.Lock()
        self._stop = threading.Event()
        self.consumer = Consumer({**config, "group.id": "fuzz-collector", "enable.auto.commit": False,
                                  "isolation.level": "read_committed", "fetch.message.max.bytes": 2_000_000})
        assignment = []
        for topic in self.topics:
            meta = self.consumer.list_topics(topic, timeout=30).topics[topic]
            assignment += [TopicPartition(topic, p, OFFSET_BEGINNING) for p in meta.partitions]
        self.consumer.assign(assignment)
        self.thread = threading.Thread(target=self._run, name="fuzz-collector", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                msg = self.consumer.poll(0.1)
            except KafkaException:
                continue
            if msg is None or msg.error() is not None:
                continue
            val = msg.value()
            seen = Seen(msg.topic(), msg.partition(), msg.offset(), msg.key(), len(val or b""),
                        {k: v or b"" for k, v in msg.headers() or ()},
                        val if val is not None and len(val) < self.keep_values_under else None)
            with self.lock:
                self.seen[msg.topic()].append(seen)

    def of(self, topic: str) -> list[Seen]:
        with self.lock:
            return list(self.seen.get(topic, ()))

    def close(self) -> None:
        self._stop.set()
        self.thread.join(10)
        with contextlib.suppress(Exception):
            self.consumer.close()
