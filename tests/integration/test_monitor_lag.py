"""The lag the UI shows, against the real broker: a transactionally written topic that a group has
consumed to its end lags 0, although each partition's end offset sits past a commit marker."""

from __future__ import annotations

from typing import Any

import pytest
from confluent_kafka import Consumer, KafkaError, Producer
from confluent_kafka.admin import AdminClient

from kafka_workflows.kafka.admin import TopicSpec, ensure_topics
from kafka_workflows.monitor.lag import CommittedReader, ReadableCounter, groups_lag

pytestmark = pytest.mark.integration


def _consume_all_and_commit(config: dict[str, str], topic: str, group: str, expected: int) -> None:
    consumer = Consumer({**config, "group.id": group, "auto.offset.reset": "earliest", "enable.auto.commit": False,
                         "isolation.level": "read_committed"})
    consumer.subscribe([topic])
    seen = 0
    try:
        for _ in range(600):
            msg = consumer.poll(0.5)
            if msg is None or (msg.error() and msg.error().code() == KafkaError._PARTITION_EOF):
                if seen >= expected:
                    break
                continue
            assert msg.error() is None, msg.error()
            consumer.commit(msg, asynchronous=False)  # offset + 1: the next offset is the commit marker
            seen += 1
    finally:
        consumer.close()
    assert seen == expected


def test_idle_lag_on_a_transactionally_written_topic_is_zero_once_everything_is_consumed(
        kafka_config: dict[str, str], topic: str, group: str) -> None:
    ensure_topics(kafka_config, [TopicSpec(topic, partitions=3)])
    producer = Producer({**kafka_config, "transactional.id": f"{topic}-tx"})
    producer.init_transactions(30)
    for batch in range(2):
        producer.begin_transaction()
        for i in range(9):
            producer.produce(topic, key=f"k{i}", value=f"{batch}-{i}", partition=i % 3)
        producer.commit_transaction(30)
    _consume_all_and_commit(kafka_config, topic, group, 18)

    admin, reader, counter = AdminClient(kafka_config), CommittedReader(kafka_config), ReadableCounter(kafka_config)
    try:
        plain = groups_lag(admin, reader, {group: [topic]})[group]
        assert {r["lag"] for r in plain["partitions"]} == {1}, "each partition ends with a commit marker"
        info: dict[str, Any] = groups_lag(admin, reader, {group: [topic]}, counter=counter)[group]
        assert [(r["partition"], r["lag"]) for r in info["partitions"]] == [(0, 0), (1, 0), (2, 0)], info
        assert info["lag"] == 0

        # A record written after that is real lag again: 1 on its partition, 0 elsewhere.
        producer.begin_transaction()
        producer.produce(topic, key="late", value="late", partition=1)
        producer.commit_transaction(30)
        info = groups_lag(admin, reader, {group: [topic]}, counter=counter)[group]
        assert [(r["partition"], r["lag"]) for r in info["partitions"]] == [(0, 0), (1, 1), (2, 0)], info
    finally:
        reader.close()
        counter.close()
