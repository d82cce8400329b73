"""TransactionalProcessor against the real broker: outputs + offsets in one transaction, aborts, fencing, rebalance."""

from __future__ import annotations

import time
import uuid
from collections import Counter
from collections.abc import Iterable
from typing import Any

import pytest
from confluent_kafka import KafkaException, Producer
from confluent_kafka import Message as KafkaMessage

from kafka_workflows.eos import (
    CommittedBatch,
    Output,
    TransactionalHandler,
    TransactionalProcessor,
)
from kafka_workflows.eos.handler import TP
from kafka_workflows.kafka.admin import TopicSpec, ensure_topics
from kafka_workflows.kafka.producer import RequestProducer
from tests.helpers.kafka import committed, read_all, start_in_thread, stop_thread, wait_for

pytestmark = pytest.mark.integration


def _produce(config: dict[str, Any], topic: str, values: Iterable[int]) -> None:
    producer = RequestProducer(config)
    for n in values:
        producer.send(topic, {"n": n}, key=f"k{n % 7}")
    producer.flush()


class Echo(TransactionalHandler):
    """Doubles `n` into the output topic; records every hook call."""

    def __init__(self, out: str, oversize_once: int | None = None) -> None:
        self.out = out
        self.oversize_once = oversize_once
        self.batches: list[CommittedBatch] = []
        self.assigned: list[TP] = []
        self.revoked: list[TP] = []
        self.resets: list[list[TP]] = []

    def process(self, message: KafkaMessage) -> Iterable[Output]:
        import json

        n = json.loads(message.value())["n"]
        if n == self.oversize_once:
            self.oversize_once = None  # larger than the output topic's max.message.bytes: the broker refuses it
            return [Output(self.out, message.key(), b"x" * 5000)]
        return [Output(self.out, message.key(), str(2 * n).encode(), {"kw-request-id": str(n)})]

    def after_commit(self, batch: CommittedBatch) -> None:
        self.batches.append(batch)

    def on_assign(self, partitions: list[TP]) -> None:
        self.assigned.extend(partitions)

    def on_revoke(self, partitions: list[TP]) -> None:
        self.revoked.extend(partitions)

    def on_reset(self, partitions: list[TP]) -> None:
        self.resets.append(partitions)


def _outputs(config: dict[str, Any], topic: str, expected: int) -> list[int]:
    return sorted(int(m.value()) for m in read_all(config, topic, expected=expected, timeout=30))


def test_outputs_and_offsets_commit_together(kafka_config: dict[str, Any], topic: str, group: str) -> None:
    out = f"{topic}.out"
    ensure_topics(kafka_config, [TopicSpec(topic, 3), TopicSpec(out, 3)])
    _produce(kafka_config, topic, range(300))
    handler = Echo(out)
    processor = TransactionalProcessor(kafka_config, [topic], group, handler, commit_interval=0.2)
    thread = start_in_thread(processor)
    wait_for(lambda: sum(b.consumed for b in handler.batches) >= 300, 60, "300 messages committed")
    processor.stop()
    thread.join(30)
    assert not thread.is_alive()
    assert _outputs(kafka_config, out, 300) == [2 * n for n in range(300)]
    # Input offsets are committed with the outputs: all 300, nothing more (the input has no markers).
    per_partition = Counter(m.partition() for m in read_all(kafka_config, topic, expected=300))
    assert committed(kafka_config, group, topic) == dict(per_partition)
    assert sum(len(b.outputs) for b in handler.batches) == 300
    assert sorted(handler.assigned) == [(topic, p) for p in range(3)]
    assert processor.stats.aborts == 0


def test_abortable_error_aborts_rewinds_and_resets(kafka_config: dict[str, Any], topic: str, group: str) -> None:
    out = f"{topic}.out"
    ensure_topics(kafka_config, [TopicSpec(topic, 1), TopicSpec(out, 1, config={"max.message.bytes": "2000"})])
    _produce(kafka_config, topic, range(50))
    handler = Echo(out, oversize_once=20)
    processor = TransactionalProcessor(kafka_config, [topic], group, handler, commit_interval=0.2)
    thread = start_in_thread(processor)
    wait_for(lambda: sum(b.consumed for b in handler.batches) >= 50, 60, "50 messages committed after the abort")
    processor.stop()
    thread.join(30)
    assert processor.stats.aborts >= 1
    assert handler.resets and handler.resets[0] == [(topic, 0)]
    # Every input exactly once in the committed output; the refused 5000-byte value never shows.
    assert _outputs(kafka_config, out, 50) == [2 * n for n in range(50)]
    committed_outputs = [o.value for b in handler.batches for o in b.outputs]
    assert len(committed_outputs) == 50 and b"x" * 5000 not in committed_outputs


