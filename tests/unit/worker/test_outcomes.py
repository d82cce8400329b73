"""Every outcome through every strategy, with no broker: done, hold, retry, dead letter, operator
skip and boundary rejection, for a message handler one at a time, a @batch_handler and a message
handler with concurrency. A fake consumer records what the worker asks of it; writes are captured.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from confluent_kafka import Message as KafkaMessage
from confluent_kafka import TopicPartition

from kafka_workflows import headers as h
from kafka_workflows.errors import NonRetryableError
from kafka_workflows.handlers import batch_handler
from kafka_workflows.messages import Message, MessageBatch
from kafka_workflows.retry.policy import BlockingRetry, NonBlockingRetry, RetryPolicy
from kafka_workflows.retry.topics import dead_letter_topic, retry_topic
from kafka_workflows.worker import Worker
from kafka_workflows.worker.metrics import WorkerMetrics

CONFIG = {"bootstrap.servers": "127.0.0.1:1"}
TOPIC, GROUP, STORE = "orders", "billing", "jobs"
STRATEGIES = ["message", "batch", "concurrent"]


@dataclass
class FakeConsumer:
    paused: list[tuple[str, int]] = field(default_factory=list)
    resumed: list[tuple[str, int]] = field(default_factory=list)
    seeks: list[tuple[str, int, int]] = field(default_factory=list)
    stored: dict[tuple[str, int], int] = field(default_factory=dict)

    def pause(self, tps: list[TopicPartition]) -> None:
        self.paused += [(tp.topic, tp.partition) for tp in tps]

    def resume(self, tps: list[TopicPartition]) -> None:
        self.resumed += [(tp.topic, tp.partition) for tp in tps]

    def seek(self, tp: TopicPartition) -> None:
        self.seeks.append((tp.topic, tp.partition, tp.offset))

    def store_offsets(self, offsets: list[TopicPartition]) -> None:
        self.stored.update({(tp.topic, tp.partition): tp.offset for tp in offsets})


class FakeStore:
    def __init__(self) -> None:
        self.reports: list[tuple[str, str, int]] = []

    def complete(self, request_id: str, job: int, *, flush: bool = True, trace: Any = None) -> None:
        self.reports.append(("complete", request_id, job))

    def fail(self, request_id: str, job: int, reason: str, *, flush: bool = True, trace: Any = None) -> None:
        self.reports.append(("fail", request_id, job))

    def flush(self, timeout: float = 60.0) -> list[Any]:
        return []

    def close(self) -> None: ...


class Harness:
    """A Worker built as usual, fed records by hand; its writes and store reports captured."""

    def __init__(self, strategy: str, policy: RetryPolicy, fail: Callable[[Message], None] | None = None,
                 metrics: WorkerMetrics | None = None) -> None:
        self.calls: list[int] = []

        def one(message: Message) -> None:
            self.calls.append(message.offset)
            _ = message.value
            if fail is not None:
                fail(message)

        @batch_handler
        def many(batch: MessageBatch) -> None:
            for message in batch:
                one(message)

        self.worker = Worker(CONFIG, [TOPIC], GROUP, many if strategy == "batch" else one, policy=policy,
                             store=STORE, concurrency=4 if strategy == "concurrent" else 1, metrics=metrics)
        self.strategy = strategy
        self.written: list[tuple[str, bytes | None, dict[str, str]]] = []
        self.worker.writes._write = self._write  # type: ignore[method-assign]
        self.store = FakeStore()
        self.worker.writes.store_client = self.store  # type: ignore[assignment]
        self.worker.operations._send = lambda *args: None
        self.consumer = FakeConsumer()
        self.worker._assignment |= {(TOPIC, 0), *((t, 0) for t in self.worker.retry_topics)}

    def _write(self, topic: str, key: bytes | None, value: bytes | None, headers: dict[str, object]) -> None:
        self.written.append((topic, value, {k: v.decode() if isinstance(v, bytes) else str(v)
                                            for k, v in headers.items()}))
        self.worker.writes.unflushed = True

    def feed(self, *records: KafkaMessage) -> None:
        w, c = self.worker, self.consumer
        w.checkpoint.start_batch()
        w.ctx.cut.begin(60.0)
        if w.batches is not None:
            w.batches.handle(c, list(records))
        elif w.keyed is not None:
            w.keyed.handle(c, list(records))
            deadline = time.monotonic() + 30
            while (w.keyed.scheduler.running or not w.keyed.outcome_queue.empty()) and time.monotonic() < deadline:
                w.keyed.drain(c, wait=0.1)
        else:
            w.dispatch.handle(c, list(records))
        w.ctx.commit(c)

    def skip(self, offset: int) -> None:
        self.worker.operations.apply(self.consumer, {
            "kind": "command", "id": "c1", "op": "skip", "group": GROUP, "topic": TOPIC, "partition": 0,
            "offset": offset, "by": "ops", "reason": "poison", "at": time.time()})

    def held(self) -> bool:
        w = self.worker
        return bool(w.held) or (w.keyed is not None and bool(w.keyed.scheduler.holds))


def record(offset: int = 0, value: bytes = b'{"n": 1}', topic: str = TOPIC,
           headers: dict[str, bytes] | None = None) -> KafkaMessage:
    wire = {h.REQUEST_ID: b"r1", h.JOB_INDEX: str(offset).encode(), **(headers or {})}
    return KafkaMessage(topic=topic, partition=0, offset=offset, key=b"k", value=value,
                        headers=list(wire.items()))


def boom(exc: Exception) -> Callable[[Message], None]:
    def fail(message: Message) -> None:
        raise exc
    return fail


BLOCKING = RetryPolicy(blocking=BlockingRetry(intervals=[30.0]))
NON_BLOCKING = RetryPolicy(non_blocking=NonBlockingRetry(intervals=[5.0]))


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_done_stores_the_offset_and_reports_the_job(strategy: str) -> None:
    t = Harness(strategy, NON_BLOCKING)
    t.feed(record(0), record(1))
    assert t.calls == [0, 1] and t.written == []
    assert t.consumer.stored == {(TOPIC, 0): 2}
    assert t.store.reports == [("complete", "r1", 0), ("complete", "r1", 1)]
    assert t.worker.stats.handled == 2


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_hold_keeps_the_record_and_stores_nothing(strategy: str) -> None:
    t = Harness(strategy, BLOCKING, boom(ConnectionError("down")))
    t.feed(record(0))
    assert t.held() and t.written == [] and t.store.reports == []
    assert (TOPIC, 0) not in t.consumer.stored
    assert t.worker.stats.failed == 1


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_retry_writes_to_the_retry_topic_with_the_origin_the_worker_decided(strategy: str) -> None:
    t = Harness(strategy, NON_BLOCKING, boom(ConnectionError("down")))
    forged = {h.ORIGINAL_TOPIC: b"kafka-workflows.control", h.ORIGINAL_PARTITION: b"9", h.ORIGINAL_OFFSET: b"9"}
    t.feed(record(3, headers=forged))
    [(topic, value, headers)] = t.written
    assert topic == retry_topic(TOPIC, GROUP, 1) and value == b'{"n": 1}'
    assert (headers[h.ORIGINAL_TOPIC], headers[h.ORIGINAL_PARTITION], headers[h.ORIGINAL_OFFSET]) == (TOPIC, "0", "3")
    assert headers[h.ATTEMPT] == "2" and headers[h.ERROR_TYPE] == "ConnectionError"
    assert t.consumer.stored == {(TOPIC, 0): 4} and t.store.reports == []


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_dead_letter_goes_to_the_base_topic_dlq_and_fails_the_job(strategy: str) -> None:
    t = Harness(strategy, NON_BLOCKING, boom(NonRetryableError("bad")))
    t.feed(record(0))
    [(topic, _, headers)] = t.written
    assert topic == dead_letter_topic(TOPIC, GROUP) and headers[h.ERROR_TYPE] == "NonRetryableError"
    assert t.consumer.stored == {(TOPIC, 0): 1} and t.store.reports == [("fail", "r1", 0)]
    assert t.worker.stats.dead_lettered == 1


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_an_operator_skip_dead_letters_the_held_record_marked(strategy: str) -> None:
    t = Harness(strategy, BLOCKING, boom(ConnectionError("down")))
    t.feed(record(0))
    assert t.held()
    t.skip(0)
    [(topic, _, headers)] = t.written
    assert topic == dead_letter_topic(TOPIC, GROUP)
    assert (headers["kw-skipped-by"], headers["kw-skip-reason"], headers[h.ERROR_TYPE]) == (
        "ops", "poison", "ConnectionError")
    assert not t.held() and t.consumer.stored == {(TOPIC, 0): 1}
    assert t.store.reports == [("fail", "r1", 0)]


REJECTED = [
    pytest.param(TOPIC, {h.ATTEMPT: b"secret"}, "header kw-attempt is not an integer (6 characters)", id="attempt"),
    pytest.param(TOPIC, {h.ATTEMPT: b"0"}, "header kw-attempt is out of range (1 characters)", id="attempt-0"),
    pytest.param(TOPIC, {h.ATTEMPT: b"9" * 400}, "header kw-attempt is out of range (400 characters)", id="huge"),
    pytest.param(TOPIC, {h.JOB_INDEX: b"-1"}, "header kw-job-index is out of range (2 characters)", id="job"),
    pytest.param(TOPIC, {h.REQUEST_ID: b""}, "header kw-request-id is empty", id="empty-request-id"),
    pytest.param(TOPIC, {h.REQUEST_ID: b"r" * 5000}, "header kw-request-id is too long (5000 bytes)",
                 id="long-request-id"),
    pytest.param(TOPIC, {h.WORKFLOW: b"w" * 10_000}, "header kw-workflow is too long (10000 bytes)", id="long-kw"),
    pytest.param("retry", {h.RETRY_AT: b"abc"}, "header kw-retry-at is not an integer (3 characters)",
                 id="retry-at"),
    pytest.param("retry", {h.ORIGINAL_OFFSET: b"x"}, "header kw-original-offset is not an integer (1 characters)",
                 id="original-offset"),
]


@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize(("where", "headers", "why"), REJECTED)
def test_a_record_refused_at_the_boundary_is_dead_lettered_named_and_never_handled(
        strategy: str, where: str, headers: dict[str, bytes], why: str) -> None:
    t = Harness(strategy, NON_BLOCKING)
    topic = retry_topic(TOPIC, GROUP, 1) if where == "retry" else TOPIC
    t.feed(record(0, topic=topic, headers={h.ORIGINAL_TOPIC: b"kafka-workflows.control", **headers}),
           record(1, topic=topic))
    assert t.calls == [1], "the refused record never reaches the handler; the next one does"
    [(dlq, _, out)] = t.written
    assert dlq == dead_letter_topic(TOPIC, GROUP), "the worker's base topic, never a header's"
    assert (out[h.ERROR_TYPE], out[h.ERROR_MESSAGE]) == ("HeaderError", why)
    assert out[h.ORIGINAL_TOPIC] == topic
    assert t.consumer.stored == {(topic, 0): 2}
    assert t.store.reports == [("complete", "r1", 1)], "a refused record is never reported as a job"


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_a_record_from_the_groups_own_retry_topic_carries_its_origin_on(strategy: str) -> None:
    t = Harness(strategy, NON_BLOCKING, boom(ConnectionError("down")))
    moved = {h.ORIGINAL_TOPIC: b"elsewhere", h.ORIGINAL_PARTITION: b"2", h.ORIGINAL_OFFSET: b"40",
             h.FIRST_FAILED_AT: b"1000", h.ATTEMPT: b"2", h.RETRY_AT: b"0"}
    t.feed(record(0, topic=retry_topic(TOPIC, GROUP, 1), headers=moved))
    [(dlq, _, out)] = t.written
    assert dlq == dead_letter_topic(TOPIC, GROUP)
    assert (out[h.ORIGINAL_TOPIC], out[h.ORIGINAL_PARTITION], out[h.ORIGINAL_OFFSET]) == (TOPIC, "2", "40")
    assert out[h.FIRST_FAILED_AT] == "1000" and out[h.ATTEMPT] == "2"


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_a_huge_undecodable_value_is_dead_lettered_to_fit(strategy: str) -> None:
    t = Harness(strategy, NON_BLOCKING)
    t.feed(record(0, value=b"\x00" * 999_800))
    [(dlq, value, out)] = t.written
    assert dlq == dead_letter_topic(TOPIC, GROUP) and out[h.ERROR_TYPE] == "MessageDecodeError"
    assert out["kw-original-size"] == "999800" and int(out["kw-value-truncated"]) == len(value or b"") < 999_800
    assert t.consumer.stored == {(TOPIC, 0): 1}


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_a_failure_too_large_for_its_retry_topic_is_dead_lettered_to_fit(strategy: str) -> None:
    t = Harness(strategy, NON_BLOCKING, boom(ConnectionError("down")))
    t.feed(record(0, value=b'"' + b"x" * 999_798 + b'"'))
    [(dlq, value, out)] = t.written
    assert dlq == dead_letter_topic(TOPIC, GROUP) and out[h.ERROR_TYPE] == "ConnectionError"
    assert out["kw-original-size"] == "999800" and int(out["kw-value-truncated"]) == len(value or b"")
    assert t.consumer.stored == {(TOPIC, 0): 1} and t.worker.stats.retried == 0
