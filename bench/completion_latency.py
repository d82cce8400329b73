"""Completion latency: from the last job's completion to the `notify` task starting, in the standalone stack.

Starts its own broker, `airflow standalone` (this repo's contacts_import DAG as shipped, plus a copy
whose await has end_from_trigger: false) and a store processor. For each
of `--requests` small imports it triggers a run through the REST API, waits until `await` is
deferred and its trigger settled, then completes every job itself with StoreClient.complete (the
bench plays the worker, so the moment the last complete command is acknowledged is known
exactly: t0) and reads notify's start_date through the REST API. Reported per variant: p50/p95
of notify.start_date - t0 (and, for the breakdown, of await's end_date - t0 and of the webhook's
arrival - t0), and the runs that failed (the resume variant can lose a race inside Airflow, see
dags/workflows/contacts_import.yaml).

Variants: `shipped` (dags/workflows/contacts_import.yaml: the triggerer ends `await` with its XCom,
end_from_trigger, and `await_assets` records its asset event beside `notify`) and `resume` (the
trigger event resumes `await` on a worker, execute_complete, which records the event itself). The
stack (stack/airflow.py) now runs the scheduler with idle sleep 0.1 s and heartbeat 1 s, so
`--tuned` (the same knobs) only matters against older stacks. Last line: one JSON object.

    .venv/bin/python bench/completion_latency.py [--requests 5] [--tuned] [--commit-interval 0.2]
        [--smoke] [--bootstrap HOST:PORT]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "include"), str(REPO / "plugins")]

import airflow_client.client as af  # noqa: E402
import yaml  # noqa: E402
from airflow_client.client.api.dag_run_api import DagRunApi  # noqa: E402
from airflow_client.client.api.task_instance_api import TaskInstanceApi  # noqa: E402
from airflow_client.client.api.x_com_api import XComApi  # noqa: E402
from airflow_client.client.models.trigger_dag_run_post_body import TriggerDAGRunPostBody  # noqa: E402

from bench.common import add_bench_args, dag_known  # noqa: E402
from kafka_workflows.store import StoreClient  # noqa: E402
from kw_examples import contacts  # noqa: E402
from stack import reaper  # noqa: E402
from stack.airflow import AirflowStandalone  # noqa: E402
from stack.broker import Broker, free_port  # noqa: E402
from stack.postgres import scratch_server  # noqa: E402
from stack.wait import wait_for  # noqa: E402
from tests.helpers.webhook import WebhookReceiver  # noqa: E402

VARIANTS = {"shipped": "contacts_import", "resume": "contacts_import_resume"}
TUNED = {"AIRFLOW__SCHEDULER__SCHEDULER_IDLE_SLEEP_TIME": "0.1", "AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC": "1"}


def _bench_dags(dags: Path) -> None:
    """The product's loader and contacts_import spec, plus a variant whose await resumes on a worker."""
    shutil.copy(REPO / "dags" / "workflows.py", dags / "workflows.py")
    (dags / "workflows").mkdir()
    text = (REPO / "dags" / "workflows" / "contacts_import.yaml").read_text()
    (dags / "workflows" / "contacts_import.yaml").write_text(text)
    resume = yaml.safe_load(text)
    resume["name"] = VARIANTS["resume"]
    next(s for s in resume["steps"] if s["id"] == "await")["await"]["end_from_trigger"] = False
    (dags / "workflows" / "contacts_import_resume.yaml").write_text(yaml.safe_dump(resume))


class RunFailed(RuntimeError):
    """A measured run did not reach `notify`."""


def _state(value: Any) -> str | None:
    return None if value is None else str(getattr(value, "value", value))


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = max(0, min(len(ordered) - 1, round(q * (len(ordered) - 1))))
    return ordered[index]


