"""Issue 20, end to end: one DAG run is one trace in a real trace backend (Jaeger, stack/jaeger.py).

The session's standalone runs with Airflow's `[traces] otel_on` and the OTEL_* variables naming the
session's Jaeger (tests/helpers/standalone.py); the worker and the store processor get the same
standard variables. A small contacts import (4 jobs) is triggered through the REST API; then the
trace is read back from Jaeger's query API by the trace id the webhook's `traceparent` header
carries, and it holds: Airflow's task spans (split, await, notify), the split's `send` span, the
handler span of every job, the store's command spans, the `await` span and the `notify` and webhook
`POST` spans. The run tab's API shows the same trace id, linked to the trace UI.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import airflow_client.client as af
import pytest
import requests
from airflow_client.client.api.dag_run_api import DagRunApi
from airflow_client.client.models.trigger_dag_run_post_body import TriggerDAGRunPostBody

from kw_examples import contacts
from stack.airflow import AirflowStandalone
from stack.jaeger import Jaeger
from tests.e2e.test_contacts_import import DAG_ID, Processes, _state, api, processes  # noqa: F401 - fixtures
from tests.helpers.kafka import wait_for
from tests.helpers.webhook import WebhookReceiver

pytestmark = [pytest.mark.airflow, pytest.mark.integration]


def _names(trace: dict[str, Any]) -> list[str]:
    return [span["operationName"] for span in trace["spans"]]


def _tags(span: dict[str, Any]) -> dict[str, Any]:
    return {tag["key"]: tag["value"] for tag in span.get("tags", [])}


def _jobs(span: dict[str, Any]) -> list[int]:
    """The job indexes a handler span covered (Jaeger shows an array attribute as JSON text)."""
    value = _tags(span).get("kw.job_indexes")
    if isinstance(value, str):
        value = json.loads(value)
    return list(value or [])


def test_an_import_is_one_trace_from_the_split_through_every_job_and_the_store_to_the_webhook(
        standalone: AirflowStandalone, jaeger: Jaeger, api: af.ApiClient, processes: Processes,  # noqa: F811
        receiver: WebhookReceiver, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KW_EXAMPLES_DB", standalone.extra_env["KW_EXAMPLES_DB"])  # type: ignore[index]
    generated = contacts.write_csv(tmp_path / "contacts-traced.csv", 40, bad_every=0, missing_every=0)
    source = receiver.serve_file(generated.path)
    processes.env = {**processes.env, "OTEL_SERVICE_NAME": "kafka-workflows-store"}
    processes.start("store-processor", "store-processor", "--store", contacts.STORE)
    processes.env = {**processes.env, "OTEL_SERVICE_NAME": "kafka-workflows-worker"}
    processes.start("worker", "worker", "--topic", contacts.JOBS_TOPIC, "--group", contacts.WORKER_GROUP,
                    "--handler", "kw_examples.contacts.import_jobs", "--store", contacts.STORE)

    runs = DagRunApi(api)
    run_id = runs.trigger_dag_run(DAG_ID, TriggerDAGRunPostBody(logical_date=None, conf={
        "source": source, "rows_per_job": 10, "callback_url": f"{receiver.url}/traced"})).dag_run_id

    def finished() -> str | None:
        processes.check_alive()
        state = _state(runs.get_dag_run(DAG_ID, run_id).state)
        return state if state in ("success", "failed") else None

    assert wait_for(finished, 300, "the traced run to finish", 1, alive=standalone.ensure_running) == "success"
    [delivery] = receiver.accepted("/traced")
    traceparent = delivery.header("traceparent")
    assert traceparent is not None and traceparent.startswith("00-"), delivery.headers
    trace_id = traceparent[3:35]

    expected = {"send contacts-import-jobs", "process contacts-import-jobs", "init contacts", "complete contacts",
                "await contacts", "notify kafka_workflows_airflow.notifiers.WebhookNotifier", "POST"}

    def whole() -> dict[str, Any] | None:
        trace = jaeger.trace(trace_id)
        names = set(_names(trace)) if trace else set()
        jobs = {i for span in (trace or {}).get("spans", []) if span["operationName"].startswith("process ")
                for i in _jobs(span)}
        return trace if expected <= names and len(jobs) == 4 and names >= {"worker.split", "worker.notify"} else None

    try:
        trace = wait_for(whole, 90, "the whole trace in Jaeger", 1)
    except TimeoutError:
        found = jaeger.trace(trace_id)
        process = [_tags(span) for span in (found or {}).get("spans", [])
                   if span["operationName"].startswith("process")]
        pytest.fail(f"trace {trace_id} in Jaeger holds {sorted(set(_names(found))) if found else 'nothing'}; "
                    f"handler spans {process}")
    spans = trace["spans"]
    assert {span["traceID"] for span in spans} == {trace_id}, "one trace"
    services = {trace["processes"][span["processID"]]["serviceName"] for span in spans}
    assert {"airflow", "kafka-workflows-worker", "kafka-workflows-store"} <= services
    by_name = {span["operationName"]: span for span in spans}
    send, split_task = by_name["send contacts-import-jobs"], by_name["worker.split"]
    assert {"refType": "CHILD_OF", "traceID": trace_id, "spanID": split_task["spanID"]} in send["references"]
    assert sum(1 for name in _names(trace) if name == "complete contacts") == 4
    process = [span for span in spans if span["operationName"] == "process contacts-import-jobs"]
    assert all(_tags(span)["messaging.system"] == "kafka" for span in process)
    assert {_tags(by_name["POST"])["http.response.status_code"]} == {200}

    # The run tab shows the trace, linked to the trace UI ([kafka_workflows] trace_ui_url).
    token = standalone.token()

    def run_tab() -> dict[str, Any] | None:  # the API server's warm store reader catches up first
        answer = requests.get(f"{standalone.url}/kafka-workflows/api/workflows/{DAG_ID}/runs/{run_id}",
                              headers={"Authorization": f"Bearer {token}"}, timeout=30)
        assert answer.status_code == 200, answer.text
        [request] = answer.json()["requests"]
        return request if request["status"] == "succeeded" else None

    request = wait_for(run_tab, 60, "the run tab to show the finished request", 1)
    assert (request["trace_id"], request["trace_url"]) == (trace_id, f"{jaeger.ui_url}/trace/{trace_id}")
