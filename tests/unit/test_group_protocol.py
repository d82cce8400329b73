"""The group protocol workers and processors join with: one choice, and a user's own config wins."""

from __future__ import annotations

import pytest
from confluent_kafka import Consumer

from kafka_workflows.errors import ConfigError
from kafka_workflows.kafka.group_protocol import chosen_protocol, group_protocol_settings, is_incremental


def test_default_is_kip_848_with_nothing_the_broker_owns() -> None:
    settings = group_protocol_settings({"bootstrap.servers": "x:9092"}, environ={})
    assert settings == {"group.protocol": "consumer", "group.remote.assignor": "range"}
    assert is_incremental(settings)


def test_classic_is_cooperative_with_a_short_session() -> None:
    settings = group_protocol_settings({}, environ={"KW_GROUP_PROTOCOL": "classic"})
    assert settings["partition.assignment.strategy"] == "cooperative-sticky"
    assert settings["session.timeout.ms"] <= 6000  # Kafka's default group.min.session.timeout.ms allows it
    assert is_incremental(settings)


def test_a_users_own_settings_win() -> None:
    # A classic-only key (say, in KAFKA_CONFIG) selects classic, so the consumer can still be created.
    assert chosen_protocol({"session.timeout.ms": 10_000}, environ={}) == "classic"
    assert "session.timeout.ms" not in group_protocol_settings({"session.timeout.ms": 10_000}, environ={})
    assert chosen_protocol({"group.protocol": "classic"}, environ={"KW_GROUP_PROTOCOL": "consumer"}) == "classic"
    assert not is_incremental({"group.protocol": "classic", "partition.assignment.strategy": "range"})


def test_an_unknown_protocol_is_refused_naming_where_it_came_from() -> None:
    with pytest.raises(ConfigError, match="KW_GROUP_PROTOCOL"):
        group_protocol_settings({}, environ={"KW_GROUP_PROTOCOL": "eager"})


@pytest.mark.parametrize("protocol", ["consumer", "classic"])
def test_librdkafka_accepts_the_settings(protocol: str) -> None:
    settings = group_protocol_settings({}, environ={"KW_GROUP_PROTOCOL": protocol})
    Consumer({"bootstrap.servers": "127.0.0.1:1", "group.id": "g", **settings}).close()
