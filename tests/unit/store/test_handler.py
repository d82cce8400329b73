"""StoreHandler without a broker: a command enters through parse_command once; a value that would not
fit a record of S.store ends its request `corrupt` instead of failing the transaction in a loop."""

from __future__ import annotations

import json

import pytest
from confluent_kafka import Message as KafkaMessage

from kafka_workflows.store.errors import CommandError
from kafka_workflows.store.limits import StoreLimits
from kafka_workflows.store.processor import StoreHandler


def command(body: dict, offset: int) -> KafkaMessage:
    return KafkaMessage(topic="s.commands", partition=0, offset=offset, key=body["request_id"].encode(),
                        value=json.dumps(body).encode())


def handler(**limits: int) -> StoreHandler:
    h = StoreHandler({}, "s", clock=lambda: 1000.0, limits=StoreLimits(**limits))
    h._partitions = 1  # what open() reads from the broker
    return h


def test_a_value_too_large_for_the_store_topic_ends_its_request_corrupt() -> None:
    h = handler()
    h.max_value_bytes = 2000
    h.process(command({"op": "init", "request_id": "r", "total": 1000}, 0))
    for n, job in enumerate(range(0, 1000, 2)):  # 500 ranges, then a bitmap: still small
        h.process(command({"op": "complete", "request_id": "r", "job": job}, n + 1))
    for n in range(100):
        h.process(command({"op": "fail", "request_id": "r", "job": 2 * n + 1, "reason": "x" * 400}, 600 + n))
    outputs = list(h.before_commit())
    [store] = [o for o in outputs if o.topic == "s.store"]
    [event] = [o for o in outputs if o.topic == "s.events"]
    value = json.loads(store.value or b"")
    assert value["status"] == "corrupt" and "more than the 2,000 a record of s.store may hold" in value["error"]
    assert len(store.value or b"") <= 2000 and json.loads(event.value or b"")["status"] == "corrupt"
    assert h.stats.corrupt == 1
    h.process(command({"op": "complete", "request_id": "r", "job": 999}, 900))  # ignored: terminal
    assert list(h.before_commit()) == [] and h.state[0]["r"].status == "corrupt"


@pytest.mark.parametrize("body", [
    {"op": "init", "request_id": "r", "total": 101}, {"op": "complete", "request_id": "r", "job": 100},
    {"op": "complete", "request_id": "abcde", "job": 1},
])
def test_a_command_outside_the_configured_limits_raises_for_the_dead_letter_path(body: dict) -> None:
    h = handler(max_total=100, max_request_id_bytes=4)
    with pytest.raises(CommandError):
        h.process(command(body, 0))
    assert h.state == {} and h.stats.rejected == 1 and list(h.before_commit()) == []
