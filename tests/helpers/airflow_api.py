"""Calls to Airflow's REST API that the end-to-end tests share.

`trigger` exists because of an Airflow API server deadlock on SQLite (the standalone stack's
metadata database). Its audit log (`airflow.api_fastapi.logging.decorators.action_logging`) is an
`async def` dependency that commits a *sync* session on the event loop. When a sync request's
transaction holds SQLite's write lock, that request's commit runs in its dependency teardown, which
needs the event loop, while the event loop sits in SQLite's busy wait on the audit log insert. Neither
moves until the busy timeout (5 s) fails the insert: the trigger answers 500 "Database error" and
nothing was created. A longer busy timeout only makes the whole API server stall for longer (tried:
60 s stalls, then the same 500). Postgres, as docker-compose uses, has no database-wide write lock.
"""

from __future__ import annotations

import time
import uuid

import airflow_client.client as af
from airflow_client.client.api.dag_run_api import DagRunApi
from airflow_client.client.models.dag_run_response import DAGRunResponse
from airflow_client.client.models.trigger_dag_run_post_body import TriggerDAGRunPostBody


def trigger(runs: DagRunApi, dag_id: str, body: TriggerDAGRunPostBody, attempts: int = 10) -> DAGRunResponse:
    """Trigger one run, retrying a 5xx. The run id is fixed up front, so a retry can never make a
    second run: a 409 after a failed attempt means that attempt did create it."""
    if body.dag_run_id is None:
        body.dag_run_id = f"manual__test_{uuid.uuid4().hex[:12]}"
    failed_before = False
    for attempt in range(attempts):
        try:
            return runs.trigger_dag_run(dag_id, body)
        except af.ApiException as exc:
            status = exc.status or 0
            if status == 409 and failed_before:
                return runs.get_dag_run(dag_id, body.dag_run_id)
            if status < 500 or attempt == attempts - 1:
                raise
            failed_before = True
            time.sleep(3)
    raise AssertionError("unreachable")
