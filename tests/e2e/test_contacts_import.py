"""End to end: the contacts import through airflow standalone and its REST API (official client).

A 100,500-row CSV (500 bad rows) becomes 200 jobs of 500 rows; two `kafka-workflows worker --store
contacts` processes import them while `await` is deferred; one `kafka-workflows store-processor`
counts the completions; then `notify` posts exactly one signed webhook.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import airflow_client.client as af
import pytest
from airflow_client.client.api.dag_api import DAGApi
from airflow_client.client.api.dag_run_api import DagRunApi
from airflow_client.client.api.task_instance_api import TaskInstanceApi
from airflow_client.client.api.x_com_api import XComApi
from airflow_client.client.models.trigger_dag_run_post_body import TriggerDAGRunPostBody

from kw_examples import contacts
from stack import reaper
from stack.airflow import AirflowStandalone
from tests.e2e.conftest import WEBHOOK_SECRET
from tests.helpers.kafka import wait_for
from tests.helpers.webhook import WebhookReceiver

pytestmark = [pytest.mark.airflow, pytest.mark.integration]
DAG_ID = "contacts_import"


class Processes:
    """CLI processes of the test, stopped with SIGTERM (and their logs shown if they fail)."""

    def __init__(self, env: dict[str, str], logs: Path) -> None:
        self.env, self.logs = env, logs
        self.procs: list[tuple[subprocess.Popen[bytes], Path]] = []

    def start(self, name: str, *args: str) -> subprocess.Popen[bytes]:
        log = self.logs / f"{name}.log"
        with open(log, "wb") as out:
            proc = reaper.popen([sys.executable, "-m", "kafka_workflows.cli", *args], env=self.env,
                                stdout=out, stderr=subprocess.STDOUT)
        self.procs.append((proc, log))
        return proc

    def check_alive(self) -> None:
        for proc, log in self.procs:
            assert proc.poll() is None, f"{log.name} exited {proc.returncode}:\n{log.read_text()[-3000:]}"

    def stop(self) -> None:
        for proc, _ in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc, log in self.procs:
            try:
                code = proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
                code = proc.wait()
            assert code == 0, f"{log.name} exited {code}:\n{log.read_text()[-3000:]}"


@pytest.fixture
def processes(standalone: AirflowStandalone, tmp_path: Path) -> Iterator[Processes]:
    running = Processes(standalone.env(), tmp_path)
    yield running
    running.stop()


@pytest.fixture
def api(standalone: AirflowStandalone) -> Iterator[af.ApiClient]:
    with af.ApiClient(af.Configuration(host=standalone.url, access_token=standalone.token())) as client:
        wait_for(lambda: _dag_known(DAGApi(client)), 180, "the DAG processor to parse contacts_import", 2)
        yield client


def _dag_known(dags: DAGApi) -> bool:
    try:
        return dags.get_dag(DAG_ID).dag_id == DAG_ID
    except af.ApiException:
        return False


def _state(value: Any) -> str | None:
    return None if value is None else str(getattr(value, "value", value))


def test_a_100k_row_csv_is_imported_by_two_workers_while_await_is_deferred_then_notified_once(
        standalone: AirflowStandalone, api: af.ApiClient, processes: Processes, receiver: WebhookReceiver,
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KW_EXAMPLES_DB", standalone.extra_env["KW_EXAMPLES_DB"])  # type: ignore[index]
    generated = contacts.write_csv(tmp_path / "contacts-100k.csv", 100_500, bad_every=201, missing_every=0)
    assert (len(generated.valid), generated.bad) == (100_000, 500)
    source = receiver.serve_file(generated.path)
    processes.start("store-processor", "store-processor", "--store", contacts.STORE)

    runs, tis = DagRunApi(api), TaskInstanceApi(api)
    run = runs.trigger_dag_run(DAG_ID, TriggerDAGRunPostBody(logical_date=None, conf={
        "source": source, "rows_per_job": 500, "callback_url": f"{receiver.url}/contacts-imported"}))
    run_id = run.dag_run_id

    def await_state() -> str | None:
        try:
            return _state(tis.get_task_instance(DAG_ID, run_id, "await").state)
        except af.exceptions.NotFoundException:  # a busy scheduler has not created the task instances yet
            return None

    def deferred() -> bool:
        assert _state(runs.get_dag_run(DAG_ID, run_id).state) != "failed", "the run failed before await deferred"
        return await_state() == "deferred"

    wait_for(deferred, 300, "the await task to be deferred", 1, alive=standalone.ensure_running)
    assert contacts.count() == 0 and receiver.accepted() == []
    split = XComApi(api).get_xcom_entry(DAG_ID, "split", run_id, "return_value", deserialize=True).actual_instance.value
    assert (split["total_jobs"], split["rows"], split["valid_rows"], split["bad_rows"]) == (200, 100_500, 100_000, 500)

    # The work starts only now, so the deferral provably spans it.
    for n in (1, 2):
        processes.start(f"worker-{n}", "worker", "--topic", contacts.JOBS_TOPIC, "--group", contacts.WORKER_GROUP,
                        "--handler", "kw_examples.contacts.import_jobs", "--store", contacts.STORE)
    seen: list[tuple[str | None, int]] = []
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        processes.check_alive()
        seen.append((await_state(), contacts.count()))
        if _state(runs.get_dag_run(DAG_ID, run_id).state) in ("success", "failed"):
            break
        time.sleep(0.5)
    final = _state(runs.get_dag_run(DAG_ID, run_id).state)
    assert final == "success", f"DAG run ended {final}; observed (await state, contacts) {seen[-10:]}"
    assert any(state == "deferred" and 0 < count < 100_000 for state, count in seen), \
        f"await was deferred while the workers imported: {seen[:: max(1, len(seen) // 20)]}"

    notify, awaited = (tis.get_task_instance(DAG_ID, run_id, t) for t in ("notify", "await"))
    assert _state(notify.state) == "success" and notify.start_date >= awaited.end_date
    time.sleep(2)  # a second delivery would show now
    [delivery] = receiver.accepted("/contacts-imported")
    assert delivery.signed_with(WEBHOOK_SECRET), delivery.headers
    body = delivery.json
    request_id = f"{DAG_ID}.split.{run_id}"
    assert {k: body[k] for k in ("request_id", "status", "total", "completed", "failed", "failed_jobs", "rows",
                                 "valid_rows", "bad_rows")} == {
        "request_id": request_id, "status": "succeeded", "total": 200, "completed": 200, "failed": 0,
        "failed_jobs": [], "rows": 100_500, "valid_rows": 100_000, "bad_rows": 500}

    imported = {c["email"]: {k: c[k] for k in contacts.FIELDS} for c in contacts.contacts()}
    assert len(imported) == 100_000 and imported == generated.valid


def test_a_trigger_without_source_is_refused_by_the_rest_api(api: af.ApiClient) -> None:
    with pytest.raises(af.ApiException) as info:
        DagRunApi(api).trigger_dag_run(DAG_ID, TriggerDAGRunPostBody(logical_date=None, conf={"rows_per_job": 10}))
    assert info.value.status == 400 and "source" in str(info.value.body)