def test_second_producer_with_same_transactional_id_fences_the_first(kafka_config: dict[str, Any],
                                                                    topic: str) -> None:
    ensure_topics(kafka_config, [TopicSpec(topic, 1)])
    tid = f"tx-{uuid.uuid4().hex[:8]}"
    old = Producer({**kafka_config, "transactional.id": tid})
    old.init_transactions(30)
    old.begin_transaction()
    old.produce(topic, b"zombie")
    old.flush(10)
    new = Producer({**kafka_config, "transactional.id": tid})
    new.init_transactions(30)  # bumps the epoch and aborts the old producer's open transaction
    new.begin_transaction()
    new.produce(topic, b"fresh")
    new.commit_transaction(30)
    with pytest.raises(KafkaException) as fenced:
        old.commit_transaction(30)
    assert fenced.value.args[0].fatal(), fenced.value.args[0]
    assert [m.value() for m in read_all(kafka_config, topic, expected=1)] == [b"fresh"]


def test_fenced_processor_recreates_its_producer_and_stays_exactly_once(kafka_config: dict[str, Any],
                                                                        topic: str, group: str) -> None:
    out = f"{topic}.out"
    ensure_topics(kafka_config, [TopicSpec(topic, 2), TopicSpec(out, 2)])
    handler = Echo(out)
    processor = TransactionalProcessor(kafka_config, [topic], group, handler, instance_id="fixed",
                                       commit_interval=0.2)
    thread = start_in_thread(processor)
    _produce(kafka_config, topic, range(40))
    wait_for(lambda: sum(b.consumed for b in handler.batches) >= 40, 60, "first 40 committed")

    zombie = Producer({**kafka_config, "transactional.id": processor.transactional_id})
    zombie.init_transactions(30)  # fences the processor's producer
    zombie.begin_transaction()
    zombie.produce(out, b"-1")
    zombie.flush(10)
    _produce(kafka_config, topic, range(40, 80))
    wait_for(lambda: sum(b.consumed for b in handler.batches) >= 80, 60, "next 40 committed by a new producer")
    with pytest.raises(KafkaException) as fenced:  # the recreated producer fenced it in turn
        zombie.commit_transaction(30)
    assert fenced.value.args[0].fatal()
    processor.stop()
    thread.join(30)
    assert processor.stats.producer_restarts == 1
    assert _outputs(kafka_config, out, 80) == [2 * n for n in range(80)]


def test_revoke_commits_the_open_transaction_before_partitions_move(kafka_config: dict[str, Any],
                                                                   topic: str, group: str) -> None:
    out = f"{topic}.out"
    ensure_topics(kafka_config, [TopicSpec(topic, 4), TopicSpec(out, 4)])
    first = Echo(out)
    # A commit interval far beyond the test: only the revoke can commit what `first` processed.
    slow = TransactionalProcessor(kafka_config, [topic], group, first, commit_interval=60,
                                  transaction_timeout_ms=180_000)
    slow_thread = start_in_thread(slow)
    wait_for(lambda: len(first.assigned) == 4, 30, "all partitions on the first processor")
    _produce(kafka_config, topic, range(100))
    wait_for(lambda: slow.stats.consumed >= 100, 30, "100 consumed into the open transaction")
    assert first.batches == []

    second = Echo(out)
    joiner = TransactionalProcessor(kafka_config, [topic], group, second, commit_interval=0.2)
    started = time.monotonic()
    joiner_thread = start_in_thread(joiner)
    wait_for(lambda: first.batches, 30, "the revoke to commit the open transaction")
    assert time.monotonic() - started < 30
    assert first.batches[0].consumed == 100
    wait_for(lambda: second.assigned, 30, "partitions on the second processor")
    moved = set(second.assigned)
    assert moved and moved <= set(first.revoked)

    _produce(kafka_config, topic, range(100, 200))
    wait_for(lambda: slow.stats.consumed + joiner.stats.consumed >= 200, 30, "200 consumed by both")
    joiner.stop()
    slow.stop()
    joiner_thread.join(30)
    slow_thread.join(30)
    assert _outputs(kafka_config, out, 200) == [2 * n for n in range(200)]


def test_a_raising_handler_dead_letters_that_message_in_the_transaction_and_goes_on(
        kafka_config: dict[str, Any], topic: str, group: str) -> None:
    """Was: a raising handler aborted and stopped the processor (issue 10 replaced that: one poison
    input must not stop a processor for good)."""
    out = f"{topic}.out"
    ensure_topics(kafka_config, [TopicSpec(topic, 1), TopicSpec(out, 1)])
    _produce(kafka_config, topic, range(5))
    seen: list[int] = []

    def handler(message: KafkaMessage) -> list[Output]:
        seen.append(message.offset())
        if message.offset() == 3:
            raise ValueError("bug in the handler")
        return [Output(out, None, b"ok")]

    processor = TransactionalProcessor(kafka_config, [topic], group, handler, commit_interval=0.2)
    thread = start_in_thread(processor)
    try:
        wait_for(lambda: committed(kafka_config, group, topic) == {0: 5}, 60, "every offset committed")
        assert thread.is_alive()
    finally:
        stop_thread(processor, thread)
    assert seen == [0, 1, 2, 3, 4]
    assert [m.value() for m in read_all(kafka_config, out, expected=4)] == [b"ok"] * 4
    [dead] = read_all(kafka_config, f"{topic}.{group}.dlq", expected=1)
    headers = dict(dead.headers())
    assert (headers["kw-error-type"], headers["kw-error-message"], headers["kw-original-offset"]) == (
        b"ValueError", b"bug in the handler", b"3")
    assert processor.stats.dead_lettered == 1
