"""End to end: airflow standalone + the real broker + a worker process; triggered through the REST API.

Uses the official apache-airflow-client with a token from /auth/token, as a user's script would.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import airflow_client.client as af
import pendulum
import pytest
from airflow_client.client.api.dag_api import DAGApi
from airflow_client.client.api.dag_run_api import DagRunApi
from airflow_client.client.api.x_com_api import XComApi
from airflow_client.client.models.trigger_dag_run_post_body import TriggerDAGRunPostBody

from kw_examples import subscriptions
from kw_examples.payment_provider import PaymentProvider
from stack import reaper
from stack.airflow import AirflowStandalone
from stack.broker import Broker
from tests.helpers.kafka import wait_for

pytestmark = [pytest.mark.airflow, pytest.mark.integration]


def test_trigger_through_rest_api_and_the_worker_handles_the_requests(
        standalone: AirflowStandalone, broker: Broker, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    db = Path(standalone.extra_env["KW_EXAMPLES_DB"])  # type: ignore[index]
    monkeypatch.setenv("KW_EXAMPLES_DB", str(db))
    provider = PaymentProvider().start_in_thread()
    worker_log = tmp_path / "worker.log"
    with open(worker_log, "wb") as log:
        worker = reaper.popen(
            [sys.executable, "-m", "kafka_workflows.cli", "worker", "--topic", "subscription-renewals",
             "--group", "renewals-e2e", "--handler", "kw_examples.subscriptions.renew"],
            env={**standalone.env(), "PAYMENT_PROVIDER_URL": provider.url}, stdout=log, stderr=subprocess.STDOUT)
    try:
        config = af.Configuration(host=standalone.url, access_token=standalone.token())
        with af.ApiClient(config) as client:
            dags, runs = DAGApi(client), DagRunApi(client)
            wait_for(lambda: _dag_known(dags), 120, "the DAG processor to parse subscription_renewals", 2)
            # Unpausing also schedules today's run; this one renews what is due within 10 days, so
            # it always finds work whichever of the two selects first. The example seeds its table
            # relative to the first day a run asks for: seed it for today first, or the manual run,
            # seeding 10 days ahead, would put half the subscriptions out of both runs' reach.
            today = pendulum.now("UTC").date()
            subscriptions.seed(today, db)
            later = (today + pendulum.duration(days=10)).isoformat()
            run = runs.trigger_dag_run("subscription_renewals", TriggerDAGRunPostBody(
                logical_date=None, conf={"day": later}, note="end-to-end test"))
            state = wait_for(lambda: _finished(runs, run.dag_run_id), 180, "the DAG run to finish", 2,
                           alive=standalone.ensure_running)
            assert state == "success", f"DAG run ended {state}"
            entry = XComApi(client).get_xcom_entry("subscription_renewals", "produce_renewal_requests",
                                                   run.dag_run_id, "return_value", deserialize=True)
            produced = entry.actual_instance.value
        assert produced["count"] >= subscriptions.SEED_USERS // 2
        everyone = subscriptions.SEED_USERS
        # The topic is the spec's, shared with the session's other tests: the worker's new group also
        # reads their older requests (other periods, other databases' subscriptions). What this test
        # owns is a renewal, and one charge, of each of its own subscriptions for their period.
        periods = {(s["user_id"], s["period"]) for s in subscriptions.all_subscriptions()}

        def renewed_ours() -> list[dict[str, Any]]:
            return [r for r in subscriptions.renewals() if (r["user_id"], r["period"]) in periods]

        wait_for(lambda: len(renewed_ours()) == everyone, 60, "the worker to renew every subscription")
        time.sleep(2)  # a late duplicate would show now
        assert len(periods) == everyone and subscriptions.due_subscriptions(later) == []
        ours = [r for r in renewed_ours() if r["request_id"] == produced["request_id"]]
        assert produced["request_id"] == f"subscription_renewals.produce_renewal_requests.{run.dag_run_id}"
        assert len(ours) >= 1
        keys = [c["idempotency_key"] for c in provider.charges.values()]
        assert sorted(k for k in keys if tuple(k.split(":")[1:]) in periods) == sorted(
            f"renewal:{user}:{period}" for user, period in periods), "each subscription charged exactly once"
    finally:
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(30) == 0, worker_log.read_text()[-2000:]
        provider.shutdown()


def _dag_known(dags: DAGApi) -> bool:
    try:
        return dags.get_dag("subscription_renewals").dag_id == "subscription_renewals"
    except af.ApiException:
        return False


def _finished(runs: DagRunApi, run_id: str) -> str | None:
    state = str(runs.get_dag_run("subscription_renewals", run_id).state.value)
    return state if state in ("success", "failed") else None


def test_rest_api_rejects_an_unknown_dag(standalone: AirflowStandalone) -> None:
    config = af.Configuration(host=standalone.url, access_token=standalone.token())
    with af.ApiClient(config) as client, pytest.raises(af.ApiException) as info:
        DagRunApi(client).trigger_dag_run("no_such_dag", TriggerDAGRunPostBody(logical_date=None))
    assert info.value.status == 404 and "no_such_dag" in json.dumps(info.value.body)
