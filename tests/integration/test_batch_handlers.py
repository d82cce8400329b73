"""Batch handlers (`@batch_handler`) against the real broker: what a batch holds, and how a failure
inside a batch goes through the retry policy without losing or repeating the messages around it."""

from __future__ import annotations

import itertools
import threading
import time
from typing import Any

import pytest

from kafka_workflows import headers as h
from kafka_workflows.errors import BatchItemFailed, MessageDecodeError
from kafka_workflows.handlers import batch_handler
from kafka_workflows.kafka.admin import TopicSpec, ensure_topics
from kafka_workflows.kafka.producer import RequestProducer
from kafka_workflows.messages import MessageBatch
from kafka_workflows.retry.policy import BlockingRetry, NonBlockingRetry, RetryPolicy
from kafka_workflows.retry.topics import dead_letter_topic
from kafka_workflows.worker import Worker
from stack.broker import free_port
from tests.helpers.kafka import committed, read_all, scrape_metrics, start_in_thread, stop_thread, wait_for

pytestmark = pytest.mark.integration


class BatchRecorder:
    """A batch handler that reads every value, fails as told, and records what it finished.

    `fail`: key -> how many times to fail it with BatchItemFailed (naming its index);
    `poison`: keys that fail the whole batch with a ValueError that names no message.
    """

    def __init__(self, fail: dict[str, int] | None = None, poison: set[str] | None = None,
                 name_decode_errors: bool = False) -> None:
        self.fail = dict(fail or {})
        self.name_decode_errors = name_decode_errors
        self.poison = set(poison or ())
        self.batches: list[dict[str, Any]] = []
        self.done: list[dict[str, Any]] = []  # every message the worker was told is finished
        self.failed_at: dict[str, list[float]] = {}
        self.lock = threading.Lock()
        batch_handler(self)

    def __call__(self, messages: MessageBatch) -> None:
        with self.lock:
            self.batches.append({"partition": messages.partition, "offsets": [m.offset for m in messages],
                                 "t": time.monotonic()})
            finished = []
            for i, message in enumerate(messages):
                try:
                    value = message.value
                except MessageDecodeError as exc:
                    if not self.name_decode_errors:
                        raise  # names no message: nothing is claimed done
                    self.done += finished
                    raise BatchItemFailed(i) from exc
                key = message.key or ""
                if key in self.poison:
                    raise ValueError(f"{key} is poison")
                if self.fail.get(key, 0) > 0:
                    self.fail[key] -= 1
                    self.failed_at.setdefault(key, []).append(time.monotonic())
                    self.done += finished
                    raise BatchItemFailed(i) from ConnectionError(f"{key} failed")
                finished.append({"key": key, "partition": message.partition, "offset": message.offset,
                                 "value": value, "t": time.monotonic()})
            self.done += finished

    def keys(self, partition: int | None = None) -> list[str]:
        return [d["key"] for d in self.done if partition is None or d["partition"] == partition]


def _send(config: dict[str, Any], topic: str, keys: list[str], partition: int = -1) -> None:
    producer = RequestProducer(config)
    for n, key in enumerate(keys):
        producer.send(topic, {"n": n, "key": key}, key=key, partition=partition)
    producer.flush()


def test_a_batch_is_a_run_of_one_partition_in_offset_order_and_every_message_is_counted(
        kafka_config: dict[str, Any], topic: str, group: str) -> None:
    ensure_topics(kafka_config, [TopicSpec(topic, partitions=3)])
    keys = [f"k{n}" for n in range(3000)]
    _send(kafka_config, topic, keys)  # all there before the worker starts: batches fill up
    handler = BatchRecorder()
    port = free_port()
    worker = Worker(kafka_config, [topic], group, handler, metrics_port=port, batch_size=500)
    thread = start_in_thread(worker)
    try:
        wait_for(lambda: worker.stats.handled == 3000, 30, "3000 messages handled")
        samples = scrape_metrics(port, topic)
    finally:
        stop_thread(worker, thread)

    assert sorted(handler.keys()) == sorted(keys), "each message handled exactly once"
    for batch in handler.batches:
        offsets = batch["offsets"]
        assert offsets == list(range(offsets[0], offsets[0] + len(offsets))), "consecutive offsets of one partition"
    for partition in range(3):
        done = [d["offset"] for d in handler.done if d["partition"] == partition]
        assert done == sorted(done) and len(done) == len(set(done)), f"partition {partition} in order"
    assert max(len(b["offsets"]) for b in handler.batches) > 100, "messages arrive in batches, not one by one"
    assert all(len(b["offsets"]) <= 500 for b in handler.batches), "no batch beyond the worker's batch size"
    assert samples["kw_worker_handled_total"] == 3000
    assert samples["kw_worker_handler_seconds_count"] == len(handler.batches), "one latency sample per call"
    assert sum(committed(kafka_config, group, topic).values()) == 3000


