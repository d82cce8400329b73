"""What handlers receive (Message, MessageBatch), how a batch handler names a failure, and the
batch-fed latency histogram, without a broker (records are built with confluent_kafka.Message)."""

from __future__ import annotations

from typing import Any

import pytest
from confluent_kafka import Message as KafkaMessage
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from kafka_workflows.errors import BatchItemFailed, MessageDecodeError
from kafka_workflows.handlers import batch_handler, is_batch_handler
from kafka_workflows.messages import Message, MessageBatch
from kafka_workflows.worker.metrics import BatchHistogram


def record(offset: int, value: bytes | None, key: str = "k", **headers: str) -> KafkaMessage:
    return KafkaMessage(topic="renewals", partition=2, offset=offset, key=key.encode(), value=value,
                        headers=[(n.replace("_", "-"), v.encode()) for n, v in headers.items()], timestamp=(1, 1700))


def test_message_reads_the_record_and_decodes_its_value() -> None:
    message = Message.of(record(17, b'{"user": "u1"}', kw_request_id="r1", kw_attempt="3"))
    assert (message.topic, message.partition, message.offset, message.key) == ("renewals", 2, 17, "k")
    assert message.value == {"user": "u1"}
    assert message.timestamp_ms == 1700
    assert (message.request_id, message.attempt, message.original_topic) == ("r1", 3, "renewals")
    assert message.where == "renewals[2]@17"
    with pytest.raises(MessageDecodeError, match=r"renewals\[2\]@18: value is not JSON"):
        Message.of(record(18, b"{nope"))


def test_a_batch_decodes_a_value_only_when_it_is_read_and_names_the_bad_record() -> None:
    records = [record(0, b'{"n": 0}'), record(1, b"{nope"), record(2, b'{"n": 2}')]
    batch = MessageBatch(records)
    assert len(batch) == 3 and (batch.topic, batch.partition) == ("renewals", 2)
    assert [m.offset for m in batch] == [0, 1, 2], "metadata needs no decoding"
    assert batch[2].value == {"n": 2} and batch[2] is batch[2], "built once, then kept"
    assert [m.value for m in batch[:1]] == [{"n": 0}]
    with pytest.raises(MessageDecodeError, match=r"renewals\[2\]@1") as failure:
        batch.values()
    assert failure.value.record is records[1], "the worker checks BatchItemFailed's index against it"
    assert repr(batch[1]) == "Message(renewals[2]@1, key='k', value=<not decoded>)"
    assert repr(batch) == "MessageBatch(renewals[2]@0..2, 3)"


def test_batch_item_failed_carries_the_index_and_the_chained_cause() -> None:
    cause = ConnectionError("db down")
    try:
        raise BatchItemFailed(4) from cause
    except BatchItemFailed as exc:
        assert exc.index == 4 and exc.cause is cause
    assert BatchItemFailed(1, cause).cause is cause
    assert BatchItemFailed(0).cause.__class__ is BatchItemFailed, "no cause: the exception stands for itself"


def test_batch_handler_marks_the_function() -> None:
    @batch_handler
    def handle(messages: MessageBatch) -> None: ...

    def single(message: Message) -> None: ...

    assert is_batch_handler(handle) and not is_batch_handler(single)


def test_batch_histogram_exposes_cumulative_buckets_count_and_sum() -> None:
    registry = CollectorRegistry()
    histogram = BatchHistogram("kw_test_seconds", "test", ("group", "topic"), (0.1, 1.0))
    registry.register(histogram)
    tally = histogram.new_tally()
    for seconds, bucket in ((0.05, 0), (0.1, 0), (0.5, 1), (7.0, 2)):  # `le` buckets: 0.1 falls in le=0.1
        tally[0] += seconds
        tally[1 + bucket] += 1
    histogram.merge({("g", "t"): tally})
    histogram.merge({("g", "t"): tally})  # a second batch adds up
    samples: dict[str, Any] = {}
    for family in text_string_to_metric_families(generate_latest(registry).decode()):
        for s in family.samples:
            samples[s.name + (f"[{s.labels['le']}]" if "le" in s.labels else "")] = s.value
    assert samples == {"kw_test_seconds_bucket[0.1]": 4, "kw_test_seconds_bucket[1.0]": 6,
                       "kw_test_seconds_bucket[+Inf]": 8, "kw_test_seconds_count": 8,
                       "kw_test_seconds_sum": pytest.approx(2 * 7.65)}


def test_the_original_topic_is_the_workers_never_a_header_a_producer_wrote() -> None:
    forged = record(19, b"{}", kw_original_topic="kafka-workflows.control")
    assert Message(forged).original_topic == "renewals"
    assert Message(forged, base="orders").original_topic == "orders", "a retry topic's base, as the worker knows it"
