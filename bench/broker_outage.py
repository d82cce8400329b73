"""Airflow's triggerer while the broker is away: CPU and log volume, against the same with the broker up.

One `contacts_import` run on a fresh standalone (Postgres) and broker, with no worker: `split`
produces its jobs and `await` is deferred in the triggerer, whose store reader follows the store
topic. Then, for `--seconds` each, the triggerer's CPU (its process and children, from psutil) and the
growth of the stack's log files are measured with the broker up, and again after the broker is
stopped (given a few seconds to notice first). Every reconnect attempt of every client is a
librdkafka log line; kafka/client_log.py lets one of a kind through a minute, so the triggerer's
supervisor is not woken twenty times a second.

Prints `cpu_down_vs_up` (the triggerer's CPU with the broker down over its CPU with it up) and the
librdkafka lines the stack's logs got while it was down.

    .venv/bin/python bench/broker_outage.py [--seconds 30] [--smoke]
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "include"), str(REPO / "plugins")]

import airflow_client.client as af  # noqa: E402
import psutil  # noqa: E402
from airflow_client.client.api.dag_run_api import DagRunApi  # noqa: E402
from airflow_client.client.api.task_instance_api import TaskInstanceApi  # noqa: E402
from airflow_client.client.models.trigger_dag_run_post_body import TriggerDAGRunPostBody  # noqa: E402

from bench.common import add_bench_args, dag_known  # noqa: E402
from kw_examples import contacts  # noqa: E402
from stack.airflow import AirflowStandalone  # noqa: E402
from stack.broker import Broker, free_port  # noqa: E402
from stack.postgres import scratch_server  # noqa: E402
from stack.wait import wait_for  # noqa: E402

DAG_ID = "contacts_import"
SPEC = REPO / "dags" / "workflows" / "contacts_import.yaml"
LIBRDKAFKA_MARKS = ("kafka_workflows.librdkafka", "rdkafka#")


def _triggerer(standalone: AirflowStandalone) -> psutil.Process:
    """This standalone's `airflow triggerer` (other stacks may run on the machine: the suite's)."""
    assert standalone.proc is not None
    for process in psutil.Process(standalone.proc.pid).children(recursive=True):
        try:
            if "triggerer" in " ".join(process.cmdline()):
                return process
        except psutil.Error:
            continue
    raise RuntimeError("the standalone runs no airflow triggerer")


def _cpu_seconds(triggerer: psutil.Process) -> float:
    """CPU of the triggerer and its children (the trigger runner); a child that exits meanwhile is left out."""
    try:
        processes = [triggerer, *triggerer.children(recursive=True)]
    except psutil.Error:
        processes = [triggerer]
    total = 0.0
    for process in processes:
        try:
            times = process.cpu_times()
        except psutil.Error:
            continue
        total += times.user + times.system
    return total


class Logs:
    """The stack's log files (standalone's output, task and trigger logs): bytes and librdkafka lines."""

    def __init__(self, home: Path) -> None:
        self.home = home

    def snapshot(self) -> dict[Path, int]:
        return {f: f.stat().st_size for f in self.home.rglob("*.log") if f.is_file()}

    def since(self, before: dict[Path, int]) -> tuple[int, int]:
        grown, lines = 0, 0
        for path, size in self.snapshot().items():
            start = before.get(path, 0)
            if size <= start:
                continue
            grown += size - start
            with open(path, "rb") as f:
                f.seek(start)
                lines += sum(1 for line in f if any(m.encode() in line for m in LIBRDKAFKA_MARKS))
        return grown, lines


def measure(triggerer: psutil.Process, logs: Logs, seconds: float) -> dict[str, Any]:
    cpu, before = _cpu_seconds(triggerer), logs.snapshot()
    time.sleep(seconds)
    grown, lines = logs.since(before)
    return {"triggerer_cpu": round((_cpu_seconds(triggerer) - cpu) / seconds, 4),
            "log_bytes_per_s": round(grown / seconds), "librdkafka_lines": lines}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=30.0, help="each measuring window")
    add_bench_args(parser)
    args = parser.parse_args()
    if args.bootstrap:
        parser.error("--bootstrap: this bench stops its broker, so it always starts its own")
    seconds, settle = (3.0, 3.0) if args.smoke else (args.seconds, 10.0)
    work = Path(tempfile.mkdtemp(prefix="kw-bench-outage-"))
    try:
        with scratch_server("kw-bench-outage-") as postgres, Broker(work / "kafka", port=free_port()) as broker:
            home, dags = work / "airflow", work / "dags"
            (home / "imports").mkdir(parents=True)
            (dags / "workflows").mkdir(parents=True)
            shutil.copy(REPO / "dags" / "workflows.py", dags / "workflows.py")
            shutil.copy(SPEC, dags / "workflows" / SPEC.name)
            csv = contacts.write_csv(home / "imports" / "contacts.csv", 1_000)
            standalone = AirflowStandalone(home, free_port(), broker.bootstrap_servers,
                                           metadata_db=postgres.fresh_database("airflow"),
                                           extra_env={"AIRFLOW__CORE__DAGS_FOLDER": str(dags)})
            standalone.start()
            try:
                with af.ApiClient(af.Configuration(host=standalone.url, access_token=standalone.token())) as api:
                    wait_for(lambda: dag_known(api, DAG_ID), 180, f"{DAG_ID} parsed", 1)
                    run_id = DagRunApi(api).trigger_dag_run(DAG_ID, TriggerDAGRunPostBody(
                        logical_date=None, conf={"source": str(csv.path)})).dag_run_id
                    tis = TaskInstanceApi(api)
                    wait_for(lambda: str(getattr(tis.get_task_instance(DAG_ID, run_id, "await").state, "value",
                                                 "")) == "deferred", 180, "await deferred", 1)
                triggerer = _triggerer(standalone)
                logs = Logs(home)
                time.sleep(settle)
                up = measure(triggerer, logs, seconds)
                broker.stop()
                time.sleep(settle)  # every client notices and starts reconnecting
                down = measure(triggerer, logs, seconds)
            finally:
                standalone.stop()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(json.dumps({"smoke": args.smoke, "seconds": seconds, "broker_up": up, "broker_down": down,
                      "cpu_down_vs_up": round(down["triggerer_cpu"] / max(up["triggerer_cpu"], 1e-4), 2)}),
          flush=True)


if __name__ == "__main__":
    main()
