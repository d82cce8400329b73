"""Incidents and the commands a human's answer may need (issue 22): a worker publishes a key held too
long, and an error's spike, to the status topic; "pause for N minutes" ends on its own;
"non-blocking retries" moves a held message on until "blocking"."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from kafka_workflows.kafka.admin import TopicSpec, ensure_topics
from kafka_workflows.kafka.producer import RequestProducer
from kafka_workflows.ops.control import STATUS_TOPIC, send_command
from kafka_workflows.ops.deadletters import list_dead_letters
from kafka_workflows.ops.incidents import IncidentPolicy, incident_key, parse_incident
from kafka_workflows.ops.status import group_state, read_status_topic, read_statuses
from kafka_workflows.retry.policy import BlockingRetry, RetryPolicy
from kafka_workflows.worker import Worker
from tests.helpers.kafka import read_all, records, start_in_thread, stop_thread, wait_for

pytestmark = pytest.mark.integration
HANDLER = "tests.helpers.handlers.record"


@pytest.fixture
def record(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "calls.jsonl"
    monkeypatch.setenv("KW_TEST_RECORD", str(path))
    return path


def send(config: dict[str, Any], topic: str, value: dict[str, Any], key: str) -> int:
    producer = RequestProducer(config)
    producer.send(topic, value, key=key, partition=0)
    [delivered] = producer.flush()
    return delivered.offset


def outcomes(record: Path, key: str) -> list[str]:
    return [r["outcome"] for r in records(record) if r["key"] == key]


def incidents(config: dict[str, Any], group: str) -> list[Any]:
    """Every incident of `group` in the status topic, oldest first."""
    found = [parse_incident(json.loads(m.value()))[0] for m in read_all(config, STATUS_TOPIC)
             if m.key() == incident_key(group).encode() and m.value() is not None]
    return [i for i in found if i is not None]


def test_a_key_held_past_the_threshold_and_its_error_spiking_are_published_as_incidents(
        kafka_config: dict[str, Any], topic: str, group: str, record: Path, tmp_path: Path) -> None:
    ensure_topics(kafka_config, [TopicSpec(topic, partitions=1)])
    worker = Worker(kafka_config, [topic], group, HANDLER, status_interval=1.0,
                    incidents=IncidentPolicy(held_after=2, spike=3, window=60),
                    policy=RetryPolicy(blocking=BlockingRetry(intervals=[0.5])))
    thread = start_in_thread(worker)
    try:
        offset = send(kafka_config, topic, {"fail_unless_exists": str(tmp_path / "never")}, "stuck-user")

        # Both are published, in either order: the spike (3 failures, ~0.5 s apart) may come before the
        # key has been held 2 s; they share the group's incident key, so the topic's records are read.
        found = wait_for(lambda: (lambda f: f if {i.reason for i in f} == {"held", "spike"} else None)(
            incidents(kafka_config, group)), 60, "both incidents", 0.5)
        assert sorted((i.reason, i.error_type) for i in found) == [("held", "ConnectionError"),
                                                                   ("spike", "ConnectionError")], found
        incident = next(i for i in found if i.reason == "held")
        assert (incident.topic, incident.partition, incident.offset, incident.key) == (topic, 0, offset, "stuck-user")
        assert incident.held_for >= 2
        assert read_status_topic(kafka_config).get(incident_key(group)) is not None, "the latest is kept (compacted)"
        assert [s["worker"] for s in read_statuses(kafka_config) if s["group"] == group] == [worker.member], \
            "an incident is not a worker's status"
    finally:
        stop_thread(worker, thread)


def test_a_pause_for_minutes_ends_on_its_own_and_a_worker_started_meanwhile_starts_paused(
        kafka_config: dict[str, Any], topic: str, group: str, record: Path) -> None:
    ensure_topics(kafka_config, [TopicSpec(topic, partitions=1)])
    worker = Worker(kafka_config, [topic], group, HANDLER, status_interval=1.0)
    thread = start_in_thread(worker)
    try:
        _, applied = send_command(kafka_config, "pause", group, reason="provider maintenance", by="ops-bob",
                                  minutes=0.15, wait=10)  # 9 s
        assert applied and applied[0]["result"].startswith("paused 1 partition(s) for 0.15 min"), applied
        state = group_state(kafka_config, group)
        assert state.paused and state.paused_until is not None, "a worker starting now starts paused, until then"
        send(kafka_config, topic, {}, "during-pause")
        time.sleep(3)
        assert outcomes(record, "during-pause") == [], "handled while paused"
        wait_for(lambda: outcomes(record, "during-pause") == ["ok"], 60, "the pause to end on its own")
        assert not worker.operations.paused
        assert not group_state(kafka_config, group).paused, "an ended pause is not started with"
    finally:
        stop_thread(worker, thread)


def test_non_blocking_retries_move_a_held_message_on_until_switched_back(
        kafka_config: dict[str, Any], topic: str, group: str, record: Path, tmp_path: Path) -> None:
    """Blocking retries forever, no retry topics: switched to non-blocking, a failure goes to the
    dead-letter topic (for a replay later) and the partition flows; switched back, a failure holds."""
    ensure_topics(kafka_config, [TopicSpec(topic, partitions=1)])
    worker = Worker(kafka_config, [topic], group, HANDLER, status_interval=1.0,
                    policy=RetryPolicy(blocking=BlockingRetry(intervals=[3600])))
    thread = start_in_thread(worker)
    try:
        send(kafka_config, topic, {"fail_unless_exists": str(tmp_path / "never")}, "stuck")
        send(kafka_config, topic, {}, "behind")
        wait_for(lambda: worker.held, 30, "the partition to be held")
        _, applied = send_command(kafka_config, "nonblocking", group, reason="provider flaky", by="ops-bob", wait=5)
        assert applied and applied[0]["result"] == "retries non-blocking; 1 held message(s) retried now", applied
        wait_for(lambda: outcomes(record, "behind") == ["ok"], 60, "the partition to flow past the failure")
        assert [d.key for d in list_dead_letters(kafka_config, topic, group)] == ["stuck"]
        assert group_state(kafka_config, group).nonblocking, "a worker starting now starts non-blocking"

        _, applied = send_command(kafka_config, "blocking", group, by="ops-bob", wait=5)
        assert applied and applied[0]["result"] == "retries declared", applied
        send(kafka_config, topic, {"fail_unless_exists": str(tmp_path / "never")}, "held-again")
        wait_for(lambda: worker.held, 30, "a failure to hold its partition again")
        assert not group_state(kafka_config, group).nonblocking
    finally:
        stop_thread(worker, thread)
