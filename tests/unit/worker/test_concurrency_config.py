"""Worker(concurrency=...) settings, checked at construction (no broker needed)."""

from __future__ import annotations

import asyncio
from functools import partial

import pytest
from confluent_kafka import Message as KafkaMessage

from kafka_workflows.errors import ConfigError
from kafka_workflows.handlers import batch_handler
from kafka_workflows.messages import Message, MessageBatch
from kafka_workflows.spec.model import WorkerSpec
from kafka_workflows.supervise import shared_metrics
from kafka_workflows.worker import Worker
from kafka_workflows.worker.runners import AsyncRunner, ThreadRunner

CONFIG = {"bootstrap.servers": "127.0.0.1:1"}


def test_concurrency_out_of_range_is_named() -> None:
    with pytest.raises(ConfigError, match="concurrency must be between 1 and 10000, got 0"):
        Worker(CONFIG, ["t"], "g", lambda m: None, concurrency=0)


def test_a_batch_handler_takes_no_concurrency() -> None:
    @batch_handler
    def bulk(messages: MessageBatch) -> None: ...

    with pytest.raises(ConfigError, match="concurrency is for message handlers"):
        Worker(CONFIG, ["t"], "g", bulk, concurrency=8)


def test_async_handlers_run_on_an_event_loop_and_plain_ones_on_threads() -> None:
    async def awaits(message: Message) -> None: ...

    assert isinstance(Worker(CONFIG, ["t"], "g", awaits, concurrency=8).keyed.runner, AsyncRunner)  # type: ignore[union-attr]
    assert isinstance(Worker(CONFIG, ["t"], "g", lambda m: None, concurrency=8).keyed.runner, ThreadRunner)  # type: ignore[union-attr]
    assert Worker(CONFIG, ["t"], "g", lambda m: None).keyed is None  # 1: today's one-at-a-time path


def test_without_concurrency_an_async_handler_is_awaited_to_the_end() -> None:
    seen: list[int] = []

    async def awaits(message: Message) -> None:
        await asyncio.sleep(0)
        seen.append(message.value["n"])

    worker = Worker(CONFIG, ["t"], "g", awaits)
    worker.dispatch.handler(Message(KafkaMessage(topic="t", partition=0, offset=0, value=b'{"n": 7}')))
    assert seen == [7]


def test_a_concurrent_worker_rebuilt_by_its_supervisor_counts_into_the_same_metrics() -> None:
    """Issue 17 defect 6: the rebuild died on DuplicateTimeseries (kw_worker_in_flight_messages)."""
    build = shared_metrics(partial(Worker, CONFIG, ["t"], "g", lambda m: None, concurrency=8), None)
    first, again = build(), build()
    assert again.metrics is first.metrics
    again.keyed.in_flight.set(3)  # type: ignore[union-attr]
    assert first.metrics.registry.get_sample_value("kw_worker_in_flight_messages", {"group": "g"}) == 3


def test_the_spec_takes_concurrency() -> None:
    spec = WorkerSpec(name="w", topics=["t"], group="g", handler="a.b", concurrency=64)
    assert spec.concurrency == 64
    with pytest.raises(ValueError, match="concurrency"):
        WorkerSpec(name="w", topics=["t"], group="g", handler="a.b", concurrency=0)
