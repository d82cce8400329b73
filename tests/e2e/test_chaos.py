"""Chaos end to end: a contacts import through the REST API on a 3-node cluster, while everything breaks.

During a 1,000-job import (airflow standalone on the cluster; two importer processes, one store
processor, `await` deferred in the triggerer): SIGKILL and restart the leader broker of the jobs
topic, then of the store's commands topic; SIGKILL importers 5 times and the store processor 3
times (each restarted at once); SIGKILL and restart the importers' Postgres; restart the
triggerer while `await` is deferred, and the scheduler. At the end: the run succeeded,
completed == total exactly, one completion event, one signed webhook, no transaction left open
on the store and events topics, and the contacts table equals the CSV's valid rows. The importers
share a real Postgres, named as in docker-compose by the Airflow connection URI
AIRFLOW_CONN_KW_EXAMPLES_DB. Modelled on Kafka's transactions and streams EOS system tests.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import airflow_client.client as af
import psutil
import pytest
from airflow_client.client.api.dag_api import DAGApi
from airflow_client.client.api.dag_run_api import DagRunApi
from airflow_client.client.api.task_instance_api import TaskInstanceApi
from airflow_client.client.models.trigger_dag_run_post_body import TriggerDAGRunPostBody
from confluent_kafka import IsolationLevel
from confluent_kafka.admin import AdminClient

from kafka_workflows.kafka.admin import end_offsets
from kafka_workflows.store import commands_topic, events_topic, store_topic
from kw_examples import contacts
from kw_examples.db import CONN_VAR
from stack import reaper
from stack.airflow import AirflowStandalone
from stack.cluster import Cluster
from stack.postgres import Postgres
from tests.e2e.conftest import WEBHOOK_SECRET
from tests.helpers.kafka import read_all, wait_for
from tests.helpers.webhook import WebhookReceiver

pytestmark = [pytest.mark.airflow, pytest.mark.integration]
DAG_ID = "contacts_import"


# Airflow's triggerer gives its trigger runner 10 s after SIGINT before it escalates; room for a loaded machine.
GRACEFUL_EXIT = 60.0


def _cmdline(process: psutil.Process) -> list[str]:
    """Its command line; none for one that has exited (a component restarted before is a zombie
    until standalone reaps it)."""
    try:
        return process.cmdline()
    except psutil.Error:
        return []


def _exited(process: psutil.Process) -> bool:
    try:
        return process.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


class Chaos:
    """The test's own processes (CLI units and replaced Airflow components), killed and restarted at will."""

    def __init__(self, standalone: AirflowStandalone, logs: Path) -> None:
        self.standalone, self.logs = standalone, logs
        self.env = standalone.env()
        self.units: dict[str, tuple[list[str], subprocess.Popen[bytes]]] = {}
        self.components: list[subprocess.Popen[bytes]] = []

    def start(self, name: str, *args: str) -> None:
        with open(self.logs / f"{name}.log", "ab") as out:
            proc = reaper.popen([sys.executable, "-m", "kafka_workflows.cli", *args], env=self.env,
                                stdout=out, stderr=subprocess.STDOUT)
        self.units[name] = (list(args), proc)

    def sigkill(self, name: str) -> None:
        args, proc = self.units[name]
        assert proc.poll() is None, f"{name} had exited {proc.returncode}: {self.tail(name)}"
        proc.kill()
        proc.wait(10)
        self.start(name, *args)

    def tail(self, name: str) -> str:
        return (self.logs / f"{name}.log").read_text(errors="replace")[-3000:]

    def restart_component(self, component: str) -> float:
        """Stop standalone's `airflow <component>` with SIGTERM, wait until it has exited, and run a fresh
        one in its place. Returns the seconds it took to exit; one that does not exit within
        `GRACEFUL_EXIT` fails the test (a graceful restart, not a kill)."""
        assert self.standalone.proc is not None
        mine = [psutil.Process(p.pid) for p in self.components if p.poll() is None]
        for candidate in [*psutil.Process(self.standalone.proc.pid).children(), *mine]:
            if _cmdline(candidate)[-1:] == [component]:
                tree = [candidate, *candidate.children(recursive=True)]
                started = time.monotonic()
                candidate.terminate()
                # A zombie has exited: its parent (standalone) reaps it when it gets round to it.
                wait_for(lambda tree=tree: all(_exited(p) for p in tree), GRACEFUL_EXIT,
                         f"airflow {component} to exit after SIGTERM", 0.2)
                took = time.monotonic() - started
                replaced = {name for p in mine for name in _cmdline(p)[-1:]}  # ours, not standalone's children
                assert set(self.standalone.components_down()) == replaced | {component}, "it names the exited one"
                break
        else:
            raise AssertionError(f"no running airflow {component} to restart")
        airflow = str(Path(sys.executable).parent / "airflow")
        with open(self.logs / f"airflow-{component}.log", "ab") as out:
            self.components.append(reaper.popen([airflow, component], env=self.env, stdout=out,
                                                stderr=subprocess.STDOUT))
        return took

    def stop(self) -> None:
        procs = [proc for _, proc in self.units.values()] + self.components
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@pytest.fixture
def chaos(cluster_standalone: AirflowStandalone, tmp_path: Path) -> Iterator[Chaos]:
    running = Chaos(cluster_standalone, tmp_path)
    yield running
    running.stop()


def _state(value: object) -> str | None:
    return None if value is None else str(getattr(value, "value", value))


