"""Issue 19, the Airflow side: produce with a schema, through the registry's Airflow connection."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pendulum
import pytest

from kafka_workflows.schemas.registry import RegistrySettings
from kafka_workflows.schemas.resolve import codec
from tests.airflow.dags.produce_test_dags import RENEWAL_AVRO, produce_avro_dag
from tests.helpers.kafka import read_all

pytestmark = [pytest.mark.airflow, pytest.mark.integration]
DAY = pendulum.datetime(2026, 11, 27, tz="UTC")


def test_produce_writes_avro_and_a_request_that_does_not_fit_fails_the_task_before_anything_is_written(
        airflow_db: None, kafka_connection: str, registry_connection: str, topic: str) -> None:
    bad = [{"user_id": "u1", "amount": 1}, {"user_id": "u2", "amount": "ten"}]
    from kafka_workflows.schemas.codec import SchemaFitError
    from kafka_workflows_airflow.operators import ProduceRequestsOperator

    op = ProduceRequestsOperator(task_id="produce", topic=topic, requests=bad, key_field="user_id",
                                 value_schema=produce_avro_dag.get_task("produce").value_schema)
    with pytest.raises(SchemaFitError, match=rf"produce: requests\[1\]: does not fit subject {topic}-value "
                       r"\(avro\): field amount does not fit its schema type long"):
        op._payloads(op._keyed_requests())
    assert produce_avro_dag.test(logical_date=DAY, run_conf={"topic": topic, "requests": bad}).state == "failed"
    from confluent_kafka.admin import AdminClient

    assert topic not in AdminClient({"bootstrap.servers": kafka_connection}).list_topics(timeout=10).topics

    good = [{"user_id": "u1", "amount": 1}, {"user_id": "u2", "amount": 2}]
    run = produce_avro_dag.test(logical_date=DAY.add(days=1), run_conf={"topic": topic, "requests": good})
    assert run.state == "success"
    messages = read_all({"bootstrap.servers": kafka_connection}, topic, expected=2)
    reader = codec({"topic": topic, "format": "avro", "schema_str": RENEWAL_AVRO},
                   RegistrySettings(registry_connection))
    assert sorted((m.value()[0], json.dumps(reader.decode(m.value(), "m"))) for m in messages) == [
        (0, json.dumps(r)) for r in good]  # the wire format: magic byte 0, then the schema id


def test_the_dag_factory_hands_the_topic_schema_to_produce(tmp_path: Path) -> None:
    from kafka_workflows.spec import load_spec
    from kafka_workflows_airflow.factory import build_dag

    (tmp_path / "renewal.avsc").write_text(RENEWAL_AVRO)
    spec: dict[str, Any] = {"name": "schemas_factory", "topics": {"renewals": {"schema": {
        "format": "avro", "file": "renewal.avsc"}}}, "steps": [{"id": "produce", "produce": {
            "topic": "renewals", "requests": "{{ params.r }}", "key_field": "user_id"}}]}
    (tmp_path / "wf.yaml").write_text(json.dumps(spec))
    task = build_dag(load_spec(tmp_path / "wf.yaml")).get_task("produce")
    assert task.value_schema["schema_str"] == RENEWAL_AVRO and task.value_schema["format"] == "avro"


def test_the_dead_letter_page_shows_a_value_decoded_with_its_subject_and_version_else_bytes(
        registry_connection: str, tmp_path: Path, topic: str) -> None:
    from kafka_workflows.spec import load_spec
    from kafka_workflows_airflow.api.schemas import decoded_value

    (tmp_path / "renewal.avsc").write_text(RENEWAL_AVRO)
    spec: dict[str, Any] = {"name": "schemas_ui", "topics": {topic: {"schema": {
        "format": "avro", "file": "renewal.avsc"}}}}
    (tmp_path / "wf.yaml").write_text(json.dumps(spec))
    loaded = load_spec(tmp_path / "wf.yaml")
    writer = codec({"topic": topic, "format": "avro", "schema_str": RENEWAL_AVRO},
                   RegistrySettings(registry_connection))
    raw = writer.encode({"user_id": "u1", "amount": 7})
    shown = decoded_value(loaded, topic, raw)
    assert shown == {"value_decoded": {"user_id": "u1", "amount": 7}, "schema": {
        "subject": f"{topic}-value", "id": int.from_bytes(raw[1:5], "big"), "version": 1, "format": "avro"}}
    assert decoded_value(loaded, topic, b'{"user_id": "u1"}') is None  # not the wire format: bytes shown
    assert decoded_value(loaded, "another-topic", raw) is None  # no schema declared: bytes shown
