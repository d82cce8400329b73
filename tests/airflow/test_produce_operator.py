"""ProduceRequestsOperator in a real DAG run (dag.test) against the real broker."""

from __future__ import annotations

import json
from typing import Any

import pendulum
import pytest
from sqlalchemy import select

from kafka_workflows_airflow.operators import ProduceRequestsOperator
from tests.airflow.dags.produce_test_dags import produce_dag, produce_one_dag
from tests.helpers.kafka import read_all

pytestmark = [pytest.mark.airflow, pytest.mark.integration]
DAY = pendulum.datetime(2026, 11, 27, tz="UTC")


def _return_value(dag_id: str, run_id: str, task_id: str) -> Any:
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    with create_session() as session:
        row = session.scalar(select(XComModel).where(
            XComModel.dag_id == dag_id, XComModel.run_id == run_id, XComModel.task_id == task_id,
            XComModel.key == "return_value"))
        assert row is not None, f"{task_id} pushed no return value"
        value = row.value
    return json.loads(value) if isinstance(value, str) else value


def test_requests_arrive_keyed_with_headers_and_xcom_names_them(
        airflow_db: None, kafka_connection: str, topic: str) -> None:
    users = [{"user_id": f"u{i % 4}", "n": i} for i in range(12)]
    run = produce_dag.test(logical_date=DAY, run_conf={"topic": topic, "requests": users})
    assert run.state == "success"

    messages = read_all({"bootstrap.servers": kafka_connection}, topic, expected=len(users))
    assert len(messages) == len(users)
    request_id = f"produce_operator_test.produce.{run.run_id}"
    partition_of: dict[str, int] = {}
    for msg in messages:
        value = json.loads(msg.value())
        assert msg.key().decode() == value["user_id"]
        assert partition_of.setdefault(value["user_id"], msg.partition()) == msg.partition()
        assert dict((k, v.decode()) for k, v in msg.headers()) == {
            "kw-request-id": request_id, "kw-workflow": "renewals-test", "kw-attempt": "1"}
    by_key = {u: [json.loads(m.value())["n"] for m in messages if m.key().decode() == u] for u in partition_of}
    assert all(ns == sorted(ns) for ns in by_key.values()), "per-key production order kept"

    xcom = _return_value("produce_operator_test", run.run_id, "produce")
    assert xcom["request_id"] == request_id and xcom["topic"] == topic and xcom["count"] == 12
    assert xcom["partitions"] == sorted({m.partition() for m in messages})
    for partition, (first, last) in xcom["offsets"].items():
        offsets = [m.offset() for m in messages if m.partition() == int(partition)]
        assert (first, last) == (min(offsets), max(offsets))


def test_a_request_without_its_key_field_fails_the_task_and_produces_nothing(
        airflow_db: None, kafka_connection: str, topic: str) -> None:
    requests = [{"user_id": "u1"}, {"name": "no id"}]
    op = ProduceRequestsOperator(task_id="produce", topic=topic, requests=requests, key_field="user_id")
    with pytest.raises(ValueError, match=r"produce: requests\[1\] has no field 'user_id'"):
        op._keyed_requests()
    assert produce_dag.test(logical_date=DAY, run_conf={"topic": topic, "requests": requests}).state == "failed"
    from confluent_kafka.admin import AdminClient

    assert topic not in AdminClient({"bootstrap.servers": kafka_connection}).list_topics(timeout=10).topics


def test_an_unreachable_broker_fails_the_task(airflow_db: None, monkeypatch: pytest.MonkeyPatch,
                                               topic: str) -> None:
    monkeypatch.setenv("AIRFLOW_CONN_KAFKA_DEFAULT", json.dumps(
        {"conn_type": "kafka", "extra": {"bootstrap.servers": "127.0.0.1:1"}}))
    from kafka_workflows.errors import BrokerUnreachableError
    from kafka_workflows.kafka.config import check_reachable
    from kafka_workflows_airflow.hooks import KafkaWorkflowsHook

    with pytest.raises(BrokerUnreachableError, match=r"127\.0\.0\.1:1"):
        check_reachable(KafkaWorkflowsHook().get_kafka_config(), timeout=2)
    assert produce_one_dag.test(logical_date=DAY, run_conf={"topic": topic, "user": "u1"}).state == "failed"


def test_one_templated_request(airflow_db: None, kafka_connection: str, topic: str) -> None:
    run = produce_one_dag.test(logical_date=DAY, run_conf={"topic": topic, "user": "u7"})
    assert run.state == "success"
    [msg] = read_all({"bootstrap.servers": kafka_connection}, topic, expected=1)
    assert msg.key() == b"u7" and json.loads(msg.value()) == {"user": "u7"}


def test_value_and_requests_are_mutually_exclusive() -> None:
    with pytest.raises(ValueError, match="exactly one of `value`"):
        ProduceRequestsOperator(task_id="p", topic="t")
    with pytest.raises(ValueError, match="exactly one of `value`"):
        ProduceRequestsOperator(task_id="p", topic="t", value={}, requests=[])
