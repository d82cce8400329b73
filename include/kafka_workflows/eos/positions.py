"""Where each input partition of the exactly-once processor (re)starts: its committed offset.

Asked on assignment and after an aborted transaction. The consumer is read_committed, so the
broker answers only once a previous owner's open transaction on those partitions is settled
(KIP-447): until then this waits, warning every 10 s, unless the processor is stopping. A partition
with no committed offset starts at the processor's `auto.offset.reset` end.
"""

from __future__ import annotations

import logging
import threading
import time

from confluent_kafka import Consumer, KafkaException, TopicPartition

from kafka_workflows.eos.handler import TP
from kafka_workflows.kafka.errors import kafka_error

log = logging.getLogger(__name__)


def committed_offsets(consumer: Consumer, partitions: list[TopicPartition], group: str,
                      stopping: threading.Event) -> list[TopicPartition]:
    """The group's committed offsets of `partitions`, once they are stable; a fatal error or a stop raises."""
    started = last_warning = time.monotonic()
    while True:
        try:
            return consumer.committed(partitions, timeout=10)
        except KafkaException as exc:
            err = kafka_error(exc)
            if err is None or err.fatal() or stopping.is_set():
                raise
            now = time.monotonic()
            if now - last_warning >= 10:
                last_warning = now
                log.warning("%s: committed offsets of %s not available after %.0fs (%s): a previous "
                            "owner's transaction still open, or the group coordinator not ready; waiting",
                            group, [(p.topic, p.partition) for p in partitions], now - started, err.str())
            time.sleep(0.2)


def seek_to_committed(consumer: Consumer, partitions: list[TP], reset_offset: int, group: str,
                      stopping: threading.Event) -> None:
    """Seek `partitions` to their committed offsets (`reset_offset` where none is committed)."""
    committed = committed_offsets(consumer, [TopicPartition(t, p) for t, p in partitions], group, stopping)
    for tp in committed:
        offset = tp.offset if tp.offset >= 0 else reset_offset
        try:
            consumer.seek(TopicPartition(tp.topic, tp.partition, offset))
        except KafkaException as exc:
            # Not fetching yet (just assigned): it starts from the committed offset anyway.
            log.debug("seek %s[%d] to %d: %s", tp.topic, tp.partition, offset, exc)
    log.info("rewound %s to their committed offsets", partitions)
