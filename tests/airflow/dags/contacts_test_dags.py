"""DAGs the contacts import tests run with dag.test(); each run brings its own topic and store in its conf."""

from __future__ import annotations

from pathlib import Path

import pendulum
import yaml
from airflow.sdk import DAG

from kafka_workflows.spec import parse_spec
from kafka_workflows_airflow.factory import build_dag
from kafka_workflows_airflow.operators import SplitToJobsOperator
from kafka_workflows_airflow.sensors import AwaitCompletionSensor

START = pendulum.datetime(2026, 1, 1, tz="UTC")
SPEC = Path(__file__).resolve().parents[3] / "dags" / "workflows" / "contacts_import.yaml"


def _product_spec_with_test_names() -> DAG:
    """The product's contacts_import spec, on the jobs topic and store each test run names."""
    doc = yaml.safe_load(SPEC.read_text())
    doc["name"] = "contacts_import_test"
    steps = {step["id"]: step for step in doc["steps"]}
    steps["split"]["split"].update(topic="{{ dag_run.conf['topic'] }}", store="{{ dag_run.conf['store'] }}")
    steps["await"]["await"]["timeout"] = 180
    return build_dag(parse_spec(yaml.safe_dump(doc), str(SPEC)), file=str(SPEC))


contacts_import_test = _product_spec_with_test_names()

# The split alone, where nothing declares `source` as a required param.
with DAG("split_only_test", schedule=None, start_date=START, catchup=False,
         render_template_as_native_obj=True) as split_only_test:
    SplitToJobsOperator(task_id="split", source="{{ dag_run.conf.get('source') }}",
                        topic="{{ dag_run.conf['topic'] }}", store="{{ dag_run.conf['store'] }}",
                        schema="kw_examples.contacts.SCHEMA", rows_per_job=2)

# The await alone, with a short timeout.
with DAG("await_only_test", schedule=None, start_date=START, catchup=False) as await_only_test:
    AwaitCompletionSensor(task_id="await", request_id="{{ dag_run.conf['request_id'] }}",
                          store="{{ dag_run.conf['store'] }}", timeout=6)
