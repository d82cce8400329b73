"""Operator extra links: a `split`, `produce` or `await` task instance links to its Kafka pages.

Three buttons on the task instance in Airflow's UI, all pages of the plugin's app (api/pages.py):

- "Kafka progress": the run's progress tab (`/kafka-workflows/ui/workflows/{dag_id}/runs/{run_id}`);
- "Kafka group": the page of the consumer group that handles the step's messages
  (`.../workflows/{dag_id}/groups/{group}`), or the workflow's page (which lists its groups) when the
  operator does not know its group;
- "Dead letters": the workflow's dead-letter explorer (`.../workflows/{dag_id}/dead-letters`).

Airflow 3 computes a link on the worker when the task finishes a try (or defers) and stores it as an
XCom (`_link_<class>`); the API server only reads that XCom, so these classes need not be importable
there (they are registered through the plugin and the provider info all the same). Links are paths
under the API server's `[api] base_url`, so they work behind a proxy that serves Airflow under a path.

The group is the operator's `kafka_group` attribute: the workflow factory sets it from the spec's
workers (the worker that consumes the step's topic; for `await`, the worker that reports to its store).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlparse

from airflow.sdk import BaseOperatorLink

from kafka_workflows_airflow.api import PREFIX

if TYPE_CHECKING:
    from airflow.models.taskinstancekey import TaskInstanceKey
    from airflow.sdk import BaseOperator


def ui_path(path: str) -> str:
    """`path` under the API server's base URL path (as Airflow's own plugins do)."""
    from airflow.configuration import conf

    base = conf.get("api", "base_url", fallback="/") or "/"
    base = urlparse(base).path if base.startswith(("http://", "https://")) else base
    return base.rstrip("/") + path


def _seg(value: Any) -> str:
    return quote(str(value), safe="")


def workflow_page(dag_id: str, *rest: str) -> str:
    return ui_path("/".join([f"{PREFIX}/ui/workflows/{_seg(dag_id)}", *rest]))


class KafkaProgressLink(BaseOperatorLink):
    """The run's Kafka progress tab."""

    name = "Kafka progress"

    def get_link(self, operator: BaseOperator, *, ti_key: TaskInstanceKey) -> str:
        return workflow_page(ti_key.dag_id, "runs", _seg(ti_key.run_id))


class KafkaGroupLink(BaseOperatorLink):
    """The page of the consumer group handling the step's messages (the workflow's page without one)."""

    name = "Kafka group"

    def get_link(self, operator: BaseOperator, *, ti_key: TaskInstanceKey) -> str:
        group = getattr(operator, "kafka_group", None)
        return workflow_page(ti_key.dag_id, "groups", _seg(group)) if group else workflow_page(ti_key.dag_id)


class DeadLettersLink(BaseOperatorLink):
    """The workflow's dead-letter explorer."""

    name = "Dead letters"

    def get_link(self, operator: BaseOperator, *, ti_key: TaskInstanceKey) -> str:
        return workflow_page(ti_key.dag_id, "dead-letters")


LINKS = (KafkaProgressLink(), KafkaGroupLink(), DeadLettersLink())
CLASSPATHS = [f"{__name__}.{type(link).__name__}" for link in LINKS]
