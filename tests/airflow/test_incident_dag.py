"""The incident DAG a spec with `incidents:` gets (factory.py), and how its HITL task reads an incident."""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from kafka_workflows.kafka.admin import TopicSpec, ensure_topics
from kafka_workflows.kafka.producer import RequestProducer
from kafka_workflows.ops.control import control_history
from kafka_workflows.ops.deadletters import list_dead_letters
from kafka_workflows.ops.incidents import IncidentPolicy, IncidentWatch, parse_incident
from kafka_workflows.retry.policy import BlockingRetry, RetryPolicy
from kafka_workflows.worker import Worker
from kafka_workflows_airflow.factory import dags_from_folder
from kafka_workflows_airflow.operators.incident import (
    CANARY,
    NONBLOCKING,
    OPTIONS,
    PAUSE,
    IncidentError,
    IncidentOperator,
)
from kafka_workflows_airflow.triggers.incidents import IncidentTrigger
from tests.helpers.kafka import records, start_in_thread, stop_thread, wait_for

pytestmark = pytest.mark.airflow
WORKFLOWS = Path(__file__).resolve().parents[2] / "dags" / "workflows"


def incident(key: str = "user-1", group: str = "renewals") -> dict[str, Any]:
    hold = {"kind": "blocked", "topic": "subscription-renewals", "partition": 2, "offset": 41, "key": key,
            "failures": 3, "error": "PaymentFailed: charging user-1 failed", "since": time.time() - 400}
    [found] = IncidentWatch(IncidentPolicy(held_after=300), group, "w1").check([hold])
    return found


def test_a_spec_with_incidents_gets_an_incident_dag_started_by_an_asset_watcher_on_its_groups() -> None:
    dags = dags_from_folder(WORKFLOWS)
    dag = dags["dag_subscription_renewals_incident"]
    [asset] = dag.timetable.asset_condition.objects
    [watcher] = asset.watchers
    assert isinstance(watcher.trigger, IncidentTrigger) and watcher.trigger.groups == ["renewals"]
    [task] = dag.tasks
    assert isinstance(task, IncidentOperator) and task.options == OPTIONS and task.groups == {
        "renewals": ["subscription-renewals"]}
    assert task.notifiers, "the question is notified"
    assert "dag_checkout_incident" not in dags, "a spec without incidents: gets none"


def test_the_task_reads_its_incident_from_the_asset_event_or_the_conf_and_only_of_its_groups() -> None:
    task = IncidentOperator(task_id="decide", workflow="w", groups={"renewals": ["subscription-renewals"]})
    event = SimpleNamespace(extra={"from_trigger": True, "payload": {"incident": incident()}})
    from_event = task.incident({"triggering_asset_events": {"asset": [event]}})  # type: ignore[typeddict-item]
    assert (from_event.key, from_event.offset) == ("user-1", 41)
    from_conf = task.incident({"dag_run": SimpleNamespace(conf={"incident": incident("user-2")})})  # type: ignore[typeddict-item]
    assert from_conf.key == "user-2"
    with pytest.raises(IncidentError, match="no incident"):
        task.incident({"dag_run": SimpleNamespace(conf={})})  # type: ignore[typeddict-item]
    with pytest.raises(IncidentError, match="a group this workflow does not declare"):
        task.incident({"dag_run": SimpleNamespace(conf={"incident": incident(group="payroll")})})  # type: ignore[typeddict-item]
    with pytest.raises(IncidentError, match="wrong shape"):
        task.incident({"dag_run": SimpleNamespace(conf={"incident": {**incident(), "offset": "41"}})})  # type: ignore[typeddict-item]


def test_the_question_shows_untrusted_values_only_as_code_they_cannot_break_out_of() -> None:
    task = IncidentOperator(task_id="decide", workflow="w", groups={"renewals": ["subscription-renewals"]})
    evil = task.incident({"dag_run": SimpleNamespace(conf={"incident": incident(
        "x`` [click](https://evil.example)\n# heading")})})  # type: ignore[typeddict-item]
    body = task.question(evil)
    line = next(line for line in body.splitlines() if line.startswith("- key:"))
    assert line == "- key: `` x   [click](https://evil.example) # heading ``"


