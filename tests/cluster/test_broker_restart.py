"""One broker, SIGKILLed and restarted mid-import (issue 12's report): the import still finishes exactly.

Everything is away for as long as the broker takes to come back: every partition leader, the
group and transaction coordinators. The worker reporting jobs to a store and the store processor
(both run by the spec runner's supervisor, as `kafka-workflows worker` runs them) must ride it
out: the request ends `succeeded` with completed == total, and no transaction is left open.
"""

from __future__ import annotations

import shutil
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import pytest
from confluent_kafka import IsolationLevel
from confluent_kafka.admin import AdminClient

from kafka_workflows.kafka.admin import TopicSpec, end_offsets, ensure_topics
from kafka_workflows.messages import Message
from kafka_workflows.split.jobs import produce_jobs
from kafka_workflows.store import StoreClient, StoreProcessor, ensure_store_topics, events_topic, store_topic
from kafka_workflows.supervise import Supervised
from kafka_workflows.worker import Worker
from stack.broker import Broker, free_port
from tests.conftest import STATE
from tests.helpers.kafka import read_all, start_in_thread, stop_thread, wait_for

pytestmark = pytest.mark.integration


@pytest.fixture
def lone_broker() -> Iterator[Broker]:
    """A broker of this test alone: it is killed, which the session's broker must never be."""
    data = Path(tempfile.mkdtemp(prefix="kafka-lone-", dir=STATE))
    instance = Broker(data, port=free_port()).start()
    yield instance
    instance.stop()
    shutil.rmtree(data, ignore_errors=True)


def _job(message: Message, handled: Counter[int], lock: threading.Lock) -> None:
    time.sleep(0.02)
    with lock:
        handled[int(message.value["i"])] += 1


def _status(client: StoreClient, request: str) -> str | None:
    try:
        return (client.get(request, timeout=10) or {}).get("status")
    except Exception:  # noqa: BLE001 - still recovering: an open transaction, a coordinator loading
        return None


def test_a_single_broker_sigkilled_and_restarted_mid_import(lone_broker: Broker) -> None:
    config = {"bootstrap.servers": lone_broker.bootstrap_servers}
    suffix = uuid.uuid4().hex[:8]
    store, jobs, request, total = f"s{suffix}", f"jobs-{suffix}", f"r-{suffix}", 1000
    ensure_store_topics(config, store)
    ensure_topics(config, [TopicSpec(jobs, 3)])
    handled: Counter[int] = Counter()
    lock = threading.Lock()
    units = [Supervised("worker", partial(Worker, config, [jobs], f"w-{suffix}", lambda m: _job(m, handled, lock),
                                          store=store)),
             Supervised("store", partial(StoreProcessor, config, store, commit_interval=0.2))]
    threads = [start_in_thread(unit) for unit in units]
    try:
        produce_jobs(config, f"tx-{suffix}", jobs, request, ((f"job-{i}", {"i": i}) for i in range(total)), store)
        wait_for(lambda: sum(handled.values()) > 100, 60, "the worker handling jobs")
        assert sum(handled.values()) < total
        lone_broker.kill()
        time.sleep(5)
        lone_broker.start()
        client = StoreClient(config, store)
        wait_for(lambda: _status(client, request) == "succeeded", 300,
                 "the request to succeed after the broker came back", 1)
        for thread, unit in zip(threads, units, strict=True):
            assert thread.is_alive(), f"{unit.name} stopped for good"
    finally:
        for thread, unit in zip(threads, units, strict=True):
            stop_thread(unit, thread)
    value = StoreClient(config, store).get(request)
    assert value is not None and (value["completed"], value["failed"], value["total"]) == (total, 0, total)
    assert set(handled) == set(range(total))
    assert [m.key().decode() for m in read_all(config, events_topic(store))] == [request]
    admin = AdminClient(config)
    for topic in (store_topic(store), events_topic(store)):
        wait_for(lambda t=topic: end_offsets(admin, t, range(3), IsolationLevel.READ_COMMITTED)
                 == end_offsets(admin, t, range(3)), 30, f"last stable offset == high watermark on {topic}")
    print(f"restarts after giving up: {[unit.restarts for unit in units]}")
