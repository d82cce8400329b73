"""A spec's `topics: {<topic>: {schema: ...}}` resolved: schema files read, subjects named, codecs built.

`declared(spec, topic)` is the data-only form (a dict: format, subject, schema text, message class
path, latest) that the DAG factory hands to an operator; `codec(...)` builds the codec from it, in
the task or in the worker. A schema file is read from the spec's folder (at most MAX_SCHEMA_BYTES;
errors name the file and the topic).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from kafka_workflows.errors import ConfigError
from kafka_workflows.handlers import resolve_callable
from kafka_workflows.schemas.codec import Codec, TopicSchema, record_name, subject_for
from kafka_workflows.schemas.registry import RegistrySettings, client_for, settings_from_env
from kafka_workflows.spec.model import SchemaSpec, WorkflowSpec

MAX_SCHEMA_BYTES = 1 << 20


def _message_class(path: str, where: str) -> Any:
    cls = resolve_callable(path, where)
    if not hasattr(cls, "DESCRIPTOR"):
        raise ConfigError(f"{where}: {path} is not a generated Protobuf message class")
    return cls


def declared(spec: WorkflowSpec, topic: str) -> dict[str, Any] | None:
    """The schema `spec` declares for `topic`, as plain data (None: the topic has none)."""
    schema = spec.schema_for(topic)
    if schema is None:
        return None
    where = f"{spec.name}: topics.{topic}.schema"
    text = None
    if schema.file is not None:
        folder = Path(spec.folder or ".")
        path = folder / schema.file
        try:
            if path.stat().st_size > MAX_SCHEMA_BYTES:
                raise ConfigError(f"{where}: {path} is larger than {MAX_SCHEMA_BYTES} bytes")
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{where}: cannot read the schema file {path} ({type(exc).__name__})") from None
    return {"topic": topic, "format": schema.format, "schema_str": text, "message": schema.message,
            "subject": schema.subject, "naming": schema.naming, "latest": schema.latest}


def topic_schema(data: Mapping[str, Any], client: Any = None) -> TopicSchema:
    """The declared schema made concrete: its message class imported, `latest` fetched, the subject named."""
    topic, fmt = data["topic"], data["format"]
    where = f"topic {topic}: schema"
    message_class = _message_class(data["message"], where) if fmt == "protobuf" else None
    text = data.get("schema_str")
    if fmt != "protobuf" and text is not None:
        record = record_name(fmt, text, None)
        if record is None and fmt == "avro":
            raise ConfigError(f"{where}: the Avro schema is not a named record in JSON")
    else:
        record = record_name(fmt, None, message_class) if fmt == "protobuf" else None
    subject = subject_for(topic, data.get("naming") or "topic", record, data.get("subject"))
    if data.get("latest") and text is None and fmt != "protobuf":
        if client is None:
            raise ConfigError(f"{where}: latest needs the schema registry")
        try:
            text = client.get_latest_version(subject).schema.schema_str
        except Exception as exc:  # noqa: BLE001 - a registry error or none: named, not quoted
            raise ConfigError(f"{where}: subject {subject} has no latest version in the registry "
                              f"({type(exc).__name__})") from None
    return TopicSchema(topic, fmt, subject, text, message_class, bool(data.get("latest")))


def codec(data: Mapping[str, Any], settings: RegistrySettings, client: Any = None) -> Codec:
    client = client if client is not None else client_for(settings)
    return Codec(topic_schema(data, client), client, settings.auto_register)


def require_settings(settings: RegistrySettings | None, what: str) -> RegistrySettings:
    if settings is None:
        raise ConfigError(f"{what} declares a schema, but no schema registry is configured: set "
                          "AIRFLOW_CONN_SCHEMA_REGISTRY_DEFAULT (or SCHEMA_REGISTRY_URL)")
    return settings


def codecs_for(spec: WorkflowSpec, topics: Iterable[str], settings: RegistrySettings | None = None,
               client: Any = None) -> dict[str, Codec]:
    """Codecs of the `topics` (of a worker or processor) that `spec` declares schemas for; {} when none."""
    datas = [d for d in (declared(spec, t) for t in topics) if d is not None]
    if not datas:
        return {}
    settings = require_settings(settings if settings is not None else settings_from_env(), f"workflow {spec.name}")
    client = client if client is not None else client_for(settings)
    return {d["topic"]: codec(d, settings, client) for d in datas}


__all__ = ["MAX_SCHEMA_BYTES", "SchemaSpec", "codec", "codecs_for", "declared", "topic_schema"]
