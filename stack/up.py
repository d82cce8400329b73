"""README command 1: the whole local stack, and the example workflow once, end to end.

Starts a real Kafka broker (`--brokers 3`: a 3-node KRaft cluster on --kafka-port and the next
two ports), a schema registry (Apicurio Registry: the requests' Avro schemas), the fake payment
provider, a PostgreSQL server for Airflow's metadata (and with
`--db postgres` for the examples' tables, else they live in SQLite), `airflow standalone` (this
repo's dags/ and plugins/) and the companion worker; triggers `subscription_renewals` through the REST API;
shows the renewals the worker processed; shows the renewals group's circuit breaker open when the
fake provider fails and close when it is back, with nothing dead-lettered; triggers `checkout` (Avro end to
end through the registry); then keeps running until Ctrl-C, which stops everything in reverse order. State
lives in .state/ (git-ignored).

`--tracing` also starts Jaeger (stack/jaeger.py: built from its Go module by the set-up, in-memory)
and turns tracing on everywhere: Airflow's `[traces] otel_on` and the OTEL_* variables for Airflow
and the worker, `[kafka_workflows] trace_ui_url` so the run tab and the dead letters link to it.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path

import airflow_client.client as af
import pendulum
from airflow_client.client.api.dag_api import DAGApi
from airflow_client.client.api.dag_run_api import DagRunApi
from airflow_client.client.models.trigger_dag_run_post_body import TriggerDAGRunPostBody

from kafka_workflows.kafka.producer import RequestProducer
from kafka_workflows.ops.deadletters import list_dead_letters
from kw_examples import checkout, subscriptions
from kw_examples.db import CONN_VAR
from kw_examples.payment_provider import PaymentProvider
from stack import reaper
from stack.airflow import ADMIN, AirflowStandalone
from stack.broker import Broker
from stack.cluster import Cluster
from stack.jaeger import Jaeger
from stack.postgres import Postgres, scratch_dir
from stack.registry import SchemaRegistry
from stack.wait import wait_for

REPO = Path(__file__).resolve().parent.parent
STATE = REPO / ".state"
REGISTRY_CONN_VAR = "AIRFLOW_CONN_SCHEMA_REGISTRY_DEFAULT"
WORKFLOWS = REPO / "dags" / "workflows"
RENEWALS_TOPIC, RENEWALS_GROUP = "subscription-renewals", "renewals"


def _say(text: str) -> None:
    print(f"[kafka-workflows] {text}", flush=True)


def _port_free(port: int) -> None:
    with socket.socket() as s:
        if s.connect_ex(("127.0.0.1", port)) == 0:
            raise SystemExit(f"port {port} is already in use; stop what holds it or pick another with --*-port")


def run_example(airflow: AirflowStandalone) -> None:
    """Trigger subscription_renewals through the REST API and show what the worker renewed."""
    with af.ApiClient(af.Configuration(host=airflow.url, access_token=airflow.token())) as client:
        dags, runs = DAGApi(client), DagRunApi(client)

        def parsed() -> bool:
            try:
                return bool(dags.get_dag("subscription_renewals"))
            except af.ApiException:
                return False

        wait_for(parsed, 180, "Airflow to parse subscription_renewals", 2)
        # The example seeds its table relative to the first day a run asks for. Seed it for today,
        # or whichever of the scheduled and the manual run selects first decides how many are due.
        today = pendulum.now("UTC").date()
        subscriptions.seed(today)
        day = (today + pendulum.duration(days=10)).isoformat()
        run = runs.trigger_dag_run("subscription_renewals", TriggerDAGRunPostBody(
            logical_date=None, conf={"day": day}, note="kafka-workflows stack: example run"))
        _say(f"triggered subscription_renewals run {run.dag_run_id} through the REST API (due by {day})")

        def finished() -> str | None:
            state = str(runs.get_dag_run("subscription_renewals", run.dag_run_id).state.value)
            return state if state in ("success", "failed") else None

        state = wait_for(finished, 300, "the DAG run to finish", 2)
        if state != "success":
            raise SystemExit(f"the example DAG run ended {state}; see the task logs in the UI")
    _say("the DAG produced its requests and finished; the worker renews them (schedule and forget)")
    wait_for(lambda: subscriptions.due_subscriptions(day) == [], 120, "the worker to renew every due subscription")
    renewed = subscriptions.renewals()
    _say(f"{len(renewed)} renewals processed by the worker:")
    for r in renewed:
        print(f"    {r['user_id']:<10} period {r['period']}  charge {r['charge_id']}", flush=True)


def run_checkout(airflow: AirflowStandalone, orders: int = 10) -> None:
    """Trigger checkout (Avro end to end through the schema registry) and show what its consumers saw."""
    with af.ApiClient(af.Configuration(host=airflow.url, access_token=airflow.token())) as client:
        dags, runs = DAGApi(client), DagRunApi(client)

        def parsed() -> bool:
            try:
                return bool(dags.get_dag("checkout"))
            except af.ApiException:
                return False

        wait_for(parsed, 180, "Airflow to parse checkout", 2)
        run = runs.trigger_dag_run("checkout", TriggerDAGRunPostBody(
            logical_date=None, conf={"orders": orders}, note="kafka-workflows stack: Avro example run"))
        _say(f"triggered checkout run {run.dag_run_id}: {orders} purchases, Avro through the schema registry")

        def finished() -> str | None:
            state = str(runs.get_dag_run("checkout", run.dag_run_id).state.value)
            return state if state in ("success", "failed") else None

        if wait_for(finished, 300, "the checkout run to finish", 2) != "success":
            raise SystemExit("the checkout run failed; see its task logs in the UI")
    prefix = str(run.dag_run_id).replace(":", "-").replace("+", "-")
    for table in ("deliveries", "inventory_updates", "invoices"):
        wait_for(lambda table=table: len(checkout.recorded(table, prefix)) == orders, 120,
                 f"{table} to record every checkout")
    _say(f"checkout: {orders} Avro purchases -> exactly-once Avro checkouts -> deliveries, inventory and "
         "invoices each recorded every order once")


def breaker_state(airflow: AirflowStandalone, token: str) -> str | None:
    """The renewals group's circuit breaker as the operations UI shows it (the plugin's API)."""
    path = f"/kafka-workflows/api/workflows/subscription_renewals/groups/{RENEWALS_GROUP}"
    request = urllib.request.Request(f"{airflow.url}{path}", headers={"Authorization": f"Bearer {token}"})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            breaker = json.load(response).get("breaker")
    except (OSError, ValueError):
        return None
    return breaker.get("state") if isinstance(breaker, dict) else None


def show_breaker(airflow: AirflowStandalone, provider: PaymentProvider) -> None:
    """The circuit breaker (issue 22): the provider fails, the renewals group's breaker opens within
    seconds (no retry spent, nothing dead-lettered), the provider comes back, a probe closes it."""
    config = {"bootstrap.servers": airflow.kafka_bootstrap}
    token = airflow.token()
    before = len(list_dead_letters(config, RENEWALS_TOPIC, RENEWALS_GROUP))
    provider.failing = True
    started = time.monotonic()
    _say("breaker demo: the payment provider fails now (POST /admin/failing {\"failing\": true})")
    period = pendulum.now("UTC").date().isoformat()
    users = [f"demo-{uuid.uuid4().hex[:6]}-{n}" for n in range(6)]
    producer = RequestProducer(config)
    for user in users:
        producer.send(RENEWALS_TOPIC, {"user_id": user, "plan": "demo", "amount_cents": 990, "period": period},
                      key=user)
    producer.flush()
    producer.close()
    wait_for(lambda: breaker_state(airflow, token) == "open", 120, "the renewals group's breaker to open", 0.5)
    _say(f"the breaker of group renewals opened {time.monotonic() - started:.1f}s after the outage began; the UI "
         f"shows it open: {airflow.url}/dags/subscription_renewals/plugin/kafka (group renewals)")
    time.sleep(6)  # past one cool-down: a probe fails and the breaker opens again
    provider.failing = False
    back = time.monotonic()
    _say("the payment provider answers again (POST /admin/failing {\"failing\": false})")
    wait_for(lambda: breaker_state(airflow, token) == "closed", 120, "a probe to close the breaker", 0.5)
    _say(f"the breaker closed {time.monotonic() - back:.1f}s after the provider came back")
    wait_for(lambda: {r["user_id"] for r in subscriptions.renewals()} >= set(users), 120,
             "the held renewals to be charged")
    dead = len(list_dead_letters(config, RENEWALS_TOPIC, RENEWALS_GROUP)) - before
    _say(f"all {len(users)} renewals of the outage were renewed; {dead} dead-lettered meanwhile")
    if dead:
        raise SystemExit("the breaker demo dead-lettered renewals; see the worker log")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--kafka-port", type=int, default=int(os.environ.get("KW_KAFKA_PORT", 9092)))
    parser.add_argument("--airflow-port", type=int, default=int(os.environ.get("KW_AIRFLOW_PORT", 8080)))
    parser.add_argument("--provider-port", type=int, default=int(os.environ.get("KW_PROVIDER_PORT", 8089)))
    parser.add_argument("--brokers", type=int, choices=(1, 3), default=1,
                        help="1: one KRaft node on --kafka-port; 3: a 3-node cluster on --kafka-port, +1, +2")
    parser.add_argument("--db", choices=("sqlite", "postgres"), default="sqlite",
                        help="where the examples' tables live: an embedded SQLite file, or the stack's Postgres "
                             "(AIRFLOW_CONN_KW_EXAMPLES_DB). Airflow's metadata is on that Postgres either way.")
    parser.add_argument("--pg-port", type=int, default=int(os.environ.get("KW_PG_PORT", 5433)),
                        help="the stack's Postgres server (Airflow's metadata, and the examples' with --db postgres)")
    parser.add_argument("--registry-port", type=int, default=int(os.environ.get("KW_REGISTRY_PORT", 8081)),
                        help="the schema registry (Apicurio Registry; its Confluent-compatible API)")
    parser.add_argument("--once", action="store_true", help="stop after the example run instead of serving")
    parser.add_argument("--tracing", action="store_true",
                        help="also start Jaeger and trace Airflow and the worker to it (one trace per DAG run)")
    parser.add_argument("--jaeger-ui-port", type=int, default=int(os.environ.get("KW_JAEGER_UI_PORT", 16686)))
    parser.add_argument("--otlp-port", type=int, default=int(os.environ.get("KW_OTLP_PORT", 4317)),
                        help="Jaeger's OTLP/gRPC port (with --tracing)")
    args = parser.parse_args()
    kafka_ports = [args.kafka_port + i for i in range(args.brokers)]
    tracing_ports = (args.jaeger_ui_port, args.otlp_port, args.otlp_port + 1) if args.tracing else ()
    for port in (*kafka_ports, args.airflow_port, args.provider_port, args.pg_port, args.registry_port,
                 *tracing_ports):
        _port_free(port)

    examples_db = STATE / "examples.sqlite"
    for stale in (examples_db, Path(f"{examples_db}-wal"), Path(f"{examples_db}-shm")):
        stale.unlink(missing_ok=True)  # the demo starts from fresh subscriptions every time
    examples_env = {"KW_EXAMPLES_DB": str(examples_db)}

    stoppers: list = []
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    try:
        # Airflow's metadata on Postgres, never SQLite: on SQLite its API server deadlocks under load and a
        # REST call answers 500 (stack/airflow.py). A fresh throwaway server: the demo starts afresh.
        scratch = scratch_dir("kw-stack-postgres-")
        postgres = Postgres(scratch / "data", port=args.pg_port, log_file=STATE / "postgres.log")
        stoppers.append(lambda: (postgres.stop(), shutil.rmtree(scratch, ignore_errors=True)))
        postgres.start()
        metadata_db = postgres.create_database("airflow")
        if args.db == "postgres":
            examples_env = {CONN_VAR: postgres.url()}
        _say(f"Postgres on 127.0.0.1:{postgres.port} for Airflow's metadata"
             + (f" and the examples' tables ({CONN_VAR}={postgres.url()})" if args.db == "postgres" else "")
             + f" (log {postgres.log_file})")
        os.environ.update(examples_env)
        if args.brokers == 1:
            broker: Broker | Cluster = Broker(STATE / "kafka" / "data", port=args.kafka_port)
        else:  # its own folder: a single node's data cannot join a cluster
            broker = Cluster(STATE / "kafka" / "cluster", size=args.brokers, ports=kafka_ports)
        stoppers.append(broker.stop)
        broker.start()
        _say(f"Kafka {broker.bootstrap_servers} (KRaft, {args.brokers} node(s), logs {broker.log_file})")

        registry = SchemaRegistry(STATE / "registry" / "run", port=args.registry_port)
        stoppers.append(registry.stop)
        registry.start()
        # One connection for Airflow's tasks and the worker (it reads the same variable).
        examples_env[REGISTRY_CONN_VAR] = json.dumps({"conn_type": "http", "host": registry.url})
        _say(f"schema registry {registry.url} (Apicurio Registry, compatibility BACKWARD, log {registry.log_file})")

        provider = PaymentProvider(port=args.provider_port).start_in_thread()
        stoppers.append(provider.shutdown)
        _say(f"fake payment provider {provider.url} (POST /admin/failing {{\"failing\": true}} to break it)")

        traced: dict[str, str] = {}
        if args.tracing:
            jaeger = Jaeger(STATE / "jaeger" / "data", otlp_grpc=args.otlp_port, otlp_http=args.otlp_port + 1,
                            ui=args.jaeger_ui_port)
            stoppers.append(jaeger.stop)
            jaeger.start()
            traced = {"AIRFLOW__TRACES__OTEL_ON": "True", **jaeger.otel_env("airflow"),
                      "AIRFLOW__KAFKA_WORKFLOWS__TRACE_UI_URL": f"{jaeger.ui_url}/trace/"}
            _say(f"Jaeger UI {jaeger.ui_url} (OTLP/gRPC {jaeger.otlp_endpoint}): one trace per DAG run")

        airflow = AirflowStandalone(STATE / "airflow", args.airflow_port, broker.bootstrap_servers,
                                    metadata_db=metadata_db,
                                    extra_env={**examples_env, "PAYMENT_PROVIDER_URL": provider.url, **traced})
        _say("starting airflow standalone (first start migrates its database: about a minute)")
        airflow.start()
        stoppers.append(airflow.stop)

        worker_log = STATE / "worker.log"
        with open(worker_log, "ab") as log:
            # The worker side of every workflow spec: the same YAML files Airflow builds the DAGs from.
            worker_env = {**airflow.env(), **({"OTEL_SERVICE_NAME": "kafka-workflows-worker"} if traced else {})}
            worker = reaper.popen([sys.executable, "-m", "kafka_workflows.cli", "worker", str(WORKFLOWS)],
                                  env=worker_env, stdout=log, stderr=subprocess.STDOUT)

        def stop_worker() -> None:
            worker.send_signal(signal.SIGTERM)
            worker.wait(30)

        stoppers.append(stop_worker)
        _say(f"companion worker pid {worker.pid}: kafka-workflows worker {WORKFLOWS.relative_to(REPO)} "
             f"(log {worker_log})")

        run_example(airflow)
        show_breaker(airflow, provider)
        run_checkout(airflow)
        _say(f"Airflow UI: {airflow.url}  user: {ADMIN}  password: {airflow.password}")
        if args.tracing:
            _say(f"traces: {jaeger.ui_url} (service airflow, kafka-workflows-worker)")
        _say(f"trigger again: see README (curl with a token from {airflow.url}/auth/token)")
        if args.once:
            return 0
        _say("everything is running; Ctrl-C stops it all")
        down: list[str] = []
        while worker.poll() is None and not (down := airflow.components_down()):
            time.sleep(1)
        _say(f"{', '.join(down) if down else 'the worker'} exited; stopping the stack")
        return 1
    except KeyboardInterrupt:
        _say("stopping")
        return 0
    except TimeoutError as exc:
        _say(f"{exc}; see the logs under {STATE}")
        return 1
    finally:
        for stop in reversed(stoppers):
            try:
                stop()
            except Exception as exc:  # noqa: BLE001 - keep stopping the rest
                _say(f"while stopping: {exc}")
        _say("stopped")


if __name__ == "__main__":
    sys.exit(main())
