"""A broker that does not answer makes the plugin's API answer 503 naming librdkafka's error, never a
500: an action and a read whose Kafka call times out. In process (TestClient, auth replaced by
"allowed", the core's call raising what confluent-kafka raises on a timeout); no broker."""

from __future__ import annotations

from typing import Any

import pytest
from confluent_kafka import KafkaError, KafkaException
from fastapi.testclient import TestClient

from kafka_workflows.monitor import actions
from kafka_workflows_airflow.api import deps
from kafka_workflows_airflow.api.app import create_app

pytestmark = pytest.mark.airflow


def _timed_out(*_: Any, **__: Any) -> Any:
    raise KafkaException(KafkaError(KafkaError._TIMED_OUT, "Failed to get watermark offsets: Local: Timed out"))


@pytest.fixture
def client(monkeypatch: pytest.MonkeyPatch) -> TestClient:
    app = create_app()
    for dependency in (*deps.READ, *deps.EDIT):
        app.dependency_overrides[dependency.dependency] = lambda: None  # type: ignore[index]
    app.dependency_overrides[deps.get_monitor] = lambda: object()
    app.dependency_overrides[deps.readable_workflows] = lambda: {"wf"}
    app.dependency_overrides[deps.user_name] = lambda: "op"
    monkeypatch.setattr(actions, "act", _timed_out)
    return TestClient(app, raise_server_exceptions=False)


def test_an_action_whose_broker_call_times_out_is_503_naming_the_error(client: TestClient) -> None:
    response = client.post("/api/workflows/wf/groups/g/resume", json={"reason": "test"})
    assert response.status_code == 503, (response.status_code, response.text)
    assert response.json()["detail"].startswith("the Kafka broker did not answer: ")
    assert "Timed out" in response.json()["detail"]