def test_an_import_survives_broker_worker_processor_triggerer_and_scheduler_crashes(
        cluster: Cluster, cluster_standalone: AirflowStandalone, chaos: Chaos, receiver: WebhookReceiver,
        own_postgres: Postgres, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    importers_postgres = own_postgres  # SIGKILLed mid-import: a server of the test's own
    examples_postgres = importers_postgres.url()
    monkeypatch.setenv(CONN_VAR, examples_postgres)  # this test reads the table the importers share
    chaos.env[CONN_VAR] = examples_postgres
    config = {"bootstrap.servers": cluster.bootstrap_servers}
    cluster.wait_in_sync()
    generated = contacts.write_csv(tmp_path / "contacts.csv", 20_100, bad_every=201, missing_every=0)
    valid = len(generated.valid)
    source = receiver.serve_file(generated.path)
    chaos.start("store-processor", "store-processor", "--store", contacts.STORE, "--commit-interval", "0.5")
    with af.ApiClient(af.Configuration(host=cluster_standalone.url, access_token=cluster_standalone.token())) as api:
        wait_for(lambda: _dag_known(DAGApi(api)), 180, "the DAG processor to parse contacts_import", 2)
        runs, tis = DagRunApi(api), TaskInstanceApi(api)
        run_id = runs.trigger_dag_run(DAG_ID, TriggerDAGRunPostBody(logical_date=None, conf={
            "source": source, "rows_per_job": 20, "callback_url": f"{receiver.url}/imported"})).dag_run_id

        def await_state() -> str | None:
            return _state(tis.get_task_instance(DAG_ID, run_id, "await").state)

        def deferred() -> bool:
            assert _state(runs.get_dag_run(DAG_ID, run_id).state) != "failed", "the run failed before await"
            return await_state() == "deferred"

        wait_for(deferred, 300, "await to be deferred", 1)
        importer = ("worker", "--topic", contacts.JOBS_TOPIC, "--group", contacts.WORKER_GROUP,
                    "--handler", "tests.helpers.contacts.import_slowly", "--store", contacts.STORE,
                    "--batch-size", "20")
        for n in (1, 2):
            chaos.start(f"importer-{n}", *importer)
        wait_for(lambda: contacts.count() > 0, 120, "the importers to start")

        def say(step: str) -> None:
            print(f"{time.strftime('%X')} {step} ({contacts.count()}/{valid} contacts)", flush=True)

        def mid_import(step: str) -> None:
            assert contacts.count() < valid, f"the import finished before: {step}"
            say(step)

        def bounce_leader(topic: str) -> None:
            victim = cluster.leader(topic, 0)
            mid_import(f"SIGKILL broker {victim.node_id}, leader of {topic}[0]")
            victim.kill()
            time.sleep(3)
            cluster.restart(victim.node_id)

        bounce_leader(contacts.JOBS_TOPIC)
        for step in ("importer-1", "store-processor", "importer-2"):
            mid_import(f"SIGKILL {step}")
            chaos.sigkill(step)
            time.sleep(2)
        mid_import("SIGKILL the importers' Postgres")
        importers_postgres.kill()  # every connection of both importers' pools dies; their batches fail and are retried
        time.sleep(2)
        importers_postgres.start()
        bounce_leader(commands_topic(contacts.STORE))
        mid_import("restart the triggerer while await is deferred")
        assert await_state() == "deferred"
        took = chaos.restart_component("triggerer")
        say(f"the triggerer exited {took:.1f} s after SIGTERM and started again")
        for step in ("importer-1", "store-processor", "importer-2", "importer-1", "store-processor"):
            mid_import(f"SIGKILL {step}")
            chaos.sigkill(step)
            time.sleep(2)
        mid_import("restart the scheduler")
        took = chaos.restart_component("scheduler")
        say(f"the scheduler exited {took:.1f} s after SIGTERM and started again")

        def finished() -> str | None:
            for name in chaos.units:
                assert chaos.units[name][1].poll() is None, f"{name} exited: {chaos.tail(name)}"
            state = _state(runs.get_dag_run(DAG_ID, run_id).state)
            return state if state in ("success", "failed") else None

        final = wait_for(finished, 300, "the DAG run to finish", 2)
        assert final == "success", f"the run ended {final}"
    time.sleep(2)  # a second webhook would show now
    [delivery] = receiver.accepted("/imported")
    assert delivery.signed_with(WEBHOOK_SECRET)
    body = delivery.json
    assert (body["status"], body["total"], body["completed"], body["failed"]) == ("succeeded", 1000, 1000, 0)
    assert (body["valid_rows"], body["bad_rows"]) == (valid, generated.bad)
    request_id = f"{DAG_ID}.split.{run_id}"
    events = [m for m in read_all(config, events_topic(contacts.STORE)) if m.key().decode() == request_id]
    assert len(events) == 1, "one completion event"
    admin = AdminClient(config)
    for topic in (store_topic(contacts.STORE), events_topic(contacts.STORE)):
        wait_for(lambda t=topic: end_offsets(admin, t, range(3), IsolationLevel.READ_COMMITTED)
                 == end_offsets(admin, t, range(3)), 30, f"last stable offset == high watermark on {topic}")
    imported = {c["email"]: {k: c[k] for k in contacts.FIELDS} for c in contacts.contacts()}
    assert imported == generated.valid


def _dag_known(dags: DAGApi) -> bool:
    try:
        return dags.get_dag(DAG_ID).dag_id == DAG_ID
    except af.ApiException:
        return False
