"""One topic's values through the schema registry: checked, encoded, decoded.

    codec.check(value, where)   before anything is written: SchemaFitError naming the field that
                                does not fit (never its value)
    codec.encode(value)         the registry's wire format (magic byte 0, schema id, payload); the
                                schema is registered on first use, or must exist (auto_register)
    codec.decode(raw, where)    once, at a worker's boundary: a dict (Avro, JSON Schema) or the
                                message object (Protobuf). SchemaDecodeError (subject, id, reason)
                                when the record does not decode: no wire format, an unknown schema
                                id, a shape its schema cannot read. A registry that does not answer
                                is not the record's fault: RegistryUnavailableError (the unit is
                                rebuilt and the record read again), never a dead letter.

confluent-kafka's serializers do the work (AvroSerializer/AvroDeserializer with fastavro,
ProtobufSerializer/ProtobufDeserializer, JSONSerializer/JSONDeserializer with jsonschema). An Avro
reader reads with the spec's schema, so records written with an older compatible version (a field
added with a default) decode to the current shape.
"""

from __future__ import annotations

import io
import json
import re
from dataclasses import dataclass
from typing import Any

from kafka_workflows import headers as h
from kafka_workflows.errors import ConfigError, MessageDecodeError, RegistryUnavailableError

FORMATS = {"avro": "AVRO", "protobuf": "PROTOBUF", "json": "JSON"}
MAX_REASON = 300


@dataclass(frozen=True)
class TopicSchema:
    """What a spec declares for one topic, resolved: the subject and the schema itself."""

    topic: str
    format: str  # avro | protobuf | json
    subject: str
    schema_str: str | None = None  # Avro / JSON Schema text; None for Protobuf (the class carries it)
    message_class: Any = None  # Protobuf: the generated message class
    latest: bool = False  # the subject's latest version, required to exist


class SchemaDecodeError(MessageDecodeError):
    """A record that does not decode with its topic's schema: dead-lettered at once, never retried."""

    def __init__(self, where: str, subject: str, schema_id: int | None, reason: str) -> None:
        super().__init__(f"{where}: value does not decode with subject {subject}"
                         f"{'' if schema_id is None else f' (schema id {schema_id})'}: {reason}")
        self.subject = subject
        self.schema_id = schema_id
        self.reason = reason[:MAX_REASON]

    def schema_headers(self) -> dict[str, object]:
        out: dict[str, object] = {h.SCHEMA_SUBJECT: self.subject, h.SCHEMA_ERROR: self.reason}
        if self.schema_id is not None:
            out[h.SCHEMA_ID] = self.schema_id
        return out


__all__ = ["Codec", "RegistryUnavailableError", "SchemaDecodeError", "SchemaFitError", "TopicSchema"]


class SchemaFitError(ConfigError):
    """A request that does not fit its topic's schema; names the request and the field."""


def record_name(fmt: str, schema_str: str | None, message_class: Any) -> str | None:
    """The record's full name, for the record naming strategies."""
    if fmt == "protobuf":
        return str(message_class.DESCRIPTOR.full_name)
    try:
        doc = json.loads(schema_str or "null")
    except json.JSONDecodeError:
        return None
    if fmt == "avro" and isinstance(doc, dict) and isinstance(doc.get("name"), str):
        name, namespace = doc["name"], doc.get("namespace")
        return name if "." in name or not namespace else f"{namespace}.{name}"
    if fmt == "json" and isinstance(doc, dict) and isinstance(doc.get("title"), str):
        return str(doc["title"])
    return None


def subject_for(topic: str, naming: str, record: str | None, explicit: str | None) -> str:
    if explicit:
        return explicit
    if naming == "topic":
        return f"{topic}-value"
    if record is None:
        raise ConfigError(f"topic {topic}: naming {naming} needs a record name (an Avro schema's name, "
                          "a JSON Schema's title)")
    return record if naming == "record" else f"{topic}-{record}"


