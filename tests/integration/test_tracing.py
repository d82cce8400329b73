"""Issue 20, traces: the worker continues each message's W3C trace context, whatever its strategy.

Against the real broker, with the OpenTelemetry SDK's in-memory exporter as the worker's span sink
(switched on with `tracing.enable`, not installed globally): a job's handler runs inside a
`process <topic>` CONSUMER span whose parent is the message's traceparent (a batch handler's span
links every message's context instead), the store command the worker reports carries that span's
context, a retry and a dead letter keep the message's traceparent, and a malformed or huge
traceparent is ignored: the message is handled in a trace of its own, never dead-lettered for it.
"""

from __future__ import annotations

import json
import threading
import uuid
from typing import Any

import pytest
from confluent_kafka import Producer
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from kafka_workflows import headers as h
from kafka_workflows.handlers import batch_handler
from kafka_workflows.kafka.admin import TopicSpec, ensure_topics
from kafka_workflows.messages import Message, MessageBatch
from kafka_workflows.ops.deadletters import replay
from kafka_workflows.retry.policy import NonBlockingRetry, RetryPolicy
from kafka_workflows.retry.topics import dead_letter_topic
from kafka_workflows.store import commands_topic
from kafka_workflows.worker import Worker
from tests.helpers.kafka import read_all, start_in_thread, stop_thread, wait_for

pytestmark = pytest.mark.integration

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT = f"00-{TRACE}-00f067aa0ba902b7-01"


def _traceparent(span: Any) -> str:
    context = span.context
    return f"00-{context.trace_id:032x}-{context.span_id:016x}-{int(context.trace_flags):02x}"


def _produce(config: dict[str, Any], topic: str, records: list[tuple[bytes, list[tuple[str, bytes]]]]) -> None:
    producer = Producer({**config, "enable.idempotence": True})
    for key, headers in records:
        producer.produce(topic, b'{"n": 1}', key=key, headers=headers, partition=0)
    assert producer.flush(60) == 0


@pytest.mark.parametrize("strategy", ["message", "batch", "concurrent"])
def test_each_job_is_handled_in_a_consumer_span_of_its_message_trace(
        kafka_config: dict[str, Any], topic: str, group: str, strategy: str,
        spans: InMemorySpanExporter) -> None:
    ensure_topics(kafka_config, [TopicSpec(topic, 1)])
    store = f"s-{uuid.uuid4().hex[:8]}"
    seen: list[bytes | None] = []
    lock = threading.Lock()

    def one(message: Message) -> None:
        with lock:
            seen.append(message.record.key())

    @batch_handler
    def many(batch: MessageBatch) -> None:
        for message in batch:
            one(message)

    handler = many if strategy == "batch" else one
    worker = Worker(kafka_config, [topic], group, handler, store=store,
                    concurrency=4 if strategy == "concurrent" else 1)
    job = [(h.REQUEST_ID, b"r1"), (h.JOB_INDEX, b"0"), (h.TRACEPARENT, PARENT.encode()),
           (h.TRACESTATE, b"vendor=value")]
    malformed = [(h.REQUEST_ID, b"r1"), (h.JOB_INDEX, b"1"), (h.TRACEPARENT, b"00-" + b"z" * 52)]
    huge = [(h.REQUEST_ID, b"r1"), (h.JOB_INDEX, b"2"), (h.TRACEPARENT, PARENT.encode() + b"-" + b"a" * 100_000)]
    thread = start_in_thread(worker)
    try:
        _produce(kafka_config, topic, [(b"traced", job), (b"malformed", malformed), (b"huge", huge)])
        wait_for(lambda: sorted(seen) == [b"huge", b"malformed", b"traced"], 60, "the three jobs handled")
        commands = read_all(kafka_config, commands_topic(store), expected=3, timeout=30)
        assert thread.is_alive()
    finally:
        stop_thread(worker, thread)
    assert (worker.stats.handled, worker.stats.dead_lettered) == (3, 0), "nothing dead-lettered"
    processed = [s for s in spans.get_finished_spans() if s.name == f"process {topic}"]
    assert processed and all(s.kind.name == "CONSUMER" for s in processed)
    assert all(s.attributes["messaging.system"] == "kafka" and s.attributes["messaging.consumer.group.name"] == group
               for s in processed)
    if strategy == "batch":  # one call for the three: linked to the one valid context; not all in one
        # trace (two have none), so a root of its own
        assert len(processed) == 1 and processed[0].parent is None
        assert [f"{link.context.trace_id:032x}" for link in processed[0].links] == [TRACE]
        assert processed[0].attributes["messaging.batch.message_count"] == 3
        assert list(processed[0].attributes["kw.job_indexes"]) == [0, 1, 2]
        return
    assert len(processed) == 3
    by_offset = {s.attributes["messaging.kafka.offset"]: s for s in processed}
    traced = by_offset[0]
    assert f"{traced.context.trace_id:032x}" == TRACE and f"{traced.parent.span_id:016x}" == "00f067aa0ba902b7"
    assert traced.parent.is_remote and traced.context.trace_state.get("vendor") == "value"
    assert traced.attributes["kw.request_id"] == "r1" and traced.attributes["kw.job_index"] == 0
    for offset in (1, 2):  # ignored: a trace of its own, nothing of the header in the span
        assert by_offset[offset].parent is None and f"{by_offset[offset].context.trace_id:032x}" != TRACE
        assert "z" * 10 not in str(dict(by_offset[offset].attributes)) and "a" * 10 not in str(
            dict(by_offset[offset].attributes))
    # The store command of the traced job carries its handler span's context: the store continues it.
    # (the two others carry their own spans': never the header they came with).
    by_job = {json.loads(m.value())["job"]: dict(m.headers())[h.TRACEPARENT].decode() for m in commands}
    assert by_job == {offset: _traceparent(span) for offset, span in by_offset.items()}


