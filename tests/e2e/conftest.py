"""One `airflow standalone` for every end-to-end test of the session (starting one takes a minute).

It has two users: `admin` (role admin) and `viewer` (role viewer: reads, never acts).
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from stack.airflow import AirflowStandalone
from stack.broker import Broker, free_port

# The HMAC secret of the contacts import's webhook (the password of connection kw_webhook).
WEBHOOK_SECRET = "e2e-webhook-secret"
VIEWER = "viewer"


@pytest.fixture(scope="session")
def standalone(broker: Broker, tmp_path_factory: pytest.TempPathFactory) -> Iterator[AirflowStandalone]:
    home = tmp_path_factory.mktemp("standalone")
    db = home / "examples.sqlite"
    instance = AirflowStandalone(home, free_port(), broker.bootstrap_servers, users={VIEWER: "viewer"}, extra_env={
        "KW_EXAMPLES_DB": str(db),
        "AIRFLOW_CONN_KW_WEBHOOK": json.dumps({"conn_type": "http", "password": WEBHOOK_SECRET}),
    })
    instance.start()
    yield instance
    instance.stop()
