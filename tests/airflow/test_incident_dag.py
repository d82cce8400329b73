"""The incident DAG a spec with `incidents:` gets (factory.py), and how its HITL task reads an incident."""

from __future__ import annotations

import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from kafka_workflows.ops.incidents import IncidentPolicy, IncidentWatch
from kafka_workflows_airflow.factory import dags_from_folder
from kafka_workflows_airflow.operators.incident import OPTIONS, IncidentError, IncidentOperator
from kafka_workflows_airflow.triggers.incidents import IncidentTrigger

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
