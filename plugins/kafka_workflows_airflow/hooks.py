"""The librdkafka config of an Airflow connection, through the Kafka provider's own hook."""

from __future__ import annotations

from typing import Any

from airflow.providers.apache.kafka.hooks.base import KafkaBaseHook


class KafkaWorkflowsHook(KafkaBaseHook):
    """Like the provider's hooks, but hands out the config dict so kafka_workflows builds the clients.

    The provider resolves the connection extra (and its allow-listed callbacks, MSK/Google auth);
    our core then creates idempotent or transactional producers the provider does not offer.
    """

    def _get_client(self, config: dict[str, Any]) -> dict[str, Any]:
        return config

    def get_kafka_config(self) -> dict[str, Any]:
        return dict(self.get_conn)
