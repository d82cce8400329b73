"""Topic names of a store named `S` (DESIGN.md contract) and their creation.

`S.commands` (keyed by request id), `S.store` (compacted, same partition count as S.commands),
`S.events` (one completion event per request). The store processor's group is
`S.store-processor` unless told otherwise.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from confluent_kafka.admin import AdminClient, ConfigResource

from kafka_workflows.errors import ConfigError
from kafka_workflows.kafka.admin import REPLICATED, TopicSpec, ensure_topics, wait_for_topics
from kafka_workflows.kafka.config import client_config
from kafka_workflows.kafka.leader_moves import retry_leader_moves
from kafka_workflows.store.errors import StoreError


def commands_topic(name: str) -> str:
    return f"{name}.commands"


def store_topic(name: str) -> str:
    return f"{name}.store"


def events_topic(name: str) -> str:
    return f"{name}.events"


def default_group(name: str) -> str:
    """The store processor's consumer group unless told otherwise."""
    return f"{name}.store-processor"


def check_name(name: str) -> None:
    if not name or any(c not in "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-" for c in name):
        raise ConfigError(f"store name {name!r} must be non-empty and use only letters, digits, '.', '_' and '-'")


def ensure_store_topics(config: Mapping[str, Any], name: str, partitions: int = 3,
                        timeout: float = 30.0) -> list[str]:
    """Create S.commands, S.store (compacted) and S.events if missing; check existing ones fit together."""
    check_name(name)
    created = ensure_topics(config, [
        TopicSpec(commands_topic(name), partitions, REPLICATED),
        TopicSpec(store_topic(name), partitions, REPLICATED, config={"cleanup.policy": "compact"}),
        TopicSpec(events_topic(name), partitions, REPLICATED),
    ], timeout=timeout)
    admin = AdminClient(client_config(config))
    topics = wait_for_topics(config, [commands_topic(name), store_topic(name)], timeout)  # reach every broker late
    n_commands = len(topics[commands_topic(name)].partitions)
    n_store = len(topics[store_topic(name)].partitions)
    if n_commands != n_store:
        raise StoreError(f"store {name!r}: {store_topic(name)} has {n_store} partitions but "
                         f"{commands_topic(name)} has {n_commands}; they must be equal")
    resource = ConfigResource(ConfigResource.Type.TOPIC, store_topic(name))
    # DescribeConfigs goes to any broker; on a cluster the one asked may not know the new topic yet.
    policy = retry_leader_moves(
        lambda: admin.describe_configs([resource])[resource].result(timeout)["cleanup.policy"].value,
        f"the configs of {store_topic(name)}", timeout)
    if "compact" not in (policy or ""):
        raise StoreError(f"store {name!r}: {store_topic(name)} has cleanup.policy={policy!r}; it must be compact")
    return created
