"""The librdkafka config of an Airflow connection, through the Kafka provider's own hook."""

from __future__ import annotations

from typing import Any

from airflow.providers.apache.kafka.hooks.base import KafkaBaseHook

from kafka_workflows.kafka.config import resolve_settings


class KafkaWorkflowsHook(KafkaBaseHook):
    """Like the provider's hooks, but hands out the config dict so kafka_workflows builds the clients.

    The provider resolves the connection extra (and its allow-listed callbacks, MSK/Google auth);
    our core then creates idempotent or transactional producers the provider does not offer.
    """

    def _get_client(self, config: dict[str, Any]) -> dict[str, Any]:
        return config

    def get_kafka_config(self) -> dict[str, Any]:
        """The provider's config, with `{"file": path}` values read (kafka/config.py): one connection
        definition, secrets in mounted files, serves these tasks and the worker image alike."""
        return resolve_settings(dict(self.get_conn), where=f"connection {self.kafka_config_id!r}")


class SchemaRegistryHook:
    """The schema registry of an Airflow connection (default `schema_registry_default`, type http):
    host = the registry's URL (the Confluent-compatible API), login/password = basic auth, extra =
    further client settings and `auto_register` (schemas/registry.py). The worker reads the same
    connection from AIRFLOW_CONN_SCHEMA_REGISTRY_DEFAULT."""

    default_conn_name = "schema_registry_default"

    def __init__(self, conn_id: str = default_conn_name) -> None:
        self.conn_id = conn_id

    def get_settings(self) -> Any:
        from airflow.sdk import BaseHook

        from kafka_workflows.schemas.registry import from_connection

        conn = BaseHook.get_connection(self.conn_id)
        return from_connection({"conn_type": conn.conn_type, "host": conn.host, "port": conn.port,
                                "schema": conn.schema, "login": conn.login, "password": conn.password,
                                "extra": conn.extra_dejson}, f"connection {self.conn_id!r}")

    def codec(self, declared: dict[str, Any]) -> Any:
        """The codec of a declared topic schema (schemas/resolve.py), built in the task."""
        from kafka_workflows.schemas.resolve import codec

        return codec(declared, self.get_settings())
