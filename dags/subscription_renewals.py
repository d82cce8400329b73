"""Schedule and forget (pattern 4): renew due subscriptions daily through Kafka.

The DAG only selects who is due and produces one renewal request per user, keyed by user id,
then finishes. The companion worker charges the payment provider in order per user and retries
until the provider answers:
    kafka-workflows worker --topic subscription-renewals --group renewals \
        --handler kw_examples.subscriptions.renew
"""

from __future__ import annotations

from typing import Any

import pendulum
from airflow.sdk import DAG, Param, task

from kafka_workflows_airflow.operators import ProduceRequestsOperator

with DAG(
    dag_id="subscription_renewals",
    description="Schedule and forget: one renewal request per due subscription, handled by the worker",
    schedule="@daily",
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    tags=["kafka-workflows", "schedule-and-forget"],
    params={"day": Param(None, type=["null", "string"], format="date",
                         description="Renew what is due on or before this day (default: the run's date)")},
) as dag:

    @task
    def select_due_subscriptions(**context: Any) -> list[dict]:
        from kw_examples.subscriptions import due_subscriptions

        # Runs triggered through the REST API may have no logical date in Airflow 3.
        when = context.get("logical_date") or context["dag_run"].run_after
        return due_subscriptions(context["params"]["day"] or when.date().isoformat())

    ProduceRequestsOperator(
        task_id="produce_renewal_requests",
        topic="subscription-renewals",
        requests=select_due_subscriptions(),
        key_field="user_id",
    )
