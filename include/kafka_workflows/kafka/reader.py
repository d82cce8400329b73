"""Reading one partition read_committed up to the end it had when reading started; `consume_ready`.

Used to restore state (the store processor), for point reads (the store client) and by
operations views. Transaction markers and aborted records take offsets, so the end is found by
partition EOF at or past the high watermark, never by counting messages. `consume_ready` is the
batch read of every loop that follows a topic and must react to a lone record at once (the store
processor, the completion reader).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, TopicPartition
from confluent_kafka import Message as KafkaMessage
from confluent_kafka.admin import AdminClient

from kafka_workflows.errors import KafkaWorkflowsError
from kafka_workflows.kafka.admin import end_offsets
from kafka_workflows.kafka.config import client_config

log = logging.getLogger(__name__)


class ReadInterruptedError(KafkaWorkflowsError):
    """Reading a partition was interrupted by a shutdown."""


class TopicMissingError(KafkaWorkflowsError):
    """The topic to read does not exist."""


class ReadTimeoutError(KafkaWorkflowsError, TimeoutError):
    """Reading did not reach the end of its partition in time."""


def partition_reader(config: Mapping[str, Any]) -> Consumer:
    """A read_committed consumer that never joins a group: assign() only, nothing committed."""
    return Consumer(client_config(config, **{
        "group.id": "kw-store-reader",
        "enable.auto.commit": False,
        "isolation.level": "read_committed",
        "enable.partition.eof": True,
        "auto.offset.reset": "earliest",
        "fetch.wait.max.ms": 10,  # the end (EOF) is what we wait for: do not let the broker hold fetches
    }))


def consume_ready(consumer: Consumer, num_messages: int, timeout: float) -> list[KafkaMessage]:
    """Up to `num_messages` records: waits up to `timeout` for the first, then takes only what the
    client has already fetched. `Consumer.consume(n, timeout)` waits the whole timeout unless n
    records arrive, which delays a lone record (the last completion of a request) by that timeout,
    and idles a worker whose large jobs never queue n records; under load the fetched queue is full,
    so batches stay as large as before. Used by the worker loop, the store processor and the
    triggerer's store reader."""
    first = consumer.consume(num_messages=1, timeout=timeout)
    if not first or num_messages <= 1:
        return first
    return first + consumer.consume(num_messages=num_messages - 1, timeout=0)


def read_partition(consumer: Consumer, admin: AdminClient, topic: str, partition: int,
                   on_message: Callable[[KafkaMessage], None], *, start: int = OFFSET_BEGINNING,
                   timeout: float = 60.0, stop: threading.Event | None = None,
                   timeout_error: type[ReadTimeoutError] = ReadTimeoutError,
                   interrupted_error: type[KafkaWorkflowsError] = ReadInterruptedError) -> None:
    """Read `topic[partition]` read_committed from `start` up to the high watermark taken now.

    Reading to the high watermark, not to the last stable offset, waits for a transaction that is
    still open (or committed but whose marker is not written yet) to finish: what it committed is
    then part of what we read.
    """
    high = end_offsets(admin, topic, [partition])[partition]
    if high <= 0 or (start >= 0 and start >= high):
        return
    # The partition's leader must be in the client's metadata before assign(): when it is not,
    # librdkafka defers the first offset lookup on a fixed 500 ms timer ("no current leader for
    # partition"), and every point read of the store (the split's split_state reads two) paid it.
    consumer.list_topics(topic, timeout=min(timeout, 10.0))
    consumer.assign([TopicPartition(topic, partition, start)])
    deadline = time.monotonic() + timeout
    position = start
    try:
        while True:
            for msg in consumer.consume(num_messages=1000, timeout=0.05):
                err = msg.error()
                if err is None:
                    on_message(msg)
                    position = msg.offset() + 1
                elif err.code() == KafkaError._PARTITION_EOF:
                    position = msg.offset()
                elif err.fatal():
                    raise KafkaException(err)
                else:
                    log.warning("reading %s[%d]: %s", topic, partition, err.str())
                if position >= high:
                    return
            if stop is not None and stop.is_set():
                raise interrupted_error(f"reading {topic}[{partition}] interrupted by shutdown")
            if time.monotonic() > deadline:
                raise timeout_error(
                    f"reading {topic}[{partition}] read_committed stopped at offset {position}, below the high "
                    f"watermark {high}, for {timeout:.0f}s: a transaction there is still open (a crashed "
                    "processor's transaction ends after its transaction.timeout.ms)")
    finally:
        consumer.unassign()


def read_topic(config: Mapping[str, Any], topic: str, on_message: Callable[[KafkaMessage], None], *,
               timeout: float = 60.0) -> None:
    """Read every partition of `topic` read_committed, from its start to the end offsets taken now.

    The ends are fixed when reading starts (what is written meanwhile is not waited for), and an
    end is reached by partition EOF at or past it, so transaction markers and aborted records,
    which take offsets, never make it wait forever. ReadTimeoutError names the partition that did
    not reach its end within `timeout` seconds.
    """
    consumer = partition_reader(config)
    try:
        metadata = consumer.list_topics(topic, timeout=10).topics.get(topic)
        if metadata is None or metadata.error is not None:
            raise TopicMissingError(f"topic {topic!r} does not exist")
        ends: dict[int, int] = {}
        for p in metadata.partitions:
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
            if high > low:
                ends[p] = high
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in ends])
        positions = dict.fromkeys(ends, -1)
        deadline = time.monotonic() + timeout
        while ends:
            for msg in consumer.consume(num_messages=1000, timeout=0.2):
                p, err = msg.partition(), msg.error()
                if err is None:
                    on_message(msg)
                    positions[p] = msg.offset() + 1
                elif err.code() == KafkaError._PARTITION_EOF:
                    positions[p] = msg.offset()
                elif err.fatal():
                    raise KafkaException(err)
                if p in ends and positions[p] >= ends[p]:
                    del ends[p]
            if ends and time.monotonic() > deadline:
                p = min(ends)
                raise ReadTimeoutError(f"reading {topic}[{p}] stopped at offset {positions[p]}, below its end "
                                       f"{ends[p]}, for {timeout:.0f}s")
    finally:
        consumer.close()