def _one(api: af.ApiClient, dag_id: str, source: str, callback: str, store: StoreClient,
         receiver: WebhookReceiver, settle: float) -> dict[str, float]:
    runs, tis = DagRunApi(api), TaskInstanceApi(api)
    run_id = runs.trigger_dag_run(dag_id, TriggerDAGRunPostBody(logical_date=None, conf={
        "source": source, "rows_per_job": 10, "callback_url": callback})).dag_run_id
    wait_for(lambda: _state(tis.get_task_instance(dag_id, run_id, "await").state) == "deferred", 120,
          f"{dag_id} await deferred", 0.1)
    split = XComApi(api).get_xcom_entry(dag_id, "split", run_id, "return_value", deserialize=True).actual_instance.value
    time.sleep(settle)  # the triggerer picks the trigger up and its reader catches up: the steady state
    before = len(receiver.accepted())
    for job in range(split["total_jobs"]):
        store.complete(split["request_id"], job)  # flushes: returns once the broker acknowledged it
    t0 = time.time()
    def notify_started() -> Any:
        ti = tis.get_task_instance(dag_id, run_id, "notify")
        if ti.start_date is None and _state(runs.get_dag_run(dag_id, run_id).state) == "failed":
            awaited = _state(tis.get_task_instance(dag_id, run_id, "await").state)
            raise RunFailed(f"{dag_id} run {run_id} failed (await {awaited})")
        return ti if ti.start_date is not None else None

    notify = wait_for(notify_started, 120, "notify to start", 0.05)
    wait_for(lambda: _state(runs.get_dag_run(dag_id, run_id).state) in ("success", "failed"), 120, "the run", 0.2)
    state = wait_for(lambda: _state(runs.get_dag_run(dag_id, run_id).state) in ("success", "failed")
                  and _state(runs.get_dag_run(dag_id, run_id).state), 120, "the run", 0.2)
    if state != "success":
        raise RuntimeError(f"{dag_id} run {run_id} ended {state}")
    awaited = tis.get_task_instance(dag_id, run_id, "await")
    hook = wait_for(lambda: receiver.accepted()[before:], 30, "the webhook")[0]

    def since(when: datetime | None) -> float:
        assert when is not None
        return when.timestamp() - t0

    return {"notify_start": since(notify.start_date), "await_end": since(awaited.end_date),
            "webhook": hook.received_at - t0}


