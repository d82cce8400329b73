"""Issue 17, the worker's half: no single record stops, wedges or loops a worker, whatever its strategy.

Defect 4: a 999,800-byte non-JSON value is dead-lettered once, truncated to fit, and the worker goes on.
Defect 5: an empty kw-request-id on a store-reporting worker's job is dead-lettered at the boundary.
Defect 6: with concurrency, a retry-topic record with `kw-retry-at: abc` is dead-lettered, not a crash.
Defect 1 (worker part): a kw-original-topic a producer wrote never becomes a dead letter's origin.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterable
from typing import Any

import pytest
from confluent_kafka import Message as KafkaMessage
from confluent_kafka import Producer

from kafka_workflows import headers as h
from kafka_workflows.handlers import batch_handler
from kafka_workflows.kafka.admin import TopicSpec, ensure_topics
from kafka_workflows.messages import Message, MessageBatch
from kafka_workflows.retry.policy import NonBlockingRetry, RetryPolicy
from kafka_workflows.retry.topics import dead_letter_topic, retry_topic
from kafka_workflows.worker import Worker
from tests.helpers.kafka import read_all, start_in_thread, stop_thread, wait_for

pytestmark = pytest.mark.integration

STRATEGIES = ["message", "batch", "concurrent"]


class Recorder:
    def __init__(self) -> None:
        self.keys: list[bytes | None] = []
        self.lock = threading.Lock()

    def one(self, message: Message) -> None:
        _ = message.value
        with self.lock:
            self.keys.append(message.record.key())

    def handler(self, strategy: str) -> Any:
        if strategy != "batch":
            return self.one

        @batch_handler
        def many(batch: MessageBatch) -> None:
            for message in batch:
                self.one(message)
        return many


def _worker(config: dict[str, Any], topic: str, group: str, strategy: str, recorder: Recorder,
            **kwargs: Any) -> Worker:
    return Worker(config, [topic], group, recorder.handler(strategy), concurrency=4 if strategy == "concurrent" else 1,
                  **kwargs)


def _raw(config: dict[str, Any], topic: str, records: Iterable[tuple[bytes, bytes, list[tuple[str, bytes]]]]) -> None:
    producer = Producer({**config, "enable.idempotence": True})
    for key, value, headers in records:
        producer.produce(topic, value, key=key, headers=headers, partition=0)
    assert producer.flush(60) == 0


def _headers(msg: KafkaMessage) -> dict[str, bytes]:
    return dict(msg.headers() or [])


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_a_one_megabyte_poison_is_dead_lettered_once_truncated_and_the_worker_goes_on(
        kafka_config: dict[str, Any], topic: str, group: str, strategy: str) -> None:
    ensure_topics(kafka_config, [TopicSpec(topic, 1)])
    recorder = Recorder()
    worker = _worker(kafka_config, topic, group, strategy, recorder)
    thread = start_in_thread(worker)
    try:
        _raw(kafka_config, topic, [(b"poison", b"\x01" * 999_800, [(h.REQUEST_ID, b"r1")]),
                                   (b"after", b'{"n": 1}', [])])
        wait_for(lambda: recorder.keys == [b"after"], 60, "the record after the poison")
        dead = read_all(kafka_config, dead_letter_topic(topic, group), expected=1, timeout=30)
        assert thread.is_alive(), "the worker stopped"
    finally:
        stop_thread(worker, thread)
    assert len(dead) == 1, "dead-lettered once"
    letter = _headers(dead[0])
    assert letter[h.ERROR_TYPE] == b"MessageDecodeError" and letter["kw-original-size"] == b"999800"
    assert int(letter["kw-value-truncated"]) == len(dead[0].value()) < 999_800
    assert (letter[h.ORIGINAL_TOPIC], letter[h.ORIGINAL_OFFSET]) == (topic.encode(), b"0")


def test_a_dead_letter_fits_a_dead_letter_topic_smaller_than_the_producer_limit(
        kafka_config: dict[str, Any], topic: str, group: str) -> None:
    dlq = dead_letter_topic(topic, group)
    ensure_topics(kafka_config, [TopicSpec(topic, 1), TopicSpec(dlq, 1, config={"max.message.bytes": "100000"})])
    recorder = Recorder()
    worker = _worker(kafka_config, topic, group, "message", recorder)
    thread = start_in_thread(worker)
    try:
        _raw(kafka_config, topic, [(b"poison", b"\x01" * 300_000, []), (b"after", b'{"n": 1}', [])])
        wait_for(lambda: recorder.keys == [b"after"], 60, "the record after the poison")
        dead = read_all(kafka_config, dlq, expected=1, timeout=30)
        assert thread.is_alive(), "the worker stopped"
    finally:
        stop_thread(worker, thread)
    assert len(dead) == 1 and 0 < len(dead[0].value()) < 100_000
    assert _headers(dead[0])["kw-original-size"] == b"300000"


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_an_empty_request_id_on_a_store_reporting_worker_is_dead_lettered_not_a_crash(
        kafka_config: dict[str, Any], topic: str, group: str, strategy: str) -> None:
    ensure_topics(kafka_config, [TopicSpec(topic, 1)])
    recorder = Recorder()
    worker = _worker(kafka_config, topic, group, strategy, recorder, store=f"s-{uuid.uuid4().hex[:8]}")
    thread = start_in_thread(worker)
    try:
        _raw(kafka_config, topic, [(b"empty-id", b'{"n": 1}', [(h.REQUEST_ID, b""), (h.JOB_INDEX, b"0")]),
                                   (b"after", b'{"n": 2}', [])])
        wait_for(lambda: recorder.keys == [b"after"], 60, "the record after the empty request id")
        dead = read_all(kafka_config, dead_letter_topic(topic, group), expected=1, timeout=30)
        assert thread.is_alive(), "the worker stopped"
    finally:
        stop_thread(worker, thread)
    assert [m.key() for m in dead] == [b"empty-id"]
    assert (_headers(dead[0])[h.ERROR_TYPE], _headers(dead[0])[h.ERROR_MESSAGE]) == (
        b"HeaderError", b"header kw-request-id is empty")


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_a_retry_record_with_a_bad_retry_at_is_dead_lettered_whatever_the_strategy(
        kafka_config: dict[str, Any], topic: str, group: str, strategy: str) -> None:
    ensure_topics(kafka_config, [TopicSpec(topic, 1)])
    recorder = Recorder()
    worker = _worker(kafka_config, topic, group, strategy, recorder,
                     policy=RetryPolicy(non_blocking=NonBlockingRetry(intervals=[0.2])))
    thread = start_in_thread(worker)
    try:
        _raw(kafka_config, retry_topic(topic, group, 1), [(b"bad-retry-at", b'{"n": 1}', [(h.RETRY_AT, b"abc")]),
                                                         (b"retry-after", b'{"n": 2}', [])])
        _raw(kafka_config, topic, [(b"after", b'{"n": 3}', [])])
        wait_for(lambda: sorted(recorder.keys) == [b"after", b"retry-after"], 60, "the records after it")
        dead = read_all(kafka_config, dead_letter_topic(topic, group), expected=1, timeout=30)
        assert thread.is_alive(), "the worker stopped"
    finally:
        stop_thread(worker, thread)
    assert [m.key() for m in dead] == [b"bad-retry-at"]
    assert _headers(dead[0])[h.ERROR_MESSAGE] == b"header kw-retry-at is not an integer (3 characters)"


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_a_forged_original_topic_never_becomes_the_dead_letters_origin(
        kafka_config: dict[str, Any], topic: str, group: str, strategy: str) -> None:
    ensure_topics(kafka_config, [TopicSpec(topic, 1)])
    recorder = Recorder()
    worker = _worker(kafka_config, topic, group, strategy, recorder)
    thread = start_in_thread(worker)
    try:
        forged = [(h.ORIGINAL_TOPIC, b"kafka-workflows.control"), (h.ORIGINAL_PARTITION, b"0"),
                  (h.ORIGINAL_OFFSET, b"0")]
        _raw(kafka_config, topic, [(b"forged", b'{"op": "pause", "by": "admin"', forged),
                                   (b"after", b'{"n": 1}', [])])
        wait_for(lambda: recorder.keys == [b"after"], 60, "the record after the forged one")
        dead = read_all(kafka_config, dead_letter_topic(topic, group), expected=1, timeout=30)
    finally:
        stop_thread(worker, thread)
    letter = _headers(dead[0])
    assert (letter[h.ORIGINAL_TOPIC], letter[h.ORIGINAL_PARTITION], letter[h.ORIGINAL_OFFSET]) == (
        topic.encode(), b"0", b"0")
