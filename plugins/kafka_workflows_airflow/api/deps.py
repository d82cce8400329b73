"""What every route depends on: Airflow's authentication and authorization, and the warm monitor.

Reading needs read access to the workflow's DAG (`requires_access_dag("GET")`, the DAG id taken
from the `dag_id` path parameter); actions and replay need edit access (`"PUT"`). Routes without
a DAG need read access to DAGs in general. Anonymous callers get Airflow's 401 (a bearer token or
the UI's `_token` session cookie is accepted, as for Airflow's own API).

The `Monitor` (followers of the status, control, dead-letter and store topics, and the lag
monitor) is created on the first request and lives as long as the API server process.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Annotated

from airflow.api_fastapi.app import get_auth_manager
from airflow.api_fastapi.core_api.security import GetUserDep, requires_access_dag
from airflow.configuration import conf
from fastapi import Depends, HTTPException

from kafka_workflows.monitor.service import Monitor

READ = [Depends(requires_access_dag("GET"))]
EDIT = [Depends(requires_access_dag("PUT"))]

_monitor: Monitor | None = None
_lock = threading.Lock()


def specs_folder() -> Path:
    configured = conf.get("kafka_workflows", "specs_folder", fallback="")
    return Path(configured) if configured else Path(conf.get("core", "dags_folder")) / "workflows"


def trace_link(trace_id: str | None) -> str | None:
    """The trace UI's page of `trace_id` (`[kafka_workflows] trace_ui_url`), or None."""
    from kafka_workflows.observe.tracing import trace_link as link

    return link(conf.get("kafka_workflows", "trace_ui_url", fallback=""), trace_id)


def get_monitor(user: GetUserDep) -> Monitor:
    """The process's monitor; `user` makes every route authenticate before it is resolved."""
    global _monitor
    with _lock:
        if _monitor is None:
            from kafka_workflows_airflow.hooks import KafkaWorkflowsHook

            conn_id = conf.get("kafka_workflows", "kafka_config_id", fallback="kafka_default")
            try:
                config = KafkaWorkflowsHook(conn_id).get_kafka_config()
            except Exception as exc:  # noqa: BLE001 - AirflowNotFoundException and friends
                raise HTTPException(503, f"the Kafka connection {conn_id!r} is not usable "
                                         f"({type(exc).__name__})") from None
            _monitor = Monitor(config, specs_folder()).start()
        return _monitor


MonitorDep = Annotated[Monitor, Depends(get_monitor)]


def user_name(user: GetUserDep) -> str:
    return str(user.get_name())


UserNameDep = Annotated[str, Depends(user_name)]


def readable_workflows(user: GetUserDep, monitor: MonitorDep) -> set[str]:
    """The workflows whose DAG this user may read."""
    return set(get_auth_manager().filter_authorized_dag_ids(dag_ids=set(monitor.specs()), user=user, method="GET"))


ReadableDep = Annotated[set[str], Depends(readable_workflows)]
