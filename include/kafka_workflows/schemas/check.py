"""`kafka-workflows validate --registry URL`: every spec's schemas against the registry's compatibility rule.

For each topic a spec declares a schema for: the schema file is read and parsed, the subject named,
and the registry asked whether the schema may be registered under that subject's rule (its own or
the global one; BACKWARD by Confluent's default): a new subject is fine (registered on first use), an
incompatible change is a problem naming the spec, the topic, the subject, its latest version and
the rule. `latest` needs the subject to have a version. Nothing is registered.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from kafka_workflows.errors import ConfigError
from kafka_workflows.schemas.codec import FORMATS, TopicSchema
from kafka_workflows.schemas.resolve import declared, topic_schema
from kafka_workflows.spec.model import WorkflowSpec


@dataclass(frozen=True)
class Finding:
    workflow: str
    topic: str
    subject: str | None
    ok: bool
    text: str

    def render(self, file: str) -> str:
        return f"{file}: topics.{self.topic}.schema: {self.text}"


def _registry_schema(schema: TopicSchema) -> Any:
    from confluent_kafka.schema_registry import Schema

    if schema.format == "protobuf":
        from confluent_kafka.schema_registry.common.protobuf import _schema_to_str

        return Schema(_schema_to_str(schema.message_class.DESCRIPTOR.file), schema_type=FORMATS["protobuf"])
    return Schema(schema.schema_str, schema_type=FORMATS[schema.format])


def _status(exc: BaseException) -> int | None:
    from confluent_kafka.schema_registry.error import SchemaRegistryError

    return exc.http_status_code if isinstance(exc, SchemaRegistryError) else None


def _rule(client: Any, subject: str) -> str:
    """The rule that applies to `subject`: its own, else the global one (`defaultToGlobal`, which
    confluent-kafka's client does not ask for: some registries answer NONE for a subject without one)."""
    from urllib.parse import quote

    try:
        answer = client._rest_client.get(f"config/{quote(subject, safe='')}?defaultToGlobal=true")
        return str(answer.get("compatibilityLevel") or answer.get("compatibility"))
    except Exception:  # noqa: BLE001 - an older registry: the global rule
        try:
            return str(client.get_compatibility())
        except Exception:  # noqa: BLE001
            return "the registry's"


def check_spec(spec: WorkflowSpec, client: Any) -> list[Finding]:
    findings = []
    for topic in spec.topics:
        if spec.schema_for(topic) is None:
            continue
        try:
            schema = topic_schema(declared(spec, topic) or {}, client)
        except ConfigError as exc:
            findings.append(Finding(spec.name, topic, None, False, str(exc)))
            continue
        subject = schema.subject
        try:
            latest = client.get_latest_version(subject)
        except Exception as exc:  # noqa: BLE001 - named below
            if _status(exc) == 404:
                findings.append(Finding(spec.name, topic, subject, True,
                                        f"subject {subject}: new (registered on first use)"))
            else:
                findings.append(Finding(spec.name, topic, subject, False,
                                        f"subject {subject}: the registry did not answer ({type(exc).__name__})"))
            continue
        if schema.latest:
            findings.append(Finding(spec.name, topic, subject, True,
                                    f"subject {subject}: latest is version {latest.version}"))
            continue
        try:
            compatible = client.test_compatibility(subject, _registry_schema(schema))
        except Exception as exc:  # noqa: BLE001 - an unparsable schema, or the registry away
            findings.append(Finding(spec.name, topic, subject, False, f"subject {subject}: the registry refused "
                                    f"the schema ({type(exc).__name__}: {str(exc)[:200]})"))
            continue
        rule = _rule(client, subject)
        if compatible:
            findings.append(Finding(spec.name, topic, subject, True,
                                    f"subject {subject}: compatible with version {latest.version} ({rule})"))
        else:
            findings.append(Finding(spec.name, topic, subject, False,
                                    f"subject {subject}: INCOMPATIBLE with its latest version {latest.version} "
                                    f"under rule {rule}: a deploy would break readers or writers of {topic}"))
    return findings


def check_specs(specs: Iterable[WorkflowSpec], url: str, client_settings: dict[str, Any] | None = None
                ) -> list[Finding]:
    from kafka_workflows.schemas.registry import RegistrySettings, client_for

    client = client_for(RegistrySettings(url.rstrip("/"), dict(client_settings or {})))
    return [finding for spec in specs for finding in check_spec(spec, client)]
