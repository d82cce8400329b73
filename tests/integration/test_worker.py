"""The companion worker against the real broker: at-least-once, order, SIGTERM, bad input."""

from __future__ import annotations

import gc
import signal
import subprocess
import threading
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient

from kafka_workflows.errors import BrokerUnreachableError, DeliveryError, HandlerImportError, NonRetryableError
from kafka_workflows.handlers import batch_handler
from kafka_workflows.kafka.admin import TopicSpec, ensure_topics
from kafka_workflows.kafka.config import check_reachable
from kafka_workflows.kafka.producer import RequestProducer
from kafka_workflows.messages import Message, MessageBatch
from kafka_workflows.retry.policy import BlockingRetry, RetryPolicy
from kafka_workflows.retry.topics import dead_letter_topic
from kafka_workflows.worker import Worker
from tests.helpers.kafka import (
    committed,
    group_members,
    librdkafka_threads,
    read_all,
    records,
    start_in_thread,
    start_worker,
    stop_thread,
    wait_for,
)

pytestmark = pytest.mark.integration
HANDLER = "tests.helpers.handlers.record"


def _produce(config: dict[str, Any], topic: str, items: list[tuple[str, Any]]) -> None:
    producer = RequestProducer(config)
    for key, value in items:
        producer.send(topic, value, key=key)
    producer.flush()


def test_handler_failure_leaves_offset_uncommitted_and_message_returns_after_restart(
        kafka_config: dict[str, Any], topic: str, group: str) -> None:
    ensure_topics(kafka_config, [TopicSpec(topic, partitions=1)])
    _produce(kafka_config, topic, [("k", {"n": n}) for n in range(5)])
    seen: list[int] = []

    def fails_on_three(message: Message) -> None:
        if message.value["n"] == 3:
            raise RuntimeError("provider down")
        seen.append(message.value["n"])

    policy = RetryPolicy(blocking=BlockingRetry(initial=0.2, max=0.2))
    worker = Worker(kafka_config, [topic], group, fails_on_three, policy=policy)
    thread = start_in_thread(worker)
    wait_for(lambda: worker.stats.failed >= 3, 30, "three failed attempts on n=3")
    worker.stop()
    thread.join(30)
    assert seen == [0, 1, 2]  # 4 never ran: the partition is blocked behind 3
    assert committed(kafka_config, group, topic) == {0: 3}  # the offset of n=3: not committed

    after: list[int] = []
    worker = Worker(kafka_config, [topic], group, lambda m: after.append(m.value["n"]))
    thread = start_in_thread(worker)
    wait_for(lambda: len(after) >= 2, 30, "n=3 and n=4 after restart")
    worker.stop()
    thread.join(30)
    assert after == [3, 4]
    assert committed(kafka_config, group, topic) == {0: 5}


def test_sigterm_mid_stream_loses_nothing(kafka_config: dict[str, Any], topic: str, group: str,
                                          tmp_path: Path) -> None:
    ensure_topics(kafka_config, [TopicSpec(topic, partitions=3)])
    total = 300
    _produce(kafka_config, topic, [(f"user-{n % 17}", {"n": n, "sleep": 0.01}) for n in range(total)])
    record = tmp_path / "handled.jsonl"
    worker = start_worker(kafka_config, topic, group, HANDLER, record)
    wait_for(lambda: len(records(record)) >= 60, 60, "60 handled before SIGTERM")
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(30) == 0
    first_run = [r["value"]["n"] for r in records(record)]
    assert 60 <= len(first_run) < total
    offsets = committed(kafka_config, group, topic)
    assert sum(max(o, 0) for o in offsets.values()) == len(first_run), "SIGTERM commits what was handled"

    worker = start_worker(kafka_config, topic, group, HANDLER, record)
    wait_for(lambda: len(records(record)) >= total, 60, "the rest after restart")
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(30) == 0
    handled = [r["value"]["n"] for r in records(record)]
    assert sorted(handled) == list(range(total)), "every message handled exactly once across the restart"


def test_per_key_order_holds_across_three_partitions_and_two_workers(
        kafka_config: dict[str, Any], topic: str, group: str, tmp_path: Path) -> None:
    ensure_topics(kafka_config, [TopicSpec(topic, partitions=3)])
    record = tmp_path / "handled.jsonl"
    workers = [start_worker(kafka_config, topic, group, HANDLER, record) for _ in range(2)]
    try:
        wait_for(lambda: group_members(kafka_config, group) == 2, 60, "both workers to own partitions", 0.5)
        keys, per_key = 12, 25
        _produce(kafka_config, topic, [(f"user-{k}", {"seq": s, "user": k})
                                       for s in range(per_key) for k in range(keys)])
        wait_for(lambda: len(records(record)) >= keys * per_key, 60, "all messages handled")
    finally:
        for w in workers:
            w.send_signal(signal.SIGTERM)
        for w in workers:
            w.wait(30)
    by_key: dict[str, list[int]] = defaultdict(list)
    pids_by_partition: dict[int, set[int]] = defaultdict(set)
    for r in sorted(records(record), key=lambda r: r["t"]):
        by_key[r["key"]].append(r["value"]["seq"])
        pids_by_partition[r["partition"]].add(r["pid"])
    assert len(by_key) == keys
    for key, seqs in by_key.items():
        assert seqs == list(range(per_key)), f"{key} handled out of order: {seqs}"
    assert len({pid for pids in pids_by_partition.values() for pid in pids}) == 2, "both workers took part"
    assert all(len(pids) == 1 for pids in pids_by_partition.values()), "a partition belongs to one worker"