def measure(requests: int = 5, tuned: bool = False, settle: float = 3.0, rows: int = 40,
            commit_interval: float = 1.0, variants: tuple[str, ...] = tuple(VARIANTS),
            bootstrap: str | None = None) -> dict[str, Any]:
    """Run the stack, time `requests` imports per variant; returns p50/p95 (seconds) per variant and metric."""
    work = Path(tempfile.mkdtemp(prefix="kw-latency-"))
    dags = work / "dags"
    dags.mkdir()
    _bench_dags(dags)
    stack = contextlib.ExitStack()
    if bootstrap is None:
        bootstrap = stack.enter_context(Broker(work / "kafka", port=free_port())).bootstrap_servers
    config = {"bootstrap.servers": bootstrap}
    receiver = WebhookReceiver().start_in_thread()
    # Airflow's metadata on Postgres, as in the tests and ./dev up (its API server deadlocks on SQLite under load).
    postgres = stack.enter_context(scratch_server("kw-bench-latency-"))
    home = work / "airflow"
    imports = home / "imports"  # the standalone's allowed source root; the receiver is the allowed callback
    imports.mkdir(parents=True)
    csv = contacts.write_csv(imports / "small.csv", rows)
    allowed = receiver.allow_env({"AIRFLOW__KAFKA_WORKFLOWS__ALLOWED_SOURCES": f"file://{imports}/"})
    standalone = AirflowStandalone(home, free_port(), bootstrap, metadata_db=postgres.fresh_database("airflow"),
                                   extra_env={
        "AIRFLOW__CORE__DAGS_FOLDER": str(dags), "KW_EXAMPLES_DB": str(work / "examples.sqlite"),
        "AIRFLOW_CONN_KW_WEBHOOK": json.dumps({"conn_type": "http", "password": "bench"}),
        **{k: v for k, v in allowed.items() if k.startswith("AIRFLOW__KAFKA_WORKFLOWS__")},
        **(TUNED if tuned else {})})
    processor: subprocess.Popen[bytes] | None = None
    store: StoreClient | None = None
    results: dict[str, list[dict[str, float]]] = {v: [] for v in variants}
    failures: dict[str, list[str]] = {v: [] for v in variants}
    try:
        standalone.start()
        with open(work / "store-processor.log", "wb") as log:
            processor = reaper.popen([sys.executable, "-m", "kafka_workflows.cli", "store-processor", "--store",
                                      contacts.STORE, "--commit-interval", str(commit_interval)],
                                     env=standalone.env(), stdout=log, stderr=subprocess.STDOUT)
        store = StoreClient(config, contacts.STORE)
        with af.ApiClient(af.Configuration(host=standalone.url, access_token=standalone.token())) as api:
            for dag_id in (VARIANTS[v] for v in variants):
                wait_for(lambda d=dag_id: dag_known(api, d), 180, f"{dag_id} parsed", 1)
            for n in range(requests):
                for variant in variants:  # interleaved: both see the same machine load
                    try:
                        sample = _one(api, VARIANTS[variant], str(csv.path), f"{receiver.url}/{variant}", store,
                                      receiver, settle)
                    except RunFailed as exc:
                        failures[variant].append(str(exc))
                        print(f"{variant} #{n + 1}: {exc}", file=sys.stderr, flush=True)
                        continue
                    results[variant].append(sample)
                    print(f"{variant} #{n + 1}: " + ", ".join(f"{k} {v:.2f}s" for k, v in sample.items()),
                          file=sys.stderr, flush=True)
    finally:
        if processor is not None:
            processor.terminate()
            processor.wait(30)
        if store is not None:
            store.close()
        standalone.stop()
        receiver.stop()
        stack.close()
        if all(len(results[v]) + len(failures[v]) == requests for v in variants):
            shutil.rmtree(work, ignore_errors=True)
        else:
            print(f"incomplete: logs kept in {work}", file=sys.stderr)
    summary: dict[str, Any] = {"requests": requests, "tuned": tuned, "settings": TUNED if tuned else {},
                               "store_commit_interval": commit_interval, "variants": list(variants)}
    for variant, samples in results.items():
        summary[variant] = {"failed_runs": len(failures[variant])}
        for metric in (samples[0] if samples else ()):
            values = [s[metric] for s in samples]
            summary[variant][metric] = {"p50": round(statistics.median(values), 3),
                                        "p95": round(_percentile(values, 0.95), 3)}
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=5)
    parser.add_argument("--tuned", action="store_true", help="scheduler idle sleep 0.1 s, heartbeat 1 s")
    parser.add_argument("--settle", type=float, default=3.0, help="seconds between deferral and the completions")
    parser.add_argument("--commit-interval", type=float, default=1.0,
                        help="the store processor's transaction interval (its CLI default is 1 s)")
    parser.add_argument("--variants", default=",".join(VARIANTS), help=f"comma-separated, of {', '.join(VARIANTS)}")
    add_bench_args(parser)
    args = parser.parse_args()
    variants = tuple(v.strip() for v in args.variants.split(",") if v.strip())
    if unknown := [v for v in variants if v not in VARIANTS]:
        parser.error(f"unknown variant(s) {unknown}; known: {', '.join(VARIANTS)}")
    if args.smoke:  # one import through the whole stack, the variant the DAG ships with
        args.requests, args.settle, variants = 1, 1.0, ("shipped",)
    result = measure(args.requests, args.tuned, args.settle, commit_interval=args.commit_interval,
                     variants=variants, bootstrap=args.bootstrap)
    print(json.dumps({"smoke": args.smoke, **result}), flush=True)


if __name__ == "__main__":
    main()
