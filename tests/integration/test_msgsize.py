"""msgsize: the record size limit comes from the broker (topic, else broker config), the producer and a cap."""

from __future__ import annotations

from typing import Any

import pytest
from confluent_kafka.admin import AdminClient, NewTopic

from kafka_workflows.kafka.msgsize import MessageTooLargeError, message_limit

pytestmark = pytest.mark.integration


def test_the_topic_max_message_bytes_is_the_limit_when_it_is_the_smallest(kafka_config: dict[str, Any],
                                                                         topic: str) -> None:
    admin = AdminClient(kafka_config)
    admin.create_topics([NewTopic(topic, 1, 1, config={"max.message.bytes": "5000"})])[topic].result(30)
    limit = message_limit(kafka_config, topic)
    assert (limit.max_bytes, limit.source) == (5000, f"topic {topic} max.message.bytes")
    limit.check("job 1", b"x" * 4000)
    with pytest.raises(MessageTooLargeError, match=rf"^job 2 would be a 5,512-byte record on {topic}, more than the "
                                                   r"5,000 bytes allowed \(topic .* max\.message\.bytes\)"):
        limit.check("job 2", b"x" * 5000)


def test_a_topic_not_created_yet_gets_the_producer_or_broker_limit_and_a_cap_wins(kafka_config: dict[str, Any],
                                                                                  topic: str) -> None:
    limit = message_limit(kafka_config, topic)
    assert limit.max_bytes == 1_000_000 and limit.source == "producer message.max.bytes"
    capped = message_limit(kafka_config, topic, cap=10_000)
    assert (capped.max_bytes, capped.source) == (10_000, "the configured max_message_bytes")
