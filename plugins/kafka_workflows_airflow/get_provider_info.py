"""What Airflow's ProvidersManager reads through the `apache_airflow_provider` entry point.

It lists the operators, sensors, triggers, notifiers and hook this distribution adds, the connection
type it uses (the Kafka provider's `kafka`: one connection serves both), and the `[kafka_workflows]`
config section, so `airflow config list` shows every option with its default and description. The
plugin (UI app, pages) registers through the `airflow.plugins` entry point (plugin.py).
"""

from __future__ import annotations

from typing import Any


def _option(description: str, example: str | None, default: str | None, *, sensitive: bool = False) -> dict[str, Any]:
    return {"description": description, "version_added": "0.1.0", "type": "string", "example": example,
            "default": default, **({"sensitive": True} if sensitive else {})}


CONFIG: dict[str, Any] = {
    "kafka_workflows": {
        "description": "kafka-workflows: what a run's conf may reach, where the operations UI reads from, and "
                       "how operator commands are signed.",
        "options": {
            "allowed_sources": _option(
                "Roots a split step may read CSV sources from (file://, s3://, https:// and the other schemes of "
                "Airflow's ObjectStoragePath), separated by commas, spaces or lines. A run's conf names a source; "
                "anything outside these roots (and the step's own allowed_sources) is refused. Empty: none.",
                "file:///data/imports/, s3://imports/", ""),
            "allowed_callbacks": _option(
                "URL prefixes a webhook notification may be posted to (a run's callback_url must start with one). "
                "Empty: none.", "https://hooks.example.com/imports/", ""),
            "allowed_networks": _option(
                "Private or loopback networks a source or callback may resolve to; public addresses are always "
                "allowed, every other address is refused (SSRF). Empty: public addresses only.",
                "10.20.0.0/16, 127.0.0.1/32", ""),
            "specs_folder": _option(
                "Folder of workflow specs (YAML) the operations UI and its API read. Empty: <dags_folder>/workflows.",
                "/opt/airflow/dags/workflows", ""),
            "kafka_config_id": _option(
                "The Kafka connection (the Kafka provider's connection type) the operations UI reads and writes "
                "Kafka with.", "kafka_default", "kafka_default"),
            "trace_ui_url": _option(
                "The trace UI's page of one trace, for the trace ids the run tab and the dead letters show (W3C "
                "trace context, when tracing is on): `{trace_id}` is replaced by the id, else the id is appended "
                "as a path segment. Empty: trace ids are shown without a link.",
                "http://jaeger.example.com:16686/trace/", ""),
            "control_secret": _option(
                "Secret to sign operator commands (skip, unblock, pause, resume) written to kafka-workflows.control. "
                "When set here and in the workers (KAFKA_WORKFLOWS_CONTROL_SECRET), workers refuse unsigned or wrongly "
                "signed commands. Empty: commands are not signed.", None, "", sensitive=True),
        },
    },
}


def get_provider_info() -> dict[str, Any]:
    from kafka_workflows import __version__

    integration = "kafka-workflows"
    return {
        "package-name": "kafka-workflows",
        "name": "kafka-workflows",
        "description": "Declarative Kafka workflows: schedule-and-forget requests with retry policies, exactly-once "
                       "processing, and an atomic completion store awaited in the triggerer.",
        "versions": [__version__],
        "integrations": [{"integration-name": integration, "external-doc-url": "https://kafka.apache.org/",
                          "tags": ["apache"]}],
        "operators": [{"integration-name": integration, "python-modules": [
            "kafka_workflows_airflow.operators.produce", "kafka_workflows_airflow.operators.split",
            "kafka_workflows_airflow.operators.notify", "kafka_workflows_airflow.operators.incident",
            "kafka_workflows_airflow.operators.assets"]}],
        "sensors": [{"integration-name": integration,
                     "python-modules": ["kafka_workflows_airflow.sensors.completion"]}],
        "triggers": [{"integration-name": integration,
                      "python-modules": ["kafka_workflows_airflow.triggers.completion",
                                         "kafka_workflows_airflow.triggers.kafka_in",
                                         "kafka_workflows_airflow.triggers.incidents"]}],
        "hooks": [{"integration-name": integration, "python-modules": ["kafka_workflows_airflow.hooks"]}],
        "notifications": ["kafka_workflows_airflow.notifiers.WebhookNotifier",
                          "kafka_workflows_airflow.notifiers.LogNotifier",
                          "kafka_workflows_airflow.notifiers.EmailNotifier",
                          "kafka_workflows_airflow.notifiers.RequiredActionNotifier"],
        "extra-links": ["kafka_workflows_airflow.links.KafkaProgressLink",
                        "kafka_workflows_airflow.links.KafkaGroupLink",
                        "kafka_workflows_airflow.links.DeadLettersLink"],
        # The connection type is the Kafka provider's own (`kafka`, KafkaBaseHook): declared there, used here.
        "config": CONFIG,
    }
