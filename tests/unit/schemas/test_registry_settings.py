"""The schema registry as a connection: the same settings from an Airflow connection and the environment."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from kafka_workflows.errors import ConfigError
from kafka_workflows.schemas.codec import subject_for
from kafka_workflows.schemas.registry import from_connection, settings_from_env


def test_a_connection_gives_the_url_basic_auth_client_settings_and_auto_register() -> None:
    settings = from_connection({"conn_type": "http", "host": "registry", "port": 8081, "schema": "apis/ccompat/v7",
                                "login": "svc", "password": "pw",
                                "extra": {"auto_register": "false", "ssl.ca.location": "/ca.pem"}}, "conn")
    assert settings.url == "http://registry:8081/apis/ccompat/v7"
    assert settings.client == {"basic.auth.user.info": "svc:pw", "ssl.ca.location": "/ca.pem"}
    assert settings.auto_register is False


def test_the_registry_client_never_waits_forever_unless_the_connection_says_so() -> None:
    from confluent_kafka.schema_registry import SchemaRegistryClient

    settings = from_connection({"conn_type": "http", "host": "registry:8081"}, "conn")
    assert SchemaRegistryClient(settings.client_config())._rest_client.timeout == 30.0  # its default: None, forever
    longer = from_connection({"conn_type": "http", "host": "registry:8081", "extra": {"timeout": 120}}, "conn")
    assert SchemaRegistryClient(longer.client_config())._rest_client.timeout == 120


def test_the_worker_reads_the_same_connection_as_json_or_uri_and_secrets_from_files(tmp_path: Path) -> None:
    secret = tmp_path / "pw"
    secret.write_text("s3cret\n")
    as_json = settings_from_env({"AIRFLOW_CONN_SCHEMA_REGISTRY_DEFAULT": json.dumps(
        {"conn_type": "http", "host": "https://r.example/apis/ccompat/v7",
         "extra": {"basic.auth.user.info": {"file": str(secret)}}})})
    assert as_json is not None and as_json.url == "https://r.example/apis/ccompat/v7"
    assert as_json.client == {"basic.auth.user.info": "s3cret"} and as_json.auto_register
    as_uri = settings_from_env({"AIRFLOW_CONN_SCHEMA_REGISTRY_DEFAULT":
                                "http://svc:p%40ss@r:8081/apis/ccompat/v7?auto_register=false"})
    assert as_uri is not None and as_uri.url == "http://r:8081/apis/ccompat/v7"
    assert as_uri.client == {"basic.auth.user.info": "svc:p@ss"} and not as_uri.auto_register
    assert settings_from_env({"SCHEMA_REGISTRY_URL": "http://x:1/"}).url == "http://x:1"  # type: ignore[union-attr]
    assert settings_from_env({}) is None


def test_errors_name_the_variable_never_the_value() -> None:
    with pytest.raises(ConfigError, match="AIRFLOW_CONN_SCHEMA_REGISTRY_DEFAULT is not valid JSON") as info:
        settings_from_env({"AIRFLOW_CONN_SCHEMA_REGISTRY_DEFAULT": '{"host": "http://r", "password": "hunter2"'})
    assert "hunter2" not in str(info.value)
    with pytest.raises(ConfigError, match="SCHEMA_REGISTRY_CONN_ID=other: AIRFLOW_CONN_OTHER is not set"):
        settings_from_env({"SCHEMA_REGISTRY_CONN_ID": "other"})
    with pytest.raises(ConfigError, match="auto_register must be true or false"):
        from_connection({"host": "http://r", "extra": {"auto_register": "maybe"}}, "conn")


def test_subject_naming_strategies() -> None:
    assert subject_for("orders", "topic", "kw.Order", None) == "orders-value"
    assert subject_for("orders", "record", "kw.Order", None) == "kw.Order"
    assert subject_for("orders", "topic_record", "kw.Order", None) == "orders-kw.Order"
    assert subject_for("orders", "record", "kw.Order", "explicit") == "explicit"
    with pytest.raises(ConfigError, match="needs a record name"):
        subject_for("orders", "record", None, None)
