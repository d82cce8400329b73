"""A worker whose batch would outlast max.poll.interval.ms keeps its group membership.

librdkafka evicts a member that does not call consume() within max.poll.interval.ms. Here that is
8 s, and 40 messages of a 0.4 s handler (16 s) arrive in one fetch: without pacing the member is
evicted mid-batch, loses its partition, and the messages after the eviction are handled again
by the next owner (or the worker dies storing offsets it no longer owns).
"""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from kafka_workflows.kafka.admin import TopicSpec, ensure_topics
from kafka_workflows.kafka.producer import RequestProducer
from kafka_workflows.worker import Worker
from tests.helpers.kafka import committed, start_in_thread, stop_thread, wait_for

pytestmark = pytest.mark.integration


def test_a_batch_longer_than_max_poll_interval_is_cut_and_the_member_stays(
        kafka_config: dict[str, Any], topic: str, group: str) -> None:
    ensure_topics(kafka_config, [TopicSpec(topic, 1)])
    producer = RequestProducer(kafka_config)
    for n in range(40):
        producer.send(topic, {"n": n}, key="one-key")
    producer.flush()
    handled: list[int] = []
    lock = threading.Lock()

    def slow(message: Any) -> None:
        time.sleep(0.4)
        with lock:
            handled.append(message.value["n"])

    revoked: list[int] = []
    worker = Worker(kafka_config, [topic], group, slow, batch_size=500,
                    consumer_overrides={"session.timeout.ms": 6000, "max.poll.interval.ms": 8000})
    original = worker._on_revoke

    def on_revoke(consumer: Any, partitions: list[Any]) -> None:
        revoked.extend(p.partition for p in partitions)
        original(consumer, partitions)

    worker._on_revoke = on_revoke  # type: ignore[method-assign]
    thread = start_in_thread(worker)
    try:
        wait_for(lambda: len(handled) >= 40, 120, "every message handled")
        wait_for(lambda: committed(kafka_config, group, topic) == {0: 40}, 30, "offset 40 committed")
        assert thread.is_alive()
    finally:
        stop_thread(worker, thread)
    assert handled == list(range(40)), "a message was handled twice or out of order"
    assert revoked == [0], "the partition was taken away before the worker stopped"
    assert worker.pacing.size < 40, "later batches were not sized to the handler's pace"
