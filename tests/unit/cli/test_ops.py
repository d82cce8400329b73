"""Where a dead-letter replay may go, decided before anything is read or sent (issue 17). What a replay
sends, how often, and what the CLI says when workers refuse a command are proven against the broker in
tests/integration/test_operations.py."""

from __future__ import annotations

from typing import Any

import pytest

from kafka_workflows.errors import ConfigError
from kafka_workflows.ops import control
from kafka_workflows.ops import deadletters as dlq

TOPIC, GROUP = "renewals", "billing"
DLQ = f"{TOPIC}.{GROUP}.dlq"


def never_read(done: set[str]) -> list[dlq.DeadLetter]:
    raise AssertionError("a refused replay read dead letters")


@pytest.mark.parametrize("target, declared", [(control.CONTROL_TOPIC, None), (control.STATUS_TOPIC, None),
                                              (control.CONTROL_TOPIC, (control.CONTROL_TOPIC,)),
                                              ("payments", ("renewals",))])
def test_the_control_and_status_topics_and_undeclared_topics_are_refused_before_any_io(
        target: str, declared: tuple[str, ...] | None) -> None:
    """No config at all: a refusal that reached Kafka (the control history, a producer) would fail
    differently; `never_read` proves no letter was even selected."""
    config: dict[str, Any] = {}
    with pytest.raises(ConfigError, match=target):
        dlq.replay_once(config, target, GROUP, never_read, declared=declared)


@pytest.mark.parametrize("name, group, topic", [(DLQ, GROUP, TOPIC), ("a.b.c.d.dlq", "c.d", "a.b")])
def test_source_topic_of_a_dead_letter_topic(name: str, group: str, topic: str) -> None:
    assert dlq.source_topic(name, group) == topic


@pytest.mark.parametrize("name", [f"{GROUP}.dlq", f"{TOPIC}.other.dlq", TOPIC, ""])
def test_source_topic_refuses_what_is_not_the_groups_dead_letter_topic(name: str) -> None:
    with pytest.raises(ConfigError):
        dlq.source_topic(name, GROUP)
