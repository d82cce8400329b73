"""produce_jobs against the real broker: all-or-nothing, safe to retry, zombie attempts fenced."""

from __future__ import annotations

import json
import signal
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

from kafka_workflows import headers as h
from kafka_workflows.split.jobs import JobsError, jobs_transactional_id, produce_jobs
from kafka_workflows.store import RUNNING, StoreClient, StoreProcessor, commands_topic
from tests.helpers.aggregation import spawn, unique
from tests.helpers.kafka import read_all, wait_for

pytestmark = pytest.mark.integration


def _jobs(count: int) -> Iterator[tuple[str, dict[str, Any]]]:
    for n in range(count):
        yield f"contact-{n}", {"row": n, "email": f"user{n}@example.com"}


def _uncommitted_count(config: dict[str, Any], topic: str) -> int:
    """Messages in `topic` including those of open or aborted transactions (read_uncommitted)."""
    consumer = Consumer({**config, "group.id": f"peek-{uuid.uuid4().hex}", "isolation.level": "read_uncommitted",
                         "enable.auto.commit": False, "enable.partition.eof": True})
    partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
    consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
    count, eof = 0, set()
    deadline = time.monotonic() + 10
    try:
        while len(eof) < len(partitions) and time.monotonic() < deadline:
            for msg in consumer.consume(500, 0.1):
                if msg.error():
                    eof.add(msg.partition())
                else:
                    count += 1
    finally:
        consumer.close()
    return count


def _inits(config: dict[str, Any], store: str, request_id: str) -> list[dict[str, Any]]:
    values = [json.loads(m.value()) for m in read_all(config, commands_topic(store)) if m.key() == request_id.encode()]
    return [v for v in values if v["op"] == "init"]


def test_jobs_and_init_commit_together_and_a_retry_produces_nothing(kafka_config: dict[str, Any]) -> None:
    topic, store, request_id = unique("jobs"), unique("store"), unique("req")
    tid = jobs_transactional_id("contacts_import", "split", "manual__2026-01-01", 0)
    result = produce_jobs(kafka_config, tid, topic, request_id, _jobs(20), store, workflow="contacts_import",
                          headers={h.TRACEPARENT: "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"},
                          meta={"file": "contacts.csv"})
    assert (result.produced, result.total, result.already_registered) == (20, 20, False)
    assert sum(result.partitions.values()) == 20

    messages = read_all(kafka_config, topic, expected=20)
    assert len(messages) == 20
    headers = [h.decode(m.headers()) for m in messages]
    assert sorted(int(x[h.JOB_INDEX]) for x in headers) == list(range(20))
    assert {(x[h.REQUEST_ID], x[h.WORKFLOW], x[h.ATTEMPT]) for x in headers} == {(request_id, "contacts_import", "1")}
    assert all(x[h.TRACEPARENT].startswith("00-0af7") for x in headers)
    by_index = {int(x[h.JOB_INDEX]): json.loads(m.value()) for x, m in zip(headers, messages, strict=True)}
    assert by_index[7] == {"row": 7, "email": "user7@example.com"}
    assert _inits(kafka_config, store, request_id) == [
        {"op": "init", "request_id": request_id, "total": 20, "meta": {"file": "contacts.csv"}}]

    # No processor has run yet: the init is found among the commands it has not applied.
    client = StoreClient(kafka_config, store)
    assert client.get(request_id) is None
    assert client.registered(request_id)["status"] == "init-pending"
    again = produce_jobs(kafka_config, tid, topic, request_id, _jobs(20), store)
    assert (again.produced, again.already_registered, again.total) == (0, True, 20)

    processor = StoreProcessor(kafka_config, store, commit_interval=0.2)
    ready = threading.Event()
    thread = threading.Thread(target=processor.run, kwargs={"ready": ready}, daemon=True)
    thread.start()
    try:
        assert ready.wait(30)
        value = wait_for(lambda: client.get(request_id), 30, "the init applied", interval=0.3)
        assert (value["total"], value["status"], value["meta"]) == (20, RUNNING, {"file": "contacts.csv"})
        third = produce_jobs(kafka_config, tid, topic, request_id, _jobs(20), store)
        assert (third.produced, third.already_registered, third.existing) == (0, True, value)
    finally:
        processor.stop()
        thread.join(30)
    assert len(read_all(kafka_config, topic)) == 20
    assert len(_inits(kafka_config, store, request_id)) == 1


