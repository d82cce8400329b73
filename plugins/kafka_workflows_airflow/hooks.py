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
