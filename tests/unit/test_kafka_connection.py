"""The worker reads the Kafka provider's connection (JSON or URI), files for secrets, allow-listed callbacks."""

from __future__ import annotations

import json
from pathlib import Path
from urllib.parse import quote

import pytest

from kafka_workflows.errors import ConfigError
from kafka_workflows.kafka.config import kafka_config_from_env

EXTRA = {"bootstrap.servers": "broker:9093", "security.protocol": "SASL_SSL", "sasl.mechanism": "PLAIN"}


def test_the_connection_in_json_or_uri_form_is_the_base_and_the_old_variables_still_win() -> None:
    as_json = {"AIRFLOW_CONN_KAFKA_DEFAULT": json.dumps({"conn_type": "kafka", "extra": EXTRA})}
    as_uri = {"AIRFLOW_CONN_KAFKA_DEFAULT": f"kafka://?__extra__={quote(json.dumps(EXTRA))}"}
    as_query = {"AIRFLOW_CONN_KAFKA_DEFAULT": "kafka://?bootstrap.servers=broker%3A9093&security.protocol=SASL_SSL"
                                              "&sasl.mechanism=PLAIN"}
    for env in (as_json, as_uri, as_query):
        assert kafka_config_from_env(env) == EXTRA
    assert kafka_config_from_env({**as_json, "KAFKA_BOOTSTRAP_SERVERS": "other:1",
                                  "KAFKA_CONFIG": '{"sasl.mechanism": "SCRAM-SHA-512"}'}) == {
        **EXTRA, "bootstrap.servers": "other:1", "sasl.mechanism": "SCRAM-SHA-512"}
    other = {"KAFKA_CONN_ID": "kafka_prod", "AIRFLOW_CONN_KAFKA_PROD": json.dumps({"extra": json.dumps(EXTRA)})}
    assert kafka_config_from_env(other) == EXTRA
    with pytest.raises(ConfigError, match="AIRFLOW_CONN_KAFKA_NOPE is not set"):
        kafka_config_from_env({"KAFKA_CONN_ID": "kafka_nope"})
    assert kafka_config_from_env({}) == {"bootstrap.servers": "localhost:9092"}


def test_a_secret_comes_from_a_file_and_errors_never_show_values(tmp_path: Path) -> None:
    secret = tmp_path / "password"
    secret.write_text("s3cr3t\n")
    extra = {**EXTRA, "sasl.username": "svc", "sasl.password": {"file": str(secret)}}
    env = {"AIRFLOW_CONN_KAFKA_DEFAULT": json.dumps({"conn_type": "kafka", "extra": extra})}
    assert kafka_config_from_env(env)["sasl.password"] == "s3cr3t"
    extra["sasl.password"] = {"file": str(tmp_path / "missing")}
    with pytest.raises(ConfigError, match=r"sasl\.password: cannot read .*missing"):
        kafka_config_from_env({"AIRFLOW_CONN_KAFKA_DEFAULT": json.dumps({"extra": extra})})
    with pytest.raises(ConfigError, match="not valid JSON") as info:
        kafka_config_from_env({"AIRFLOW_CONN_KAFKA_DEFAULT": '{"extra": {"sasl.password": "s3cr3t"'})
    assert "s3cr3t" not in str(info.value)


def test_a_callback_by_dotted_path_is_imported_only_when_allow_listed() -> None:
    extra = {**EXTRA, "oauth_cb": "tests.helpers.oauth.unsecured_jwt"}
    env = {"AIRFLOW_CONN_KAFKA_DEFAULT": json.dumps({"extra": extra})}
    with pytest.raises(ConfigError, match="not in the callback allow-list"):
        kafka_config_from_env(env)
    from tests.helpers.oauth import unsecured_jwt

    for variable in ("AIRFLOW__APACHE_KAFKA__CALLBACK_ALLOWLIST", "KAFKA_CALLBACK_ALLOWLIST"):
        config = kafka_config_from_env({**env, variable: "x.y, tests.helpers.oauth.unsecured_jwt"})
        assert config["oauth_cb"] is unsecured_jwt
