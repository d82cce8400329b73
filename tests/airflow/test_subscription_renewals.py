"""The subscription_renewals example DAG with dag.test(), the real broker and a worker."""

from __future__ import annotations

import threading
import urllib.request
from pathlib import Path

import pendulum
import pytest

from kafka_workflows.retry.policy import BlockingRetry, RetryPolicy
from kafka_workflows.worker import Worker
from kw_examples import subscriptions
from kw_examples.payment_provider import PaymentProvider
from tests.helpers.kafka import wait_for

pytestmark = [pytest.mark.airflow, pytest.mark.integration]


def test_renewals_are_produced_by_the_dag_and_charged_once_by_the_worker(
        airflow_db: None, kafka_connection: str, payment_provider: PaymentProvider, examples_db: Path,
        group: str) -> None:
    from dags.workflows import dag_subscription_renewals as dag

    day = pendulum.datetime(2026, 11, 27, tz="UTC")
    payment_provider.failing = True  # the provider is down when the DAG runs: requests must wait
    run = dag.test(logical_date=day)
    assert run.state == "success", "the DAG finishes without waiting for the work"
    due = subscriptions.due_subscriptions(day.to_date_string())
    assert len(due) >= 5

    worker = Worker({"bootstrap.servers": kafka_connection}, ["subscription-renewals"], group,
                    "kw_examples.subscriptions.renew", policy=RetryPolicy(blocking=BlockingRetry(initial=0.2, max=0.5)))
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    try:
        wait_for(lambda: worker.stats.failed >= 3, 30, "failed attempts while the provider is down")
        assert subscriptions.renewals() == []
        payment_provider.failing = False
        wait_for(lambda: len(subscriptions.renewals()) == len(due), 60, "every due subscription renewed")
    finally:
        worker.stop()
        thread.join(30)
    renewed = subscriptions.renewals()
    assert sorted(r["user_id"] for r in renewed) == sorted(d["user_id"] for d in due)
    assert all(r["request_id"] == f"subscription_renewals.produce_renewal_requests.{run.run_id}" for r in renewed)
    with urllib.request.urlopen(f"{payment_provider.url}/charges") as response:
        import json

        charges = json.load(response)
    assert len(charges) == len(due), "one charge per renewal, even with redeliveries"
    assert subscriptions.due_subscriptions(day.to_date_string()) == []
