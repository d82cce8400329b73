"""Topic creation with configs, and the offsets an admin client can tell.

The Kafka provider's KafkaAdminClientHook cannot set topic configs, so creation lives here.
Topic *names* of the contract live with their concern (retry/topics.py, store/topics.py,
ops/control.py).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Mapping
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import IsolationLevel, KafkaError, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic, OffsetSpec

from kafka_workflows.errors import ConfigError, KafkaWorkflowsError
from kafka_workflows.kafka.config import client_config
from kafka_workflows.kafka.errors import describe, error_code
from kafka_workflows.kafka.leader_moves import retry_leader_moves

log = logging.getLogger(__name__)


# Our own topics (control, status, store): 3 replicas, or as many as the cluster has brokers.
REPLICATED = 0


@dataclass(frozen=True)
class TopicSpec:
    name: str
    partitions: int = 3
    replication_factor: int = -1  # the broker's default.replication.factor; REPLICATED: min(3, brokers)
    config: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.name or len(self.name) > 249:
            raise ConfigError(f"topic name {self.name!r} must be 1..249 characters")
        if self.partitions < 1:
            raise ConfigError(f"topic {self.name!r}: partitions must be >= 1, got {self.partitions}")


def ensure_topics(config: Mapping[str, Any], specs: Iterable[TopicSpec], timeout: float = 30.0) -> list[str]:
    """Create the topics that do not exist yet; return the names created. Safe to call concurrently."""
    specs = list(specs)
    if not specs:
        return []
    admin = AdminClient(client_config(config))
    metadata = admin.list_topics(timeout=timeout)
    missing = [s for s in specs if s.name not in metadata.topics]
    if not missing:
        return []
    futures = admin.create_topics(
        [NewTopic(s.name, num_partitions=s.partitions,
                  replication_factor=s.replication_factor or min(3, max(1, len(metadata.brokers))),
                  config={k: str(v) for k, v in s.config.items()}) for s in missing],
        operation_timeout=timeout, request_timeout=timeout,
    )
    created = []
    for name, future in futures.items():
        try:
            future.result()
            created.append(name)
            log.info("created topic %s", name)
        except KafkaException as exc:
            if error_code(exc) == KafkaError.TOPIC_ALREADY_EXISTS:
                continue
            raise KafkaWorkflowsError(f"could not create topic {name!r}: {describe(exc)}") from exc
    _wait_for_metadata(admin, created, timeout)
    return created


def _wait_for_metadata(admin: AdminClient, names: list[str], timeout: float) -> None:
    """create_topics returns before every partition has a leader; wait so the first produce succeeds."""
    deadline = time.monotonic() + timeout
    pending = set(names)
    while pending and time.monotonic() < deadline:
        topics = admin.list_topics(timeout=timeout).topics
        pending = {n for n in pending if n not in topics or topics[n].error is not None
                   or any(p.leader < 0 for p in topics[n].partitions.values())}
        if pending:
            time.sleep(0.1)


def listed_offset(tp: TopicPartition, future: Future[Any]) -> int:
    """The offset one ListOffsets future answered, or KafkaException(_TIMED_OUT, retriable).

    librdkafka's ListOffsets fans out one request per leader and starts every partition's result
    as offset INVALID with *no error*; when a leader's request fails (it timed out while that
    broker was down or restarting) nothing is merged and the partition comes back as "offset
    -1001, no error". Read as an end offset, that is an empty partition: the store processor once
    restored an empty state over committed requests that way. A negative answer is no answer.
    """
    offset = future.result().offset
    if offset < 0:
        raise KafkaException(KafkaError(
            KafkaError._TIMED_OUT, f"no offset for {tp.topic}[{tp.partition}]: its leader did not answer ListOffsets",
            retriable=True))
    return offset


def end_offsets(admin: AdminClient, topic: str, partitions: Iterable[int],
                isolation: IsolationLevel = IsolationLevel.READ_UNCOMMITTED, timeout: float = 30.0
                ) -> dict[int, int]:
    """High watermark (read_uncommitted) or last stable offset (read_committed) per partition."""
    request = {TopicPartition(topic, p): OffsetSpec.latest() for p in partitions}

    def ask() -> dict[int, int]:
        futures = admin.list_offsets(request, isolation_level=isolation, request_timeout=timeout)
        return {tp.partition: listed_offset(tp, future) for tp, future in futures.items()}

    return retry_leader_moves(ask, f"end offsets of {topic}", 2 * timeout,  # FENCED_LEADER_EPOCH: a broker came back
                              refresh=lambda: admin.list_topics(topic, timeout=10))


def wait_for_topics(config: Mapping[str, Any], names: Iterable[str], timeout: float = 30.0) -> dict[str, Any]:
    """Metadata of `names` once every partition has a leader (TopicMetadata by name).

    On a cluster each broker learns of a new topic on its own: a topic created a moment ago
    can be missing from the next metadata answer. Asks again until the deadline.
    """
    names = list(names)
    admin = AdminClient(client_config(config))
    deadline = time.monotonic() + timeout
    while True:
        topics = admin.list_topics(timeout=timeout).topics
        ready = {n: topics[n] for n in names if n in topics and topics[n].error is None and topics[n].partitions
                 and all(p.leader >= 0 for p in topics[n].partitions.values())}
        if len(ready) == len(names):
            return ready
        if time.monotonic() >= deadline:
            missing = sorted(set(names) - set(ready))
            raise KafkaWorkflowsError(f"topics {missing} not in the cluster's metadata after {timeout:.0f}s")
        time.sleep(0.2)
