"""Issue 19: schemas through a real schema registry (Apicurio Registry, the `schema_registry` fixture).

A spec declares `topics: {<topic>: {schema: ...}}`; requests are checked and encoded in the registry's
wire format; the worker decodes each record once at its boundary and the handler's `message.value`
is the decoded record; a record that does not decode is dead-lettered at once with the subject, the
schema id and the reason; a dead letter replayed goes round again, decoded.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Producer

from kafka_workflows import headers as h
from kafka_workflows.errors import NonRetryableError
from kafka_workflows.kafka.admin import TopicSpec, ensure_topics
from kafka_workflows.kafka.producer import RequestProducer
from kafka_workflows.messages import Message
from kafka_workflows.ops.deadletters import list_dead_letters, replay_once
from kafka_workflows.retry.topics import dead_letter_topic
from kafka_workflows.schemas.codec import Codec, SchemaFitError
from kafka_workflows.schemas.registry import RegistrySettings
from kafka_workflows.schemas.resolve import codecs_for
from kafka_workflows.spec import load_spec
from kafka_workflows.worker import Worker
from stack.registry import SchemaRegistry
from tests.helpers.kafka import read_all, start_in_thread, stop_thread, wait_for

pytestmark = pytest.mark.integration

RENEWAL_V1 = {"type": "record", "name": "Renewal", "namespace": "kw.test", "fields": [
    {"name": "user_id", "type": "string"}, {"name": "amount", "type": "long"}]}
RENEWAL_JSON = {"$schema": "http://json-schema.org/draft-07/schema#", "title": "kw.test.Renewal", "type": "object",
                "properties": {"user_id": {"type": "string"}, "amount": {"type": "integer"}},
                "required": ["user_id", "amount"], "additionalProperties": False}
# format -> (the spec's schema:, the files next to it)
FORMATS = {
    "avro": ({"format": "avro", "file": "renewal.avsc"}, {"renewal.avsc": json.dumps(RENEWAL_V1)}),
    "protobuf": ({"format": "protobuf", "message": "tests.helpers.renewal_pb2.Renewal"}, {}),
    "json": ({"format": "json", "file": "renewal.schema.json"}, {"renewal.schema.json": json.dumps(RENEWAL_JSON)}),
}


def _plain(value: Any) -> dict[str, Any]:
    """A decoded value as a dict: Avro and JSON Schema decode to one, Protobuf to its message object."""
    if isinstance(value, dict):
        return value
    from google.protobuf.json_format import MessageToDict

    return MessageToDict(value, preserving_proto_field_name=True, always_print_fields_with_no_presence=True) | {
        "amount": value.amount}


def _spec(tmp_path: Path, topic: str, group: str, schema: dict[str, Any], files: dict[str, str]) -> Any:
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    spec = {"name": f"wf_{group}", "topics": {topic: {"schema": schema}},
            "workers": [{"name": "w", "topics": [topic], "group": group, "handler": "json.dumps"}]}
    path = tmp_path / "workflow.yaml"
    path.write_text(json.dumps(spec))  # JSON is YAML
    return load_spec(path)


class Recorder:
    """Fails a request whose amount is negative, unless it is a replay; records what it saw."""

    def __init__(self) -> None:
        self.seen: list[tuple[Any, bool]] = []
        self.lock = threading.Lock()

    def __call__(self, message: Message) -> None:
        value = _plain(message.value)
        replayed = h.REPLAYED_FROM in message.headers
        with self.lock:
            self.seen.append((value, replayed))
        if value["amount"] < 0 and not replayed:
            raise NonRetryableError("negative amount")


def _raw(config: dict[str, Any], topic: str, values: list[bytes]) -> None:
    producer = Producer({**config, "enable.idempotence": True})
    for value in values:
        producer.produce(topic, value, key=b"raw", partition=0)
    assert producer.flush(60) == 0


def _send(config: dict[str, Any], topic: str, codec: Codec, requests: list[dict[str, Any]]) -> None:
    for index, request in enumerate(requests):  # every request checked before one is written
        codec.check(request, f"requests[{index}]")
    producer = RequestProducer(config)
    for request in requests:
        producer.send(topic, codec.encode(request), key=request["user_id"], partition=0,
                      headers={h.REQUEST_ID: "r1", h.ATTEMPT: 1}, raw=True)
    producer.flush()
    producer.close()


@pytest.mark.parametrize("fmt", sorted(FORMATS))
def test_round_trip_produce_worker_dead_letter_replay(
        kafka_config: dict[str, Any], schema_registry: SchemaRegistry, tmp_path: Path, topic: str,
        group: str, fmt: str) -> None:
    spec = _spec(tmp_path, topic, group, *FORMATS[fmt])
    codec = codecs_for(spec, [topic], RegistrySettings(schema_registry.url))[topic]
    assert codec.subject == f"{topic}-value"
    ensure_topics(kafka_config, [TopicSpec(topic, 1)])

    # A request that does not fit fails before anything is written, naming the request and the field.
    with pytest.raises(SchemaFitError, match=r"requests\[1\].*field amount"):
        _send(kafka_config, topic, codec, [{"user_id": "u0", "amount": 1}, {"user_id": "u1", "amount": "ten"}])
    assert read_all(kafka_config, topic, timeout=5) == []

    _send(kafka_config, topic, codec, [{"user_id": "u1", "amount": 10}, {"user_id": "u2", "amount": -5}])
    unknown_id = b"\x00" + (999_999).to_bytes(4, "big") + b"\x02"
    _raw(kafka_config, topic, [b'{"user_id": "u3", "amount": 1}', unknown_id])
    _send(kafka_config, topic, codec, [{"user_id": "u4", "amount": 40}])

    recorder = Recorder()
    worker = Worker(kafka_config, [topic], group, recorder, codecs={topic: codec})
    thread = start_in_thread(worker)
    try:
        wait_for(lambda: len(recorder.seen) == 3, 60, "the three records that decode")
        dlq = dead_letter_topic(topic, group)
        dead = read_all(kafka_config, dlq, expected=3, timeout=60)
        assert [m.offset() for m in dead] == [0, 1, 2]
        letters = [dict(m.headers() or []) for m in dead]
        # the handler's failure, then the two that never reached it, dead-lettered at once
        assert letters[0][h.ERROR_TYPE] == b"NonRetryableError" and letters[0][h.ATTEMPT] == b"1"
        assert letters[1][h.ERROR_TYPE] == b"SchemaDecodeError"
        assert letters[1][h.SCHEMA_SUBJECT] == f"{topic}-value".encode() and h.SCHEMA_ID not in letters[1]
        assert b"wire format" in letters[1][h.SCHEMA_ERROR]
        assert (letters[2][h.SCHEMA_ID], letters[2][h.SCHEMA_ERROR]) == (b"999999", b"unknown schema id 999999")
        assert worker.stats.retried == 0 and worker.stats.failed == 1, "dead-lettered at once, never retried"

        # Replay the handler's failure: it goes round again, decoded, and succeeds.
        letter = list_dead_letters(kafka_config, topic, group)[0]
        replayed = replay_once(kafka_config, topic, group, lambda done: [letter], by="test")
        assert len(replayed.delivered) == 1
        wait_for(lambda: len(recorder.seen) == 4, 60, "the replayed record")
    finally:
        stop_thread(worker, thread)
    assert recorder.seen == [({"user_id": "u1", "amount": 10}, False), ({"user_id": "u2", "amount": -5}, False),
                             ({"user_id": "u4", "amount": 40}, False), ({"user_id": "u2", "amount": -5}, True)]


def test_a_compatible_evolution_is_read_with_both_versions_in_flight_and_an_incompatible_one_is_refused(
        kafka_config: dict[str, Any], schema_registry: SchemaRegistry, tmp_path: Path, topic: str,
        group: str, capsys: pytest.CaptureFixture[str]) -> None:
    from kafka_workflows.cli import main

    settings = RegistrySettings(schema_registry.url)
    v2 = {**RENEWAL_V1, "fields": [*RENEWAL_V1["fields"], {"name": "currency", "type": "string", "default": "EUR"}]}
    v3 = {**v2, "fields": [*v2["fields"], {"name": "region", "type": "string"}]}  # no default: not BACKWARD
    folders = {name: tmp_path / name for name in ("v1", "v2", "v3")}
    specs = {}
    for name, schema in (("v1", RENEWAL_V1), ("v2", v2), ("v3", v3)):
        folders[name].mkdir()
        specs[name] = _spec(folders[name], topic, group, {"format": "avro", "file": "renewal.avsc"},
                            {"renewal.avsc": json.dumps(schema)})
    ensure_topics(kafka_config, [TopicSpec(topic, 1)])
    old = codecs_for(specs["v1"], [topic], settings)[topic]
    _send(kafka_config, topic, old, [{"user_id": "u1", "amount": 1}])  # v1 registered and in flight

    assert main(["validate", str(folders["v2"]), "--registry", schema_registry.url]) == 0
    assert "compatible with version 1 (BACKWARD)" in capsys.readouterr().out
    new = codecs_for(specs["v2"], [topic], settings)[topic]
    _send(kafka_config, topic, new, [{"user_id": "u2", "amount": 2, "currency": "USD"}])
    _send(kafka_config, topic, old, [{"user_id": "u3", "amount": 3}])  # an old producer still writing v1

    # `latest: true` reads the subject's latest version from the registry (v2 now) and never registers.
    (tmp_path / "latest").mkdir()
    latest = codecs_for(_spec(tmp_path / "latest", topic, group, {"format": "avro", "latest": True}, {}),
                        [topic], settings)[topic]
    assert latest.schema.latest and "currency" in (latest.schema.schema_str or "")
    assert latest.decode(new.encode({"user_id": "x", "amount": 0, "currency": "USD"}), "x")["currency"] == "USD"

    # The incompatible change is refused by validate, before any deploy, naming the subject and the rule.
    assert main(["validate", str(folders["v3"]), "--registry", schema_registry.url]) == 1
    refused = capsys.readouterr().err
    assert f"topics.{topic}.schema: subject {topic}-value: INCOMPATIBLE with its latest version 2 under rule " \
           "BACKWARD" in refused
    # and by the registry, should a producer try anyway: nothing is written
    with pytest.raises(SchemaFitError, match="incompatible"):
        _send(kafka_config, topic, codecs_for(specs["v3"], [topic], settings)[topic],
              [{"user_id": "u4", "amount": 4, "currency": "EUR", "region": "eu"}])

    seen: list[Any] = []
    worker = Worker(kafka_config, [topic], group, lambda message: seen.append(message.value),
                    codecs=codecs_for(specs["v2"], [topic], settings))  # the worker reads with v2
    thread = start_in_thread(worker)
    try:
        wait_for(lambda: len(seen) == 3, 60, "the records of both versions")
    finally:
        stop_thread(worker, thread)
    assert seen == [{"user_id": "u1", "amount": 1, "currency": "EUR"},  # v1: the default filled in
                    {"user_id": "u2", "amount": 2, "currency": "USD"},
                    {"user_id": "u3", "amount": 3, "currency": "EUR"}]
    assert worker.stats.dead_lettered == 0


def test_an_exactly_once_processor_decodes_encodes_and_dead_letters_what_does_not_decode(
        kafka_config: dict[str, Any], schema_registry: SchemaRegistry, tmp_path: Path, topic: str,
        group: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from kafka_workflows.eos import TransactionalProcessor
    from kafka_workflows.runner import _codecs, _transform
    from kafka_workflows.spec import ProcessorSpec

    out = f"{topic}-out"
    doubled = {**RENEWAL_V1, "name": "Doubled"}
    for name, schema in (("in.avsc", RENEWAL_V1), ("out.avsc", doubled)):
        (tmp_path / name).write_text(json.dumps(schema))
    (tmp_path / "workflow.yaml").write_text(json.dumps({
        "name": f"wf_{group}", "topics": {topic: {"schema": {"format": "avro", "file": "in.avsc"}},
                                          out: {"schema": {"format": "avro", "file": "out.avsc"}}},
        "processors": [{"name": "p", "topics": [topic], "group": group, "outputs": [out],
                        "transform": "tests.helpers.handlers.double_amount"}]}))
    spec = load_spec(tmp_path / "workflow.yaml")
    ensure_topics(kafka_config, [TopicSpec(topic, 1), TopicSpec(out, 1)])
    settings = RegistrySettings(schema_registry.url)
    codec = codecs_for(spec, [topic], settings)[topic]
    _send(kafka_config, topic, codec, [{"user_id": "u1", "amount": 1}])
    _raw(kafka_config, topic, [b"not avro"])
    _send(kafka_config, topic, codec, [{"user_id": "u2", "amount": 2}])

    monkeypatch.setenv("SCHEMA_REGISTRY_URL", schema_registry.url)  # what build_units reads, as the worker does
    processor_spec: ProcessorSpec = spec.processors[0]
    codecs = _codecs(spec, [topic, out])
    processor = TransactionalProcessor(kafka_config, [topic], group, _transform(processor_spec, codecs),
                                       commit_interval=0.2)
    thread = start_in_thread(processor)
    try:
        outputs = read_all(kafka_config, out, expected=2, timeout=60)
        dead = read_all(kafka_config, dead_letter_topic(topic, group), expected=1, timeout=60)
    finally:
        stop_thread(processor, thread)
    reader = codecs_for(spec, [out], settings)[out]  # type: ignore[arg-type]
    assert [reader.decode(m.value(), "out") for m in outputs] == [{"user_id": "u1", "amount": 2},
                                                                  {"user_id": "u2", "amount": 4}]
    letter = dict(dead[0].headers() or [])
    assert dead[0].value() == b"not avro" and letter[h.ERROR_TYPE] == b"SchemaDecodeError"
    assert letter[h.SCHEMA_SUBJECT] == f"{topic}-value".encode() and b"wire format" in letter[h.SCHEMA_ERROR]


@pytest.mark.parametrize("strategy", ["batch", "concurrent"])
def test_batch_and_concurrent_handlers_get_decoded_values_and_a_bad_record_is_dead_lettered(
        kafka_config: dict[str, Any], schema_registry: SchemaRegistry, tmp_path: Path, topic: str,
        group: str, strategy: str) -> None:
    from kafka_workflows.handlers import batch_handler
    from kafka_workflows.messages import MessageBatch

    spec = _spec(tmp_path, topic, group, *FORMATS["avro"])
    codec = codecs_for(spec, [topic], RegistrySettings(schema_registry.url))[topic]
    ensure_topics(kafka_config, [TopicSpec(topic, 1)])
    _send(kafka_config, topic, codec, [{"user_id": "u1", "amount": 1}, {"user_id": "u2", "amount": 2}])
    _raw(kafka_config, topic, [b'{"user_id": "u3", "amount": 3}'])
    _send(kafka_config, topic, codec, [{"user_id": "u4", "amount": 4}])
    seen: list[Any] = []
    lock = threading.Lock()

    def one(message: Message) -> None:
        with lock:
            seen.append(message.value)

    @batch_handler
    def many(batch: MessageBatch) -> None:
        for message in batch:
            one(message)

    worker = Worker(kafka_config, [topic], group, many if strategy == "batch" else one,
                    concurrency=4 if strategy == "concurrent" else 1, codecs={topic: codec})
    thread = start_in_thread(worker)
    try:
        wait_for(lambda: len(seen) == 3, 60, "the three records that decode")
        dead = read_all(kafka_config, dead_letter_topic(topic, group), expected=1, timeout=60)
    finally:
        stop_thread(worker, thread)
    assert sorted(v["user_id"] for v in seen) == ["u1", "u2", "u4"] and all(isinstance(v, dict) for v in seen)
    letter = dict(dead[0].headers() or [])
    assert letter[h.ERROR_TYPE] == b"SchemaDecodeError" and letter[h.SCHEMA_SUBJECT] == f"{topic}-value".encode()
