"""Awaiting a request that will never complete: its stored value cannot be read (status `corrupt`,
issue 17) or its split gave up (status `aborted`, issue 21): the wait fails, never waits forever
and never succeeds."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import pytest
from confluent_kafka import Producer

from kafka_workflows.messages import encode_value
from kafka_workflows.store import (
    RequestState,
    abort_command,
    complete_command,
    ensure_store_topics,
    parse_command,
    partition_for,
    progress_command,
    store_topic,
)
from kafka_workflows.store.follower import stop_readers
from kafka_workflows_airflow.sensors.completion import AwaitCompletionSensor
from kafka_workflows_airflow.triggers.completion import StoreCompletionTrigger
from tests.helpers.aggregation import unique

pytestmark = pytest.mark.integration


@pytest.fixture(autouse=True, scope="module")
def _no_reader_outlives_the_module() -> Iterator[None]:
    yield
    stop_readers()


def _first_event(trigger: StoreCompletionTrigger) -> dict[str, Any]:
    async def first() -> dict[str, Any]:
        async for event in trigger.run():
            return event.payload  # type: ignore[no-any-return]
        raise AssertionError("no event")

    return asyncio.run(first())


@pytest.mark.parametrize("garbage", [b"\xff\x00 secret-content, not JSON", b"[1, 2]",
                                     b'{"request_id": "broken", "status": "running", "completed": "many"}'])
def test_awaiting_a_request_whose_value_cannot_be_read_fails_as_corrupt(
        airflow_db: None, kafka_connection: str, kafka_config: dict[str, Any], garbage: bytes) -> None:
    from airflow.sdk.exceptions import AirflowFailException

    store = unique("contacts")
    ensure_store_topics(kafka_config, store)
    producer = Producer(kafka_config)  # anyone may write to S.store
    producer.produce(store_topic(store), garbage, key=b"broken", partition=partition_for("broken", 3))
    assert producer.flush(10) == 0

    for end_from_trigger in (False, True):
        event = _first_event(StoreCompletionTrigger(request_id="broken", store=store, deadline=time.time() + 30,
                                                    end_from_trigger=end_from_trigger, linger=0.5))
        assert event["status"] == "corrupt", "the wait ends as corrupt (not a timeout, never a success)"
        assert event["value"]["status"] == "corrupt" and b"secret" not in event["message"].encode()
        sensor = AwaitCompletionSensor(task_id="await", request_id="broken", store=store)
        with pytest.raises(AirflowFailException, match=rf"request broken is corrupt in store '{store}'"):
            sensor.execute_complete({}, event)  # type: ignore[arg-type]

    poking = AwaitCompletionSensor(task_id="await", request_id="broken", store=store, deferrable=False)
    with pytest.raises(AirflowFailException, match="is corrupt"):
        poking.poke({})  # type: ignore[arg-type]


def test_awaiting_a_request_whose_split_gave_up_fails_as_aborted_with_the_reason(
        airflow_db: None, kafka_connection: str, kafka_config: dict[str, Any]) -> None:
    """A pipelined split that failed for good after committing chunks ends its request `aborted`:
    the await fails at once with the reason, never succeeds and never waits for a total."""
    from airflow.sdk.exceptions import AirflowFailException

    store = unique("contacts")
    ensure_store_topics(kafka_config, store)
    state = RequestState.new("gave-up", time.time())  # what the store processor writes for these commands
    for command in (progress_command(store, "gave-up", 20, 44), complete_command(store, "gave-up", 3),
                    abort_command(store, "gave-up", "MalformedCsvError: contacts.csv: line 54 is not UTF-8 text")):
        state.apply(parse_command(command.key, command.value, "test"), time.time())
    producer = Producer(kafka_config)
    producer.produce(store_topic(store), encode_value(state.to_value()), key=b"gave-up",
                     partition=partition_for("gave-up", 3))
    assert producer.flush(10) == 0

    for end_from_trigger in (False, True):
        event = _first_event(StoreCompletionTrigger(request_id="gave-up", store=store, deadline=time.time() + 30,
                                                    end_from_trigger=end_from_trigger, linger=0.5))
        assert event["status"] == "aborted" and event["value"]["split"] == {"jobs": 20, "rows": 44}
        sensor = AwaitCompletionSensor(task_id="await", request_id="gave-up", store=store)
        with pytest.raises(AirflowFailException, match=rf"request gave-up was aborted in store '{store}'.*line 54"):
            sensor.execute_complete({}, event)  # type: ignore[arg-type]
    poking = AwaitCompletionSensor(task_id="await", request_id="gave-up", store=store, deferrable=False)
    with pytest.raises(AirflowFailException, match="was aborted"):
        poking.poke({})  # type: ignore[arg-type]
