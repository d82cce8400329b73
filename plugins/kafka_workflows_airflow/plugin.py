"""Registers kafka-workflows with Airflow (UI pages and API come with the operations issue)."""

from __future__ import annotations

from airflow.plugins_manager import AirflowPlugin


class KafkaWorkflowsPlugin(AirflowPlugin):
    name = "kafka_workflows"
