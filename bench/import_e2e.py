"""Import end to end (P8): a messy contacts CSV through the whole stack against one plain process.

Generates a CSV of `--rows` contacts (kw_examples.contacts.write_csv: a bad email every 37th row, a
blank first name every 53rd, quoted commas, quotes and CR/LF newlines inside fields, upper-case
duplicates of the email's case), then, in the same run:

- `plain`: one Python process reads it with the same `CsvJobSource` and schema the split uses,
  in jobs of `--rows-per-job` valid rows, and upserts each job with the worker's own
  `kw_examples.contacts.upsert` (one transaction per job) into a fresh database;
- `stack`: a broker, `airflow standalone` on Postgres with this repo's dags/, and the companion
  worker for `contacts_import.yaml` as docker-compose.yml deploys it, two replicas (`--worker-processes`;
  each runs the spec's handler and the `contacts` store processor), writing to another fresh database
  of the same kind. A small warm-up import runs first (a long-running stack is warm: the broker's
  JIT compiled, the groups joined); then the bench triggers `contacts_import` through the REST API
  and takes the run's own end_date (REST trigger -> split -> workers -> await -> notify, as
  `./dev up` runs it).

Both must leave exactly the CSV's valid contacts in their database (checked, else the bench fails).
Prints `ratio = plain_s / stack_s` (>= 1.0: the stack beats the plain load) and, for the stack,
where the time went (split task, await end, notify end, counted from the trigger).

    .venv/bin/python bench/import_e2e.py [--rows 1000000] [--rows-per-job 500] [--worker-processes 2]
        [--keep] [--smoke] [--bootstrap HOST:PORT]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import shutil
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
from airflow_client.client.api.dag_run_api import DagRunApi  # noqa: E402
from airflow_client.client.api.task_instance_api import TaskInstanceApi  # noqa: E402
from airflow_client.client.models.trigger_dag_run_post_body import TriggerDAGRunPostBody  # noqa: E402

from bench.common import add_bench_args, dag_known  # noqa: E402
from kafka_workflows.sources.csv_source import CsvJobSource  # noqa: E402
from kw_examples import contacts  # noqa: E402
from stack import reaper  # noqa: E402
from stack.airflow import AirflowStandalone  # noqa: E402
from stack.broker import Broker, free_port  # noqa: E402
from stack.postgres import scratch_server  # noqa: E402
from stack.wait import wait_for  # noqa: E402

DAG_ID = "contacts_import"
WARM_UP_ROWS = 20_000
SPEC = REPO / "dags" / "workflows" / "contacts_import.yaml"


def plain_import(csv: Path, db: str | Path, rows_per_job: int) -> float:
    """The same validation and upsert, in this process, one transaction per job; seconds taken."""
    started = time.perf_counter()
    with open(csv, "rb") as stream, CsvJobSource(stream, contacts.SCHEMA, rows_per_job=rows_per_job,
                                                 on_bad_rows="skip", name=csv.name) as source:
        for job in source.jobs():
            contacts.upsert([{**{f: row.get(f) for f in contacts.FIELDS}, "request_id": "plain",
                              "job_index": job.index} for row in job.rows], db)
    return time.perf_counter() - started


def _state(value: Any) -> str | None:
    return None if value is None else str(getattr(value, "value", value))


def _since(when: datetime | None, t0: float) -> float | None:
    return None if when is None else round(when.timestamp() - t0, 2)


def _examples_db(db: str | Path) -> dict[str, str]:
    """The environment that points the workers (and the DAG's tasks) at `db` (kw_examples/db.py)."""
    return {"AIRFLOW_CONN_KW_EXAMPLES_DB": db} if isinstance(db, str) else {"KW_EXAMPLES_DB": str(db)}


def run_import(api: af.ApiClient, csv: Path, rows_per_job: int, work: Path) -> tuple[str, float]:
    """Trigger one import through the REST API and wait for its end: (run id, the run's end_date as a timestamp).

    Polled twice a second: the clock is Airflow's own end_date of the run, so the polling adds load,
    not latency, and little of either.
    """
    runs = DagRunApi(api)
    run_id = runs.trigger_dag_run(DAG_ID, TriggerDAGRunPostBody(logical_date=None, conf={
        "source": str(csv), "rows_per_job": rows_per_job})).dag_run_id
    run = wait_for(lambda: (r := runs.get_dag_run(DAG_ID, run_id)).end_date is not None and r, 3600,
                   f"the import of {csv.name}", 1.0)
    if _state(run.state) != "success":
        raise RuntimeError(f"{DAG_ID} run {run_id} ended {_state(run.state)}; logs in {work}")
    return run_id, run.end_date.timestamp()


def stack_import(work: Path, csv_rows: int, rows_per_job: int, bootstrap: str | None,
                 worker_processes: int, postgres: Any, db: str | Path) -> dict[str, Any]:
    """Trigger contacts_import on a fresh standalone stack; seconds from the trigger to the run's success."""
    stack = contextlib.ExitStack()
    try:
        if bootstrap is None:
            bootstrap = stack.enter_context(Broker(work / "kafka", port=free_port())).bootstrap_servers
        home = work / "airflow"
        imports = home / "imports"
        imports.mkdir(parents=True)
        generated = contacts.write_csv(imports / "contacts.csv", csv_rows)
        dags = work / "dags"
        (dags / "workflows").mkdir(parents=True)
        shutil.copy(REPO / "dags" / "workflows.py", dags / "workflows.py")
        shutil.copy(SPEC, dags / "workflows" / SPEC.name)
        standalone = AirflowStandalone(home, free_port(), bootstrap, metadata_db=postgres.fresh_database("airflow"),
                                       extra_env={"AIRFLOW__CORE__DAGS_FOLDER": str(dags), **_examples_db(db),
                                                  "AIRFLOW__KAFKA_WORKFLOWS__ALLOWED_SOURCES": f"file://{imports}/"})
        standalone.start()
        stack.callback(standalone.stop)
        workers = []
        for n in range(worker_processes):
            with open(work / f"worker-{n}.log", "wb") as log:
                workers.append(reaper.popen([sys.executable, "-m", "kafka_workflows.cli", "worker",
                                             str(dags / "workflows")], env=standalone.env(), stdout=log,
                                            stderr=subprocess.STDOUT))

        def stop_workers() -> None:
            for worker in workers:
                worker.terminate()
            for worker in workers:
                worker.wait(60)

        stack.callback(stop_workers)
        with af.ApiClient(af.Configuration(host=standalone.url, access_token=standalone.token())) as api:
            wait_for(lambda: dag_known(api, DAG_ID), 180, f"{DAG_ID} parsed", 1)
            # A long-running stack is warm: the broker's JIT has compiled its produce and fetch paths,
            # the workers have joined their groups and imported their handler. One small import first.
            warm = contacts.write_csv(imports / "warm-up.csv", min(WARM_UP_ROWS, csv_rows), prefix="warm-up")
            run_import(api, warm.path, rows_per_job, work)
            t0 = time.time()
            run_id, ended = run_import(api, generated.path, rows_per_job, work)
            seconds = ended - t0
            tis = TaskInstanceApi(api)
            split, awaited, notify = (tis.get_task_instance(DAG_ID, run_id, t) for t in ("split", "await", "notify"))
        imported = contacts.count(db) - len(warm.valid)
        if imported != len(generated.valid):
            raise RuntimeError(f"the stack imported {imported} contacts, the CSV has {len(generated.valid)} valid")
        return {"seconds": round(seconds, 2), "valid_rows": len(generated.valid), "bad_rows": generated.bad,
                "split_start": _since(split.start_date, t0), "split_end": _since(split.end_date, t0),
                "await_end": _since(awaited.end_date, t0), "notify_end": _since(notify.end_date, t0),
                "csv": generated.path}
    finally:
        stack.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--rows-per-job", type=int, default=500, help="contacts_import's default")
    parser.add_argument("--worker-processes", type=int, default=2,
                        help="companion worker replicas (docker-compose.yml deploys 2)")
    parser.add_argument("--db", choices=("sqlite", "postgres"), default="sqlite",
                        help="where both imports write: a SQLite file each (one writer at a time), or a database "
                             "each on the scratch Postgres server (as docker-compose.yml's workers share one)")
    parser.add_argument("--keep", action="store_true", help="keep the work folder (logs, databases) after a success")
    add_bench_args(parser)
    args = parser.parse_args()
    if args.smoke:
        args.rows = 2_000
    work = Path(tempfile.mkdtemp(prefix="kw-import-e2e-"))
    ok = False
    try:
        with scratch_server("kw-bench-import-") as postgres:  # Airflow's metadata; with --db postgres, the contacts
            stack_db, plain_db = ((postgres.fresh_database("stack"), postgres.fresh_database("plain"))
                                  if args.db == "postgres" else (work / "stack.sqlite", work / "plain.sqlite"))
            stack = stack_import(work, args.rows, args.rows_per_job, args.bootstrap, args.worker_processes,
                                 postgres, stack_db)
            plain_s = plain_import(stack.pop("csv"), plain_db, args.rows_per_job)  # the same file, read again
            if contacts.count(plain_db) != stack["valid_rows"]:
                raise RuntimeError(f"the plain import wrote {contacts.count(plain_db)} contacts, "
                                   f"expected {stack['valid_rows']}")
        ok = True
    finally:
        if ok and not args.keep:
            shutil.rmtree(work, ignore_errors=True)
        else:
            print(f"{'kept' if ok else 'failed: logs kept'} in {work}", file=sys.stderr)
    print(json.dumps({"smoke": args.smoke, "rows": args.rows, "rows_per_job": args.rows_per_job, "db": args.db,
                      "worker_processes": args.worker_processes,
                      "plain_s": round(plain_s, 2), "stack_s": stack["seconds"], "stack": stack,
                      "ratio": round(plain_s / stack["seconds"], 3)}), flush=True)


if __name__ == "__main__":
    main()
