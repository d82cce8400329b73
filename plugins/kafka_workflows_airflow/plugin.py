"""Registers kafka-workflows with Airflow: the operations API and its pages (routes live in api/).

- `fastapi_apps`: one app mounted under /kafka-workflows (API, pages, OpenAPI docs), every route
  behind Airflow's `requires_access_dag` (see api/deps.py).
- `external_views`: the "Kafka workflows" navigation page, a "Kafka" tab on every DAG, a "Kafka
  progress" tab on every DAG run, and the API docs in the Docs menu. They are server-rendered pages
  shown in iframes (same origin, so the UI's session authenticates them).
- `operator_extra_links`: "Kafka progress", "Kafka group" and "Dead letters" buttons on split, produce
  and await task instances (links.py).

Installed with pip, the plugin registers through the distribution's `airflow.plugins` entry point. In
the Astro layout Airflow also imports every file of the plugins folder (this one as module `plugin`):
that copy registers nothing when the entry point is there, so the plugin is never loaded twice (Airflow
would list the second as an import error).

The app is built only in the API server (`airflow api-server`, as Airflow's edge3 provider decides
it): the scheduler, the DAG processor, the triggerer and task workers load plugins too, and none of
them serves it. Even there, building it does no I/O; its warm readers start on the first request.
"""

from __future__ import annotations

import sys
from typing import Any

from airflow.plugins_manager import AirflowPlugin

from kafka_workflows_airflow.api import PREFIX
from kafka_workflows_airflow.links import LINKS
from kafka_workflows_airflow.links import ui_path as _path


def running_on_api_server(argv: list[str] | None = None) -> bool:
    """Whether this process is Airflow's API server (`airflow api-server`, or its module run directly)."""
    argv = sys.argv if argv is None else argv
    return (len(argv) > 1 and argv[1] == "api-server") or (
        len(argv) > 2 and argv[2].endswith("airflow/api_fastapi/main.py"))


def registered_by_entry_point() -> bool:
    """Whether an installed distribution registers this plugin through `airflow.plugins`."""
    from importlib.metadata import entry_points

    return any(ep.value.startswith(f"{ENTRY_MODULE}:") for ep in entry_points(group="airflow.plugins"))


ENTRY_MODULE = "kafka_workflows_airflow.plugin"
# This file imported by Airflow's plugins-folder scan although the entry point registers the plugin.
SHADOWED = __name__ != ENTRY_MODULE and registered_by_entry_point()


def _fastapi_apps() -> list[dict[str, Any]]:
    if SHADOWED or not running_on_api_server():
        return []
    from kafka_workflows_airflow.api.app import create_app

    return [{"app": create_app(), "url_prefix": PREFIX, "name": "kafka-workflows"}]


class KafkaWorkflowsPlugin(AirflowPlugin):
    name = "kafka_workflows"
    fastapi_apps = _fastapi_apps()
    external_views = [
        {"name": "Kafka workflows", "href": _path(f"{PREFIX}/ui/"), "destination": "nav",
         "url_route": "kafka-workflows", "nav_top_level": True},
        {"name": "Kafka", "href": _path(f"{PREFIX}/ui/workflows/{{DAG_ID}}"), "destination": "dag",
         "url_route": "kafka"},
        {"name": "Kafka progress", "href": _path(f"{PREFIX}/ui/workflows/{{DAG_ID}}/runs/{{RUN_ID}}"),
         "destination": "dag_run", "url_route": "kafka-run"},
        {"name": "Kafka workflows API", "href": _path(f"{PREFIX}/docs"), "destination": "nav",
         "category": "docs", "url_route": "kafka-workflows-api"},
    ]
    # Kafka progress, Kafka group, Dead letters on split/produce/await task instances (links.py).
    operator_extra_links = list(LINKS)


if SHADOWED:
    del KafkaWorkflowsPlugin  # the plugins folder's copy: the entry point registers the plugin
