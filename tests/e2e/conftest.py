"""One `airflow standalone` for every end-to-end test of the session (starting one takes a minute),
and one on the 3-node cluster for the chaos test (its module only)."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from stack.airflow import AirflowStandalone
from stack.broker import Broker, free_port
from stack.cluster import Cluster

# The HMAC secret of the contacts import's webhook (the password of connection kw_webhook).
WEBHOOK_SECRET = "e2e-webhook-secret"


@pytest.fixture(scope="session")
def standalone(broker: Broker, tmp_path_factory: pytest.TempPathFactory) -> Iterator[AirflowStandalone]:
    home = tmp_path_factory.mktemp("standalone")
    db = home / "examples.sqlite"
    instance = AirflowStandalone(home, free_port(), broker.bootstrap_servers, extra_env={
        "KW_EXAMPLES_DB": str(db),
        "AIRFLOW_CONN_KW_WEBHOOK": json.dumps({"conn_type": "http", "password": WEBHOOK_SECRET}),
    })
    instance.start()
    yield instance
    instance.stop()


@pytest.fixture(scope="module")
def cluster_standalone(cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[AirflowStandalone]:
    home = tmp_path_factory.mktemp("standalone-cluster")
    instance = AirflowStandalone(home, free_port(), cluster.bootstrap_servers, extra_env={
        "KW_EXAMPLES_DB": str(home / "examples.sqlite"),
        "AIRFLOW_CONN_KW_WEBHOOK": json.dumps({"conn_type": "http", "password": WEBHOOK_SECRET}),
    })
    instance.start()
    yield instance
    instance.stop()