def test_batch_item_failed_blocks_at_that_message_and_the_rest_come_again(
        kafka_config: dict[str, Any], topic: str, group: str) -> None:
    ensure_topics(kafka_config, [TopicSpec(topic, partitions=2)])
    keys = [f"a{n}" for n in range(20)]
    _send(kafka_config, topic, keys, partition=0)
    _send(kafka_config, topic, [f"b{n}" for n in range(20)], partition=1)
    handler = BatchRecorder(fail={"a7": 2})
    intervals = [0.5, 1.0]
    worker = Worker(kafka_config, [topic], group, handler,
                    policy=RetryPolicy(blocking=BlockingRetry(intervals=intervals)))
    thread = start_in_thread(worker)
    try:
        wait_for(lambda: len(handler.done) == 40, 30, "all 40 messages done")
    finally:
        stop_thread(worker, thread)

    assert handler.keys(0) == keys, "partition 0: each message once, in order, a7 after its two failures"
    assert handler.keys(1) == [f"b{n}" for n in range(20)]
    attempts = [*handler.failed_at["a7"], next(d["t"] for d in handler.done if d["key"] == "a7")]
    gaps = [later - earlier for earlier, later in itertools.pairwise(attempts)]
    for gap, interval in zip(gaps, intervals, strict=True):
        assert interval - 0.05 <= gap <= interval + 0.5, f"gaps {gaps} vs intervals {intervals}"
    assert worker.stats.handled == 40 and worker.stats.failed == 2


def test_a_batch_failing_without_naming_a_message_is_retried_one_at_a_time(
        kafka_config: dict[str, Any], topic: str, group: str) -> None:
    ensure_topics(kafka_config, [TopicSpec(topic, partitions=1)])
    keys = [f"k{n}" for n in range(30)]
    keys[12] = "poison"
    _send(kafka_config, topic, keys)
    handler = BatchRecorder(poison={"poison"})
    worker = Worker(kafka_config, [topic], group, handler,
                    policy=RetryPolicy(non_blocking=NonBlockingRetry(intervals=[0.2])))
    thread = start_in_thread(worker)
    try:
        wait_for(lambda: worker.stats.dead_lettered == 1 and len(set(handler.keys())) == 29, 30,
                 "29 handled, the poison dead-lettered after its retry")
    finally:
        stop_thread(worker, thread)

    assert sorted(handler.keys()) == sorted(k for k in keys if k != "poison"), "each once: a failed call claims none"
    singles = [b for b in handler.batches if len(b["offsets"]) == 1]
    assert singles, "the failed batch was handed over again one message at a time"
    dead = read_all(kafka_config, dead_letter_topic(topic, group), expected=1)
    assert [m.key() for m in dead] == [b"poison"]
    provenance = h.decode(dead[0].headers())
    assert provenance[h.ERROR_TYPE] == "ValueError" and provenance[h.ORIGINAL_OFFSET] == "12"
    assert provenance[h.ATTEMPT] == "2", "dead-lettered after its one retry"


@pytest.mark.parametrize("named", [False, True], ids=["escaping", "named-with-BatchItemFailed"])
def test_an_undecodable_value_read_in_a_batch_is_dead_lettered_and_the_rest_handled(
        kafka_config: dict[str, Any], topic: str, group: str, named: bool) -> None:
    ensure_topics(kafka_config, [TopicSpec(topic, partitions=1)])
    producer = RequestProducer(kafka_config)
    for n in range(10):
        if n == 4:
            producer.send(topic, b"{not json", key="bad", raw=True)
        else:
            producer.send(topic, {"n": n}, key=f"k{n}")
    producer.flush()
    handler = BatchRecorder(name_decode_errors=named)
    worker = Worker(kafka_config, [topic], group, handler,
                    policy=RetryPolicy(blocking=BlockingRetry(intervals=[0.2])))
    thread = start_in_thread(worker)
    try:
        wait_for(lambda: len(handler.done) == 9 and worker.stats.dead_lettered == 1, 30, "9 done, 1 dead-lettered")
    finally:
        stop_thread(worker, thread)

    assert handler.keys() == [f"k{n}" for n in range(10) if n != 4], "each good message once, in order"
    dead = read_all(kafka_config, dead_letter_topic(topic, group), expected=1)
    assert dead[0].value() == b"{not json"
    assert h.decode(dead[0].headers())[h.ERROR_TYPE] == "MessageDecodeError"
    assert worker.stats.failed == 0, "not retried: decoding again cannot help"
