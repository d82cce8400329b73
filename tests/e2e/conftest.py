"""End-to-end tests share the session's `airflow standalone` (tests/helpers/standalone.py, a plugin of
tests/conftest.py) with tests/security; `receiver` here is the session receiver the stack may reach.
The chaos test gets one more standalone, on the 3-node cluster (its module only)."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from stack.airflow import AirflowStandalone
from stack.broker import free_port
from stack.cluster import Cluster
from stack.postgres import Postgres
from tests.helpers.standalone import VIEWER, WEBHOOK_SECRET, emptied
from tests.helpers.webhook import WebhookReceiver

__all__ = ["VIEWER", "WEBHOOK_SECRET"]


@pytest.fixture
def receiver(stack_receiver: WebhookReceiver) -> WebhookReceiver:
    return emptied(stack_receiver)


@pytest.fixture(scope="module")
def cluster_standalone(cluster: Cluster, stack_receiver: WebhookReceiver, postgres: Postgres,
                       tmp_path_factory: pytest.TempPathFactory) -> Iterator[AirflowStandalone]:
    home = tmp_path_factory.mktemp("standalone-cluster")
    (home / "imports").mkdir(exist_ok=True)
    allowed = stack_receiver.allow_env({"AIRFLOW__KAFKA_WORKFLOWS__ALLOWED_SOURCES": f"file://{home / 'imports'}/"})
    instance = AirflowStandalone(home, free_port(), cluster.bootstrap_servers,
                                 metadata_db=postgres.fresh_database("airflow"), extra_env={
        "KW_EXAMPLES_DB": str(home / "examples.sqlite"),
        "AIRFLOW_CONN_KW_WEBHOOK": json.dumps({"conn_type": "http", "password": WEBHOOK_SECRET}),
        **{k: v for k, v in allowed.items() if k.startswith("AIRFLOW__KAFKA_WORKFLOWS__")},
    })
    instance.start()
    yield instance
    instance.stop()