@pytest.mark.parametrize("kind", ["message", "batch"])
def test_a_long_batch_commits_its_progress_as_it_goes(kafka_config: dict[str, Any], topic: str, group: str,
                                                       kind: str) -> None:
    """3 x 20 messages of 0.1 s in one consumed batch: a crash must not repeat all of them.

    A batch handler's call is its unit of work, so it gets one partition's 20 at a time; what
    is done is stored between calls."""
    ensure_topics(kafka_config, [TopicSpec(topic, partitions=3)])
    producer = RequestProducer(kafka_config)
    for n in range(60):
        producer.send(topic, {"n": n}, key=f"k{n}", partition=n % 3)
    producer.flush()
    calls: list[int] = []

    def slow(message: Message) -> None:
        time.sleep(0.1)
        calls.append(message.offset)

    @batch_handler
    def slow_batch(messages: MessageBatch) -> None:
        for message in messages:
            slow(message)

    worker = Worker(kafka_config, [topic], group, slow if kind == "message" else slow_batch)
    thread = start_in_thread(worker)
    try:
        wait_for(lambda: len(calls) >= 35, 30, "35 messages handled")
        progress = sum(max(0, offset) for offset in committed(kafka_config, group, topic).values())
        still_running = len(calls) < 60
    finally:
        stop_thread(worker, thread)
    assert still_running, "the test needs the batch to be in progress when it reads the committed offsets"
    assert progress >= 10, f"{progress} committed after {len(calls)} handled: progress is not being stored"


def test_a_dead_letter_write_that_fails_stops_the_worker_and_no_offset_after_it_is_committed(
        kafka_config: dict[str, Any], topic: str, group: str) -> None:
    """The dead-letter topic refuses the write (max.message.bytes); a second's progress store finds
    it out mid-batch. The worker must stop, and nothing from that message on may be committed,
    even by the store at the end of the batch (a second flush has nothing left to report)."""
    ensure_topics(kafka_config, [TopicSpec(topic, partitions=1),
                                 TopicSpec(dead_letter_topic(topic, group), 1, config={"max.message.bytes": "200"})])
    _produce(kafka_config, topic, [("bad", {"bad": True, "pad": "x" * 1000}),
                                   *((f"k{n}", {"n": n}) for n in range(20))])
    handled: list[int] = []

    def handler(message: Message) -> None:
        if message.value.get("bad"):
            raise NonRetryableError("cannot ever work")
        time.sleep(0.1)
        handled.append(message.offset)

    clients_before = librdkafka_threads()
    worker = Worker(kafka_config, [topic], group, handler)
    failures: list[BaseException] = []
    ready = threading.Event()

    def run() -> None:
        try:
            worker.run(ready)
        except BaseException as exc:  # noqa: BLE001 - the test looks at it
            failures.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    assert ready.wait(30)
    wait_for(lambda: not thread.is_alive(), 30, "the worker to stop on the failed write")
    assert len(failures) == 1 and isinstance(failures[0], DeliveryError), failures
    assert "too large" in str(failures[0]).lower(), failures[0]
    assert handled, "slow messages were handled after the failed write, before the progress store"
    assert committed(kafka_config, group, topic)[0] < 1, "the message that could not be moved comes back"
    # Stopped on an error, it closed every client it had (consumers, its writes' and its status's
    # producers), though the error is still held here with the worker: a runner restarting it leaks none.
    wait_for(lambda: librdkafka_threads() <= clients_before, 30, "the stopped worker's librdkafka threads to end")


