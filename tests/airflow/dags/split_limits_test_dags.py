"""A split whose job messages may be at most 2,000 bytes, for the message size tests (dag.test())."""

from __future__ import annotations

import pendulum
from airflow.sdk import DAG

from kafka_workflows_airflow.operators import SplitToJobsOperator

with DAG("split_small_messages_test", schedule=None, start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
         catchup=False, render_template_as_native_obj=True) as split_small_messages_test:
    SplitToJobsOperator(task_id="split", source="{{ dag_run.conf['source'] }}", topic="{{ dag_run.conf['topic'] }}",
                        store="{{ dag_run.conf['store'] }}", schema="kw_examples.contacts.SCHEMA",
                        rows_per_job="{{ dag_run.conf['rows_per_job'] }}", max_message_bytes=2000)
