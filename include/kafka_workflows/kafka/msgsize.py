"""How large one record may be on a topic, so an oversized message is refused before it is produced.

A record larger than what the broker accepts fails its whole transaction (MSG_SIZE_TOO_LARGE is
abortable) and would fail every retry the same way. `message_limit()` asks the broker once: the
topic's `max.message.bytes` (or, for a topic not created yet, the broker's `message.max.bytes`),
capped by the producer's own `message.max.bytes` (librdkafka's default 1,000,000) and by a
configured cap. `MessageLimit.check()` then refuses a record whose key + value + headers would not
fit, with an error naming the record, its size and the limit.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient, ConfigResource

from kafka_workflows.errors import KafkaWorkflowsError
from kafka_workflows.kafka.config import client_config

PRODUCER_DEFAULT = 1_000_000  # librdkafka message.max.bytes
OVERHEAD = 512  # record batch and record headers, generously


class MessageTooLargeError(KafkaWorkflowsError, ValueError):
    """One record would exceed what the topic (or the producer) accepts."""


@dataclass(frozen=True)
class MessageLimit:
    topic: str
    max_bytes: int
    source: str  # where the limit comes from, for the error

    def check(self, what: str, value: bytes, key: bytes | str | None = None, header_bytes: int = 0) -> None:
        key_len = len(key.encode() if isinstance(key, str) else key or b"")
        size = len(value) + key_len + header_bytes + OVERHEAD
        if size > self.max_bytes:
            raise MessageTooLargeError(
                f"{what} would be a {size:,}-byte record on {self.topic}, more than the {self.max_bytes:,} bytes "
                f"allowed ({self.source}); nothing was produced")


def _describe(admin: AdminClient, resource: ConfigResource, name: str, timeout: float) -> int | None:
    try:
        entry = admin.describe_configs([resource])[resource].result(timeout).get(name)
    except KafkaException as exc:
        err = exc.args[0] if exc.args else None
        if isinstance(err, KafkaError) and err.code() == KafkaError.UNKNOWN_TOPIC_OR_PART:
            return None
        raise
    return int(entry.value) if entry is not None and entry.value is not None else None


def message_limit(config: Mapping[str, Any], topic: str, cap: int | None = None,
                  timeout: float = 30.0) -> MessageLimit:
    """The limit for records on `topic`, from the broker, the producer config and `cap`."""
    admin = AdminClient(client_config(config))
    limits: list[tuple[int, str]] = []
    topic_limit = _describe(admin, ConfigResource(ConfigResource.Type.TOPIC, topic), "max.message.bytes", timeout)
    if topic_limit is not None:
        limits.append((topic_limit, f"topic {topic} max.message.bytes"))
    else:
        brokers = sorted(admin.list_topics(timeout=timeout).brokers)
        if brokers:
            resource = ConfigResource(ConfigResource.Type.BROKER, str(brokers[0]))
            broker_limit = _describe(admin, resource, "message.max.bytes", timeout)
            if broker_limit is not None:
                limits.append((broker_limit, "broker message.max.bytes"))
    producer = int(config.get("message.max.bytes", PRODUCER_DEFAULT))
    limits.append((producer, "producer message.max.bytes"))
    if cap is not None:
        limits.append((int(cap), "the configured max_message_bytes"))
    value, source = min(limits)
    return MessageLimit(topic, value, source)