def test_non_json_request_is_dead_lettered_and_the_worker_goes_on(
        kafka_config: dict[str, Any], topic: str, group: str) -> None:
    ensure_topics(kafka_config, [TopicSpec(topic, partitions=1)])
    producer = RequestProducer(kafka_config)
    producer.send(topic, {"n": 1}, key="a")
    producer.send(topic, b"this is not json", key="b", raw=True, headers={"kw-request-id": "r-9"})
    producer.send(topic, {"n": 2}, key="c")
    producer.flush()
    handled: list[int] = []
    worker = Worker(kafka_config, [topic], group, lambda m: handled.append(m.value["n"]))
    thread = start_in_thread(worker)
    wait_for(lambda: len(handled) >= 2, 30, "the messages around the bad one")
    worker.stop()
    thread.join(30)
    assert handled == [1, 2]
    assert committed(kafka_config, group, topic) == {0: 3}
    [dead] = read_all(kafka_config, dead_letter_topic(topic, group), expected=1)
    headers = {k: v.decode() for k, v in dead.headers()}
    assert dead.value() == b"this is not json" and dead.key() == b"b"
    assert headers["kw-original-topic"] == topic and headers["kw-original-offset"] == "1"
    assert headers["kw-original-partition"] == "0" and headers["kw-consumer-group"] == group
    assert headers["kw-error-type"] == "MessageDecodeError" and "value is not JSON" in headers["kw-error-message"]
    assert headers["kw-request-id"] == "r-9"


def test_bad_broker_address_is_named_and_its_probe_client_is_gone() -> None:
    def admin_clients() -> int:
        gc.collect()
        # type(), not isinstance(): the latter asks lazy proxies (Airflow's) for __class__, which imports.
        return sum(type(o) is AdminClient for o in gc.get_objects())

    before = admin_clients()
    with pytest.raises(BrokerUnreachableError, match=r"bootstrap.servers='127.0.0.1:1'") as caught:
        check_reachable({"bootstrap.servers": "127.0.0.1:1"}, timeout=3)
    # Kept, as a task runner keeps a task's error: a client reachable from it would retry port 1
    # for the rest of the process (it did, logging through the rest of the suite).
    assert caught.value.__cause__ is not None
    assert admin_clients() == before


def test_unknown_handler_fails_at_start_before_consuming(kafka_config: dict[str, Any], topic: str,
                                                         group: str, tmp_path: Path) -> None:
    with pytest.raises(HandlerImportError, match="no_such_module"):
        Worker(kafka_config, [topic], group, "no_such_module.handle")
    proc = start_worker(kafka_config, topic, group, "no_such_module.handle", tmp_path / "r.jsonl",
                        log=tmp_path / "worker.log")
    assert proc.wait(30) == 2
    assert "handler 'no_such_module.handle': cannot import module 'no_such_module'" in (
        tmp_path / "worker.log").read_text()
    assert topic not in read_topics(kafka_config), "nothing was created or consumed"


def read_topics(config: dict[str, Any]) -> set[str]:
    from confluent_kafka.admin import AdminClient

    return set(AdminClient(config).list_topics(timeout=10).topics)


def test_two_workers_with_retry_topics_share_the_request_topic(
        kafka_config: dict[str, Any], topic: str, group: str, tmp_path: Path) -> None:
    """A worker with non-blocking retries reads the request topic and its retry topics. Two replicas
    must split the REQUEST topic's partitions between them: an assignor that only balances the count
    of partitions (KIP-848's default `uniform`) once gave one replica all of them and the other only
    the retry topics, so the second replica sat idle. (The classic protocol's cooperative-sticky
    assignor still does that: see kafka/group_protocol.py.)"""
    ensure_topics(kafka_config, [TopicSpec(topic, partitions=6)])
    record = tmp_path / "handled.jsonl"
    policy = '{"non_blocking": {"intervals": [30, 300]}}'
    admin = AdminClient(dict(kafka_config))

    def request_partitions() -> list[list[int]]:
        try:
            members = admin.describe_consumer_groups([group])[group].result().members
        except KafkaException:  # the group's coordinator is still loading
            return []
        return sorted(sorted(tp.partition for tp in m.assignment.topic_partitions if tp.topic == topic)
                      for m in members if m.assignment)

    def start() -> subprocess.Popen[bytes]:
        return start_worker(kafka_config, topic, group, HANDLER, record, "--policy", policy, "--partitions", "6",
                            env={"KW_GROUP_PROTOCOL": "consumer"})

    workers = [start()]
    try:
        # The first replica owns everything; then a second one joins (a scale-up, a rolling restart).
        wait_for(lambda: request_partitions() == [list(range(6))], 90, "the first worker owning the request topic", 0.5)
        workers.append(start())
        wait_for(lambda: len(request_partitions()) == 2, 90, "the second worker in the group", 0.5)
        time.sleep(3)  # let the group settle
        wait_for(lambda: [len(p) for p in request_partitions()] == [3, 3], 60, "three request partitions each", 0.5)
        _produce(kafka_config, topic, [(f"user-{k}", {"seq": 0, "user": k}) for k in range(60)])
        wait_for(lambda: len(records(record)) >= 60, 60, "all messages handled")
    finally:
        for w in workers:
            w.send_signal(signal.SIGTERM)
        for w in workers:
            w.wait(30)
    assert len({r["pid"] for r in records(record)}) == 2, "both workers handled requests"