def test_attempt_killed_mid_transaction_is_fenced_by_its_retry(kafka_config: dict[str, Any], tmp_path: Path) -> None:
    topic, store, request_id = unique("jobs"), unique("store"), unique("req")
    tid = jobs_transactional_id("contacts_import", "split", request_id)
    progress = tmp_path / "progress"
    attempt = spawn(kafka_config, "produce-jobs", "--transactional-id", tid, "--topic", topic, "--request",
                    request_id, "--store", store, "--count", "300", "--sleep", "0.02", "--progress", str(progress),
                    log=tmp_path / "attempt.log")
    try:
        # Killed once some jobs reached the broker but long before the 300th (6 s) and the commit.
        wait_for(lambda: attempt.poll() is not None or (progress.exists() and _uncommitted_count(kafka_config, topic)
                                                         >= 30), 60, "30 uncommitted jobs on the broker", 0.3)
        assert attempt.poll() is None, f"the attempt ended early; see {tmp_path / 'attempt.log'}"
        attempt.send_signal(signal.SIGKILL)
        attempt.wait(10)
    finally:
        if attempt.poll() is None:
            attempt.kill()
    assert len(progress.read_text().split()) < 300
    orphaned = _uncommitted_count(kafka_config, topic)
    assert orphaned >= 30

    retry = produce_jobs(kafka_config, tid, topic, request_id, ((f"job-{n}", {"n": n}) for n in range(300)), store)
    assert (retry.produced, retry.already_registered) == (300, False)
    messages = read_all(kafka_config, topic, expected=300)
    indices = Counter(int(h.decode(m.headers())[h.JOB_INDEX]) for m in messages)
    assert len(messages) == 300 and indices == Counter(range(300))  # exactly one set, no aborted job visible
    assert _uncommitted_count(kafka_config, topic) >= 300 + orphaned  # the killed attempt's jobs are there, aborted
    assert len(_inits(kafka_config, store, request_id)) == 1


def test_a_failing_jobs_iterator_produces_nothing(kafka_config: dict[str, Any]) -> None:
    topic, store, request_id = unique("jobs"), unique("store"), unique("req")
    tid = f"kw-jobs.{request_id}"

    def broken() -> Iterator[tuple[str, dict[str, int]]]:
        yield from (("k", {"n": n}) for n in range(5))
        raise ValueError("contacts.csv row 6: missing email")

    with pytest.raises(ValueError, match="row 6"):
        produce_jobs(kafka_config, tid, topic, request_id, broken(), store)
    with pytest.raises(JobsError, match="yielded 3 job\\(s\\) but total=4"):
        produce_jobs(kafka_config, tid, topic, request_id, _jobs(3), store, total=4)
    assert read_all(kafka_config, topic) == []
    assert read_all(kafka_config, commands_topic(store)) == []

    fixed = produce_jobs(kafka_config, tid, topic, request_id, _jobs(4), store, total=4)
    assert (fixed.produced, fixed.total) == (4, 4)
    assert len(read_all(kafka_config, topic, expected=4)) == 4


def test_zero_jobs_register_a_total_of_zero(kafka_config: dict[str, Any]) -> None:
    topic, store, request_id = unique("jobs"), unique("store"), unique("req")
    result = produce_jobs(kafka_config, f"kw-jobs.{request_id}", topic, request_id, iter(()), store)
    assert (result.produced, result.total) == (0, 0)
    assert _inits(kafka_config, store, request_id)[0]["total"] == 0
