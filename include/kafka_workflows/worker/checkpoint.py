"""The worker's offsets: store only what is done, and only after the writes it depends on are durable.

At-least-once: the next offset of a partition is stored once its message was handled or durably
moved to a retry or dead-letter topic (`Writes.flush()` first). librdkafka commits stored offsets
periodically, on revoke and on close. During a long consumed batch what is done is stored at least
every PROGRESS_INTERVAL, so a crash repeats seconds of work, not the whole batch. A write that
failed stops offset storing for good (the worker is stopping on it): what came after it must come
back too.
"""

from __future__ import annotations

import time
from collections.abc import Mapping

from confluent_kafka import Consumer, TopicPartition

from kafka_workflows.worker.writes import Writes

TP = tuple[str, int]
PROGRESS_INTERVAL = 1.0


class OffsetCheckpoint:
    """The offsets to store (`pending`: the next offset per partition of what is done) and when."""

    def __init__(self, writes: Writes, progress_interval: float = PROGRESS_INTERVAL) -> None:
        self.writes = writes
        self.progress_interval = progress_interval
        self.progress_due = 0.0  # perf_counter() time of the next progress store within a batch
        self.write_failed = False
        self.pending: dict[TP, int] = {}  # strategies note here what is done, as they go

    def start_batch(self) -> None:
        self.progress_due = time.perf_counter() + self.progress_interval

    def done(self, tp: TP, next_offset: int) -> None:
        self.pending[tp] = next_offset

    def commit(self, consumer: Consumer) -> None:
        """Make retry/dead-letter/store writes durable, then store the offsets of what is done."""
        self.store(consumer, self.pending)
        self.pending.clear()  # (cleared, not replaced: a strategy may hold it in a local)

    def store(self, consumer: Consumer, done: Mapping[TP, int]) -> None:
        """Make retry/dead-letter/store writes durable, then store the offsets in `done`."""
        if self.write_failed:
            return
        try:
            # Raises DeliveryError: then nothing is stored, now or later, and the messages come back.
            # (A second flush would succeed, having nothing left to report: hence the flag.)
            self.writes.flush()
        except Exception:
            self.write_failed = True
            raise
        if done:
            consumer.store_offsets(offsets=[TopicPartition(t, p, o) for (t, p), o in done.items()])

    def store_progress(self, consumer: Consumer) -> bool:
        """Within a long consumed batch, store what is done if PROGRESS_INTERVAL passed; True if it did."""
        now = time.perf_counter()
        if now < self.progress_due:
            return False
        self.commit(consumer)
        self.progress_due = now + self.progress_interval
        return True
