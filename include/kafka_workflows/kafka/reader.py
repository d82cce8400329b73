"""Reading one partition read_committed up to the end it had when reading started.

Used to restore state (the store processor), for point reads (the store client) and by
operations views. Transaction markers and aborted records take offsets, so the end is found by
partition EOF at or past the high watermark, never by counting messages.
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