@pytest.mark.integration
def test_the_other_answers_are_carried_out_through_the_control_topic_with_the_user_who_chose_them(
        kafka_connection: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Non-blocking retries, a canary replay of the fingerprint and a pause for N minutes, as the task
    carries them out after an answer (the browser test answers "Unblock now" in Airflow's UI)."""
    config = {"bootstrap.servers": kafka_connection}
    monkeypatch.setenv("KW_TEST_RECORD", str(tmp_path / "calls.jsonl"))
    topic, group, flag = f"t-{uuid.uuid4().hex[:8]}", f"g-{uuid.uuid4().hex[:8]}", tmp_path / "provider-back"
    ensure_topics(config, [TopicSpec(topic, partitions=1)])
    worker = Worker(config, [topic], group, "tests.helpers.handlers.record", status_interval=1.0,
                    policy=RetryPolicy(blocking=BlockingRetry(intervals=[3600])))
    thread = start_in_thread(worker)
    try:
        producer = RequestProducer(config)
        producer.send(topic, {"fail_unless_exists": str(flag)}, key="k1")
        producer.flush()
        wait_for(lambda: worker.held, 30, "the key to be held")
        [raw] = IncidentWatch(IncidentPolicy(held_after=0.001), group, worker.member).check(worker.held.describe())
        found, _ = parse_incident(raw)
        assert found is not None
        task = IncidentOperator(task_id="decide", workflow="w", groups={group: [topic]}, canary=1)

        done = task.carry_out(NONBLOCKING, found, "alice", "provider flaky", {})
        assert done["results"] == ["retries non-blocking; 1 held message(s) retried now"], done
        wait_for(lambda: [d.key for d in list_dead_letters(config, topic, group)] == ["k1"], 60,
                 "the held key to move on to the dead-letter topic")

        flag.touch()
        done = task.carry_out(CANARY, found, "alice", "provider back", {})
        [canary] = done["canaries"]
        assert (canary["state"], canary["sent"], canary["failed"], canary["by"]) == ("done", 1, 0, "alice"), canary
        wait_for(lambda: "ok" in [r["outcome"] for r in records(tmp_path / "calls.jsonl") if r["key"] == "k1"], 60,
                 "the replayed letter to be handled")

        done = task.carry_out(PAUSE, found, "alice", "maintenance", {"minutes": 10})
        assert done["results"][0].startswith("paused 1 partition(s) for 10 min"), done
        assert worker.operations.paused and worker.operations.paused_until is not None
    finally:
        stop_thread(worker, thread)
    commands = [c for c in control_history(config, ("command",)) if c.get("group") == group]
    assert [(c["op"], c["by"], c["reason"]) for c in commands] == [
        ("nonblocking", "alice", "provider flaky"), ("pause", "alice", "maintenance")], commands
    assert [c["by"] for c in control_history(config, ("canary",)) if c.get("group") == group] == ["alice"]


@pytest.mark.integration
def test_an_answer_no_worker_takes_up_fails_after_the_operators_own_wait_naming_the_command(
        kafka_connection: str) -> None:
    """The task waits `answer_wait` for the workers' answers (120 s by default: a rebalancing group answers
    late, and a failed task would ask the human again), here 2 s for a group with no worker at all."""
    group = f"g-{uuid.uuid4().hex[:8]}"
    found, _ = parse_incident(incident(group=group))
    assert found is not None
    task = IncidentOperator(task_id="decide", workflow="w", groups={group: ["subscription-renewals"]}, answer_wait=2)
    assert IncidentOperator(task_id="d", workflow="w", groups={group: []}).answer_wait == 120
    started = time.monotonic()
    with pytest.raises(IncidentError, match=f"no worker of group {group} answered pause") as raised:
        task.carry_out(PAUSE, found, "alice", "maintenance", {"minutes": 5})
    assert 2 <= time.monotonic() - started < 30, "the operator's wait, not send_command's 30 s default"
    [command] = [c for c in control_history({"bootstrap.servers": kafka_connection}, ("command",))
                 if c.get("group") == group]
    assert command["id"] in str(raised.value) and (command["op"], command["by"]) == ("pause", "alice")