def test_a_retry_and_a_dead_letter_keep_the_message_trace(kafka_config: dict[str, Any], topic: str, group: str,
                                                           spans: InMemorySpanExporter) -> None:
    ensure_topics(kafka_config, [TopicSpec(topic, 1)])

    def fails(message: Message) -> None:
        raise ValueError("always")

    worker = Worker(kafka_config, [topic], group, fails,
                    policy=RetryPolicy(non_blocking=NonBlockingRetry(intervals=[0.1])))
    thread = start_in_thread(worker)
    try:
        _produce(kafka_config, topic, [(b"k", [(h.TRACEPARENT, PARENT.encode())])])
        dead = read_all(kafka_config, dead_letter_topic(topic, group), expected=1, timeout=60)
    finally:
        stop_thread(worker, thread)
    assert dict(dead[0].headers())[h.TRACEPARENT] == PARENT.encode()
    # A replay sends it back with the same trace (as do the UI's and the canary's: one replay_once).
    moved = replay(kafka_config, topic, group)
    assert len(moved) == 1
    again = [m for m in read_all(kafka_config, topic, expected=2, timeout=30) if dict(m.headers() or []).get(
        h.REPLAYED_FROM)]
    assert [dict(m.headers())[h.TRACEPARENT] for m in again] == [PARENT.encode()]
    attempts = [s for s in spans.get_finished_spans() if s.name.startswith("process ")]
    assert len(attempts) == 2, "the first attempt and the retry"
    assert {f"{s.context.trace_id:032x}" for s in attempts} == {TRACE}
    assert all(not s.status.is_ok and s.events[0].name == "exception" for s in attempts)


def test_a_batch_of_one_trace_joins_it_and_links_every_message(kafka_config: dict[str, Any], topic: str,
                                                               group: str, spans: InMemorySpanExporter) -> None:
    ensure_topics(kafka_config, [TopicSpec(topic, 1)])
    seen: list[int] = []

    @batch_handler
    def many(batch: MessageBatch) -> None:
        seen.extend(1 for _ in batch)

    worker = Worker(kafka_config, [topic], group, many)
    _produce(kafka_config, topic, [(f"k{n}".encode(), [(h.TRACEPARENT, f"00-{TRACE}-{n + 1:016x}-01".encode())])
                                   for n in range(3)])
    thread = start_in_thread(worker)
    try:
        wait_for(lambda: len(seen) == 3, 60, "the three messages handled")
    finally:
        stop_thread(worker, thread)
    processed = [s for s in spans.get_finished_spans() if s.name == f"process {topic}"]
    assert sum(s.attributes["messaging.batch.message_count"] for s in processed) == 3
    assert {f"{s.context.trace_id:032x}" for s in processed} == {TRACE}
    assert sorted(link.context.span_id for s in processed for link in s.links) == [1, 2, 3]
