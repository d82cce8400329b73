"""librdkafka configuration outside Airflow: KAFKA_BOOTSTRAP_SERVERS plus optional KAFKA_CONFIG.

Inside Airflow the same dict comes from the `kafka_default` connection through the Kafka
provider's hook (see plugins/kafka_workflows_airflow/hooks.py); everything below takes a
plain dict so both sides share one code path.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from typing import Any

from confluent_kafka.admin import AdminClient

from kafka_workflows.errors import BrokerUnreachableError, ConfigError

DEFAULT_BOOTSTRAP_SERVERS = "localhost:9092"

KafkaConfig = dict[str, Any]


def kafka_config_from_env(environ: Mapping[str, str] | None = None) -> KafkaConfig:
    """Build the client config from KAFKA_BOOTSTRAP_SERVERS and KAFKA_CONFIG (a JSON object)."""
    env = os.environ if environ is None else environ
    config: KafkaConfig = {}
    raw = env.get("KAFKA_CONFIG", "").strip()
    if raw:
        try:
            extra = json.loads(raw)
        except json.JSONDecodeError as exc:
            # Never the value: KAFKA_CONFIG holds SASL passwords and keys.
            raise ConfigError(f"KAFKA_CONFIG is not valid JSON ({exc.msg} at char {exc.pos} of {len(raw)}); "
                              "its value is not shown (it may hold secrets)") from None
        if not isinstance(extra, dict):
            raise ConfigError(f"KAFKA_CONFIG must be a JSON object of librdkafka settings, got {type(extra).__name__}")
        config.update(extra)
    servers = env.get("KAFKA_BOOTSTRAP_SERVERS", "").strip()
    if servers:
        config["bootstrap.servers"] = servers
    config.setdefault("bootstrap.servers", DEFAULT_BOOTSTRAP_SERVERS)
    return config


def client_config(config: Mapping[str, Any], **overrides: Any) -> KafkaConfig:
    """A copy of `config` with overrides; connection-only keys of other clients are dropped."""
    merged = {k: v for k, v in config.items() if k not in ("group.id",)}
    merged.update(overrides)
    return merged


def check_reachable(config: Mapping[str, Any], timeout: float = 10.0) -> None:
    """Fail fast, naming the address, when no broker answers (librdkafka would retry silently).

    The probe client must not outlive the error. The error's traceback keeps this frame and the
    cause's keeps confluent-kafka's `list_topics` frame, whose `self` is the client. Whoever keeps
    the error (a task runner, pytest) would keep a client that retries the dead address for the
    rest of the process, logging every attempt. So the local is dropped and the cause is raised
    without its traceback.
    """
    servers = config.get("bootstrap.servers", "<unset>")
    admin: AdminClient | None = None
    try:
        admin = AdminClient(client_config(config))
        metadata = admin.list_topics(timeout=timeout)
    except Exception as exc:  # KafkaException or a config error from librdkafka
        exc.__traceback__ = None
        raise BrokerUnreachableError(
            f"cannot reach Kafka at bootstrap.servers={servers!r} within {timeout:.0f}s: {exc}"
        ) from exc
    finally:
        admin = None
    if not metadata.brokers:
        raise BrokerUnreachableError(f"Kafka at bootstrap.servers={servers!r} answered with no brokers")
