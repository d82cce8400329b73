"""DAGs the operator tests run with dag.test(); topic and requests come from the run's conf."""

from __future__ import annotations

import pendulum
from airflow.sdk import DAG

from kafka_workflows_airflow.operators import ProduceRequestsOperator

START = pendulum.datetime(2026, 1, 1, tz="UTC")

with DAG("produce_operator_test", schedule=None, start_date=START, catchup=False,
         render_template_as_native_obj=True) as produce_dag:
    ProduceRequestsOperator(task_id="produce", topic="{{ dag_run.conf['topic'] }}",
                            requests="{{ dag_run.conf['requests'] }}", key_field="user_id",
                            workflow="renewals-test")

with DAG("produce_one_test", schedule=None, start_date=START, catchup=False) as produce_one_dag:
    ProduceRequestsOperator(task_id="produce", topic="{{ dag_run.conf['topic'] }}",
                            key="{{ dag_run.conf['user'] }}", value={"user": "{{ dag_run.conf['user'] }}"})

# Issue 19: the requests' topic has an Avro schema (as the DAG factory hands it over from a spec).
RENEWAL_AVRO = ('{"type": "record", "name": "Renewal", "namespace": "kw.test", "fields": ['
                '{"name": "user_id", "type": "string"}, {"name": "amount", "type": "long"}]}')
with DAG("produce_avro_test", schedule=None, start_date=START, catchup=False,
         render_template_as_native_obj=True) as produce_avro_dag:
    ProduceRequestsOperator(task_id="produce", topic="{{ dag_run.conf['topic'] }}",
                            requests="{{ dag_run.conf['requests'] }}", key_field="user_id",
                            value_schema={"format": "avro", "schema_str": RENEWAL_AVRO, "subject": None,
                                          "naming": "topic", "latest": False, "message": None})
