"""A real Airflow metadata DB (SQLite, migrated by `airflow db migrate`) for dag.test() runs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from kw_examples.payment_provider import PaymentProvider
from stack.broker import Broker
from stack.registry import SchemaRegistry
from tests.helpers.webhook import WebhookReceiver


@pytest.fixture(scope="session")
def airflow_db() -> None:
    airflow = Path(sys.executable).parent / "airflow"
    result = subprocess.run([str(airflow), "db", "migrate"], capture_output=True, text=True, env=os.environ)
    assert result.returncode == 0, f"airflow db migrate failed:\n{result.stdout[-3000:]}{result.stderr[-3000:]}"


@pytest.fixture
def kafka_connection(broker: Broker, monkeypatch: pytest.MonkeyPatch) -> str:
    """The provider's `kafka_default` connection, from the environment, pointing at the test broker."""
    monkeypatch.setenv("AIRFLOW_CONN_KAFKA_DEFAULT", json.dumps(
        {"conn_type": "kafka", "extra": {"bootstrap.servers": broker.bootstrap_servers}}))
    return broker.bootstrap_servers


@pytest.fixture
def registry_connection(schema_registry: SchemaRegistry, monkeypatch: pytest.MonkeyPatch) -> str:
    """The schema registry's Airflow connection (`schema_registry_default`), read by tasks and workers alike."""
    monkeypatch.setenv("AIRFLOW_CONN_SCHEMA_REGISTRY_DEFAULT", json.dumps(
        {"conn_type": "http", "host": schema_registry.url}))
    return schema_registry.url


@pytest.fixture
def payment_provider(monkeypatch: pytest.MonkeyPatch) -> Iterator[PaymentProvider]:
    server = PaymentProvider().start_in_thread()
    monkeypatch.setenv("PAYMENT_PROVIDER_URL", server.url)
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture
def examples_db(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "examples.sqlite"
    monkeypatch.setenv("KW_EXAMPLES_DB", str(path))
    return path


@pytest.fixture(autouse=True)
def _allowed_sources(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Sources are allow-listed: each test may read the files it writes under its tmp_path."""
    monkeypatch.setenv("AIRFLOW__KAFKA_WORKFLOWS__ALLOWED_SOURCES", f"file://{tmp_path}/")
    for option in ("ALLOWED_CALLBACKS", "ALLOWED_NETWORKS"):
        monkeypatch.delenv(f"AIRFLOW__KAFKA_WORKFLOWS__{option}", raising=False)


@pytest.fixture
def receiver(receiver: WebhookReceiver, monkeypatch: pytest.MonkeyPatch, _allowed_sources: None) -> WebhookReceiver:
    """The loopback receiver, allowed explicitly as a source and a callback (loopback is refused by default)."""
    return receiver.allow(monkeypatch)