def _short(text: str, limit: int = 120) -> str:
    return text if len(text) <= limit else text[:limit] + "..."


class Codec:
    def __init__(self, schema: TopicSchema, client: Any, auto_register: bool = True) -> None:
        from confluent_kafka.serialization import MessageField, SerializationContext

        self.schema = schema
        self.client = client
        self.subject = schema.subject
        self._ctx = SerializationContext(schema.topic, MessageField.VALUE)
        subject = schema.subject
        conf: dict[str, Any] = {
            "auto.register.schemas": auto_register and not schema.latest,
            "use.latest.version": schema.latest,
            "subject.name.strategy": lambda _ctx, _record: subject,
        }
        fmt = schema.format
        if fmt == "avro":
            import fastavro
            from confluent_kafka.schema_registry.avro import AvroDeserializer, AvroSerializer

            self._parsed = fastavro.parse_schema(json.loads(schema.schema_str or "null"))
            # schema id -> its writer schema, parsed: after the first record of an id decoded through
            # AvroDeserializer, the rest of that id are read by fastavro alone (the same library and
            # resolution the deserializer uses, without its ~30 us a call of lookups around it).
            self._writers: dict[int, Any] = {}
            self._read = fastavro.schemaless_reader
            self._serializer = AvroSerializer(client, schema.schema_str, conf=conf)
            self._deserializer = AvroDeserializer(client, schema.schema_str)
        elif fmt == "json":
            from confluent_kafka.schema_registry.json_schema import JSONDeserializer, JSONSerializer
            from jsonschema.validators import validator_for

            document = json.loads(schema.schema_str or "null")
            self._validator = validator_for(document)(document)
            self._serializer = JSONSerializer(schema.schema_str, client, conf=conf)
            self._deserializer = JSONDeserializer(schema.schema_str, schema_registry_client=client)
        elif fmt == "protobuf":
            from confluent_kafka.schema_registry.protobuf import ProtobufDeserializer, ProtobufSerializer

            conf["use.deprecated.format"] = False
            self._serializer = ProtobufSerializer(schema.message_class, client, conf=conf)
            self._deserializer = ProtobufDeserializer(schema.message_class, {"use.deprecated.format": False})
        else:  # the spec model allows no other
            raise ConfigError(f"topic {schema.topic}: unknown schema format {fmt!r}")

    # -- writing ---------------------------------------------------------------------------
    def check(self, value: Any, where: str) -> None:
        """SchemaFitError naming `where` and the field when `value` does not fit the schema."""
        fmt = self.schema.format
        problem: str | None = None
        if fmt == "avro":
            from fastavro.validation import ValidationError, validate

            try:
                validate(value, self._parsed, raise_errors=True)
            except ValidationError as exc:
                data = exc.errors[0] if exc.errors else None
                field = getattr(data, "field", None) or "(record)"
                name = self._parsed.get("name", "") if isinstance(self._parsed, dict) else ""
                field = field[len(name) + 1:] if name and field.startswith(name + ".") else field
                problem = f"field {field} does not fit its schema type {_short(str(getattr(data, 'schema', '?')), 60)}"
        elif fmt == "json":
            from jsonschema.exceptions import best_match

            error = best_match(self._validator.iter_errors(value))
            if error is not None:
                path = ".".join(str(p) for p in error.absolute_path) or "(document)"
                if error.validator == "required":
                    missing = [name for name in error.validator_value
                               if isinstance(error.instance, dict) and name not in error.instance]
                    problem = f"field {'.'.join(filter(None, [path if error.absolute_path else '', *missing[:1]]))} " \
                              "is required"
                else:
                    problem = f"field {path} fails its schema's {error.validator!r} rule"
        else:
            problem = self._protobuf_problem(value)
        if problem is not None:
            raise SchemaFitError(f"{where}: does not fit subject {self.subject} ({fmt}): {problem}")

    def _protobuf_problem(self, value: Any) -> str | None:
        if isinstance(value, self.schema.message_class):
            return None
        from google.protobuf.json_format import ParseDict, ParseError

        if not isinstance(value, dict):
            return f"expected an object, got {type(value).__name__}"
        try:
            ParseDict(value, self.schema.message_class())
        except ParseError as exc:
            text = str(exc)
            match = re.search(r"Failed to parse (\S+) field", text) or re.search(r'no field named "([^"]+)"', text)
            return f"field {_short(match.group(1), 100)} does not fit" if match else "does not fit its message type"
        return None

    def encode(self, value: Any) -> bytes:
        if self.schema.format == "protobuf" and isinstance(value, dict):
            from google.protobuf.json_format import ParseDict

            value = ParseDict(value, self.schema.message_class())
        try:
            return bytes(self._serializer(value, self._ctx))
        except Exception as exc:
            status = _registry_status(exc)
            if status == 409:
                raise SchemaFitError(f"subject {self.subject}: the registry refused this schema as incompatible "
                                     "with the subject's versions (its compatibility rule)") from None
            if status == 404 or (status == 40403):
                raise SchemaFitError(f"subject {self.subject}: the schema is not registered and auto_register "
                                     "is off: register it first") from None
            if status is not None or _network(exc):
                raise RegistryUnavailableError(f"schema registry: cannot register or find subject {self.subject} "
                                               f"({type(exc).__name__}: {_short(str(exc), 200)})") from exc
            raise

    # -- reading ---------------------------------------------------------------------------
    def _remember_writer(self, schema_id: int) -> None:
        """Keep the parsed writer schema of `schema_id` for the fast path (not one with references)."""
        import fastavro

        try:
            registered = self.client.get_schema(schema_id)
            if not registered.references and len(self._writers) < 1000:
                self._writers[schema_id] = fastavro.parse_schema(json.loads(registered.schema_str))
        except Exception:  # noqa: BLE001 - the deserializer serves this id then
            return

    def decode(self, raw: bytes | None, where: str) -> Any:
        if raw is None or len(raw) < 5 or raw[0] != 0:
            raise SchemaDecodeError(where, self.subject, None, "not in the schema registry's wire format "
                                    f"({'no value' if raw is None else 'no magic byte 0'})")
        schema_id = int.from_bytes(raw[1:5], "big")
        writer = self._writers.get(schema_id) if self.schema.format == "avro" else None
        if writer is None:
            try:
                self.client.get_schema(schema_id)  # cached by the client after the first record of each id
            except Exception as exc:
                if _registry_status(exc) == 404:
                    raise SchemaDecodeError(where, self.subject, schema_id,
                                            f"unknown schema id {schema_id}") from None
                raise RegistryUnavailableError(f"{where}: schema registry: cannot fetch schema id {schema_id} "
                                               f"({type(exc).__name__})") from exc
        try:
            if writer is not None:
                return self._read(io.BytesIO(memoryview(raw)[5:]), writer, self._parsed)
            value = self._deserializer(raw, self._ctx)
            if self.schema.format == "avro":
                self._remember_writer(schema_id)
            return value
        except Exception as exc:  # noqa: BLE001 - whatever the bytes are, the record is named, never quoted
            reason = f"{type(exc).__name__}"
            if type(exc).__name__ in ("SchemaResolutionError", "ValidationError", "SerializationError"):
                reason += f": {_short(str(exc).splitlines()[0] if str(exc) else '', 200)}"
            raise SchemaDecodeError(where, self.subject, schema_id, f"does not decode ({reason})") from None


def _registry_status(exc: BaseException) -> int | None:
    from confluent_kafka.schema_registry.error import SchemaRegistryError

    return exc.http_status_code if isinstance(exc, SchemaRegistryError) else None


def _network(exc: BaseException) -> bool:
    return isinstance(exc, OSError | ConnectionError) or "httpx" in type(exc).__module__
