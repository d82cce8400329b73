"""DAGs the contacts import tests run with dag.test(); each run brings its own topic and store in its conf."""

from __future__ import annotations

import pendulum
from airflow.sdk import DAG

from dags.contacts_import import contacts_import_dag
from kafka_workflows_airflow.operators import SplitToJobsOperator
from kafka_workflows_airflow.sensors import AwaitCompletionSensor

START = pendulum.datetime(2026, 1, 1, tz="UTC")

# The product DAG, with the jobs topic and the store of each test.
contacts_import_test = contacts_import_dag("contacts_import_test", jobs_topic="{{ dag_run.conf['topic'] }}",
                                           store="{{ dag_run.conf['store'] }}", timeout=180)

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
