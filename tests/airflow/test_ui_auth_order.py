"""The plugin app authenticates before any backend work: with no usable Kafka connection, an anonymous
caller of the routes that resolve the monitor gets 401, not a 500 from resolving it. In process
(FastAPI's TestClient over the plugin's app with Airflow's own auth dependencies); no broker."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from kafka_workflows_airflow.api import deps
from kafka_workflows_airflow.api.app import create_app

pytestmark = pytest.mark.airflow


@pytest.fixture
def no_kafka_connection(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.delenv("AIRFLOW_CONN_KAFKA_DEFAULT", raising=False)
    monkeypatch.setenv("AIRFLOW__KAFKA_WORKFLOWS__KAFKA_CONFIG_ID", "kw_no_such_connection")
    monkeypatch.setattr(deps, "_monitor", None)
    yield
    assert deps._monitor is None, "an anonymous call created the monitor"


@pytest.mark.parametrize("path", ["/api/workflows", "/api/health", "/api/audit", "/api/audit?limit=5",
                                  "/api/workflows/subscription_renewals"])
def test_anonymous_calls_get_401_before_the_service_is_resolved(no_kafka_connection: None, path: str) -> None:
    with TestClient(create_app(), raise_server_exceptions=False) as client:
        response = client.get(path)
    assert response.status_code == 401, (response.status_code, response.text)
    assert response.headers["content-security-policy"].startswith("default-src 'none'; script-src 'self';")
