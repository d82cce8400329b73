"""An await ended by the triggerer (end_from_trigger): its `await <store>` span is recorded there, a child of
the deferring task's span, and its outlets are recorded by the task after it (`<id>_assets`), with the
request's summary, whichever form the await's XCom comes back in."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

import pytest
from confluent_kafka import Producer
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from kafka_workflows.messages import encode_value
from kafka_workflows.observe import tracing
from kafka_workflows.store import (
    RequestState,
    complete_command,
    ensure_store_topics,
    init_command,
    parse_command,
    partition_for,
    store_topic,
)
from kafka_workflows.store.follower import stop_readers
from kafka_workflows_airflow.operators.assets import RecordRequestAssetsOperator
from kafka_workflows_airflow.sensors.completion import AwaitCompletionSensor
from kafka_workflows_airflow.triggers.completion import StoreCompletionTrigger
from tests.helpers.aggregation import unique

pytestmark = pytest.mark.integration

PARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


@pytest.fixture(autouse=True, scope="module")
def _no_reader_outlives_the_module() -> Iterator[None]:
    yield
    stop_readers()


def _succeeded(kafka_config: dict[str, Any], request_id: str, jobs: int) -> str:
    """A store whose request `request_id` succeeded (its value as the store processor writes it)."""
    store = unique("contacts")
    ensure_store_topics(kafka_config, store)
    state = RequestState.new(request_id, time.time())
    completes = (complete_command(store, request_id, job) for job in range(jobs))
    for command in (init_command(store, request_id, jobs), *completes):
        state.apply(parse_command(command.key, command.value, "test"), time.time())
    producer = Producer(kafka_config)
    producer.produce(store_topic(store), encode_value(state.to_value()), key=request_id.encode(),
                     partition=partition_for(request_id, 3))
    assert producer.flush(10) == 0
    return store


def _first(trigger: StoreCompletionTrigger) -> Any:
    async def first() -> Any:
        async for event in trigger.run():
            return event
        raise AssertionError("no event")

    return asyncio.run(first())


def test_a_trigger_that_ends_the_task_records_its_await_span_under_the_task_span(
        airflow_db: None, kafka_connection: str, kafka_config: dict[str, Any], spans: InMemorySpanExporter) -> None:
    from airflow.triggers.base import TaskSuccessEvent

    store = _succeeded(kafka_config, "done-1", 3)
    started = time.time() - 5
    event = _first(StoreCompletionTrigger(request_id="done-1", store=store, deadline=time.time() + 30,
                                          end_from_trigger=True, linger=0.5, traceparent=PARENT, started=started))
    assert isinstance(event, TaskSuccessEvent) and event.xcoms["return_value"]["status"] == "succeeded"
    [span] = spans.get_finished_spans()
    assert span.name == f"await {store}"
    assert (f"{span.context.trace_id:032x}", f"{span.parent.span_id:016x}") == (PARENT[3:35], PARENT[36:52])
    assert span.start_time == int(started * 1e9)
    assert dict(span.attributes) == {"kw.request_id": "done-1", "kw.store": store, "kw.status": "succeeded",
                                     "kw.total": 3, "kw.completed": 3, "kw.failed": 0}

    # Resumed on a worker instead (the default), the task records the span itself: none here.
    spans.clear()
    event = _first(StoreCompletionTrigger(request_id="done-1", store=store, deadline=time.time() + 30, linger=0.5,
                                          traceparent=PARENT, started=started))
    assert event.payload["status"] == "done" and spans.get_finished_spans() == ()


def test_a_forged_traceparent_in_the_trigger_starts_no_child_of_it(
        airflow_db: None, kafka_connection: str, kafka_config: dict[str, Any], spans: InMemorySpanExporter) -> None:
    store = _succeeded(kafka_config, "done-2", 1)
    for forged in ("", "00-" + "z" * 32 + "-b7ad6b7169203331-01", "x" * 100_000):
        spans.clear()
        _first(StoreCompletionTrigger(request_id="done-2", store=store, deadline=time.time() + 30,
                                      end_from_trigger=True, linger=0.5, traceparent=forged, started=None))
        [span] = spans.get_finished_spans()
        assert span.parent is None and (not forged or forged[:40] not in str(dict(span.attributes)))


def test_the_sensor_hands_its_span_context_and_start_to_a_trigger_that_ends_it(spans: InMemorySpanExporter) -> None:
    from airflow.sdk.exceptions import TaskDeferred

    started = datetime(2026, 12, 5, 8, 0, tzinfo=UTC)
    context: Any = {"ti": SimpleNamespace(try_number=1, start_date=started)}
    for end_from_trigger in (True, False):
        sensor = AwaitCompletionSensor(task_id="await", request_id="r1", store="s1", end_from_trigger=end_from_trigger)
        with tracing.span("worker.await") as task_span, pytest.raises(TaskDeferred) as deferred:
            sensor.execute(context)
        kwargs = deferred.value.trigger.serialize()[1]
        if end_from_trigger:
            task = task_span.get_span_context()
            assert kwargs["traceparent"][:52] == f"00-{task.trace_id:032x}-{task.span_id:016x}"
            assert kwargs["started"] == started.timestamp() and kwargs["end_from_trigger"] is True
        else:  # resumed on a worker, the task records its span itself
            assert (kwargs["traceparent"], kwargs["started"], kwargs["end_from_trigger"]) == (None, None, False)


@pytest.mark.parametrize("form", ["dict", "json text"])
def test_the_assets_task_records_one_event_per_outlet_with_the_summary(form: str) -> None:
    from airflow.sdk import Asset
    from airflow.sdk.execution_time.context import OutletEventAccessors

    value = {"request_id": "r1", "status": "completed_with_failures", "total": 10, "completed": 9, "failed": 1,
             "failure_reasons": {"4": "secret row content"}, "meta": {"source": "s3://bucket/contacts.csv"}}
    assets = [Asset(name="kw://contacts/imported", uri="kw://contacts/imported"), Asset(name="kw://b", uri="kw://b")]
    task = RecordRequestAssetsOperator(task_id="await_assets", result=value if form == "dict" else json.dumps(value),
                                       request_id="r1", store="contacts", outlets=assets)
    events = OutletEventAccessors()
    summary = task.execute({"outlet_events": events})  # type: ignore[arg-type]
    assert summary == {"request_id": "r1", "store": "contacts", "status": "completed_with_failures", "total": 10,
                       "completed": 9, "failed": 1}
    assert [events[asset].extra for asset in assets] == [summary, summary]


@pytest.mark.parametrize("result", [None, "", "not json {", json.dumps([1, 2]), json.dumps({"no": "status"}),
                                    "x" * 1_000_000])
def test_the_assets_task_fails_for_good_without_an_await_result_and_records_nothing(result: Any) -> None:
    from airflow.sdk import Asset
    from airflow.sdk.exceptions import AirflowFailException
    from airflow.sdk.execution_time.context import OutletEventAccessors

    asset = Asset(name="kw://contacts/imported", uri="kw://contacts/imported")
    task = RecordRequestAssetsOperator(task_id="await_assets", result=result, request_id="r1", store="contacts",
                                       outlets=[asset])
    events = OutletEventAccessors()
    with pytest.raises(AirflowFailException, match=r"await_assets: `result` must be the await task's store") as err:
        task.execute({"outlet_events": events})  # type: ignore[arg-type]
    assert len(str(err.value)) < 300, "the result is not echoed"
    assert events[asset].extra == {}
