"""Untrusted input on the real broker: no single record stops a worker, a processor or the store.

A topic holds whatever any producer wrote. Each test writes records of the wrong shape next to good
ones and checks that the good ones are handled exactly as usual, the bad ones land in a dead-letter
topic with a reason that names what is wrong (never the content), and the process goes on.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.request
import uuid
from collections.abc import Iterable
from typing import Any

import pytest
from confluent_kafka import IsolationLevel, Producer
from confluent_kafka import Message as KafkaMessage
from confluent_kafka.admin import AdminClient

from kafka_workflows import headers as h
from kafka_workflows.eos import Output, TransactionalProcessor
from kafka_workflows.errors import ConfigError
from kafka_workflows.kafka.admin import TopicSpec, end_offsets, ensure_topics
from kafka_workflows.kafka.producer import RequestProducer
from kafka_workflows.ops import deadletters
from kafka_workflows.ops.control import CONTROL_TOPIC, send_command
from kafka_workflows.retry.policy import NonBlockingRetry, RetryPolicy
from kafka_workflows.retry.topics import dead_letter_topic, retry_topic
from kafka_workflows.store import StoreClient, StoreProcessor, commands_topic, ensure_store_topics
from kafka_workflows.worker import Worker
from tests.helpers.kafka import read_all, start_in_thread, stop_thread, wait_for

pytestmark = pytest.mark.integration


class Calls:
    """A handler that records what it handled and fails the keys it is told to."""

    def __init__(self, failing: Iterable[str] = (), read_attempt: bool = False) -> None:
        self.failing = set(failing)
        self.read_attempt = read_attempt
        self.handled: list[tuple[bytes | None, Any]] = []
        self.lock = threading.Lock()

    def __call__(self, message: Any) -> None:
        if self.read_attempt:
            _ = message.attempt  # a malformed kw-attempt fails here
        if message.key in self.failing:
            raise ConnectionError(f"{message.key} failed")
        with self.lock:
            self.handled.append((message.record.key(), message.value))


def _raw(config: dict[str, Any], topic: str, records: Iterable[tuple[bytes | None, bytes | None, list]],
         partition: int = 0) -> None:
    producer = Producer({**config, "enable.idempotence": True})
    for key, value, headers in records:
        producer.produce(topic, value, key=key, headers=headers, partition=partition)
    assert producer.flush(30) == 0


def _headers(msg: KafkaMessage) -> dict[str, bytes]:
    return dict(msg.headers() or [])


def test_malformed_kw_headers_are_dead_lettered_with_the_header_named_and_the_worker_goes_on(
        kafka_config: dict[str, Any], topic: str, group: str) -> None:
    store = f"s-{uuid.uuid4().hex[:8]}"
    ensure_topics(kafka_config, [TopicSpec(topic, 1)])
    calls = Calls(read_attempt=True)
    worker = Worker(kafka_config, [topic], group, calls, store=store,
                    policy=RetryPolicy(non_blocking=NonBlockingRetry(intervals=[0.2])))
    thread = start_in_thread(worker)
    try:
        _raw(kafka_config, topic, [
            (b"good-1", b'{"n": 1}', []),
            (b"bad-attempt", b'{"n": 2}', [(h.ATTEMPT, b"secret-value")]),
            (b"bad-job", b'{"n": 3}', [(h.REQUEST_ID, b"r1"), (h.JOB_INDEX, b"seven")]),
            (b"good-2", b'{"n": 4}', []),
        ])
        _raw(kafka_config, retry_topic(topic, group, 1), [
            (b"bad-retry-at", b'{"n": 5}', [(h.RETRY_AT, b"soon")]),
        ])
        _raw(kafka_config, topic, [(b"good-3", b'{"n": 6}', [])])
        dead = read_all(kafka_config, dead_letter_topic(topic, group), expected=3, timeout=60)
        wait_for(lambda: len(calls.handled) == 3, 30, "the good messages")
        assert thread.is_alive(), "the worker stopped"
    finally:
        stop_thread(worker, thread)
    assert [key for key, _ in calls.handled] == [b"good-1", b"good-2", b"good-3"]
    reasons = {m.key(): (_headers(m)[h.ERROR_TYPE], _headers(m)[h.ERROR_MESSAGE].decode()) for m in dead}
    assert reasons == {
        b"bad-attempt": (b"HeaderError", "header kw-attempt is not an integer (12 characters)"),
        b"bad-job": (b"HeaderError", "header kw-job-index is not an integer (5 characters)"),
        b"bad-retry-at": (b"HeaderError", "header kw-retry-at is not an integer (4 characters)"),
    }
    assert all(b"secret-value" not in v for m in dead for k, v in m.headers() if k == h.ERROR_MESSAGE)


def test_non_utf8_keys_and_headers_survive_retry_dead_letter_and_replay_byte_for_byte(
        kafka_config: dict[str, Any], topic: str, group: str) -> None:
    ensure_topics(kafka_config, [TopicSpec(topic, 1)])
    key, binary = b"\xff\xfeuser-\x00\x81", b"\xc3\x28\x00\xff"
    calls = Calls(failing={key.decode("utf-8", "replace")})
    worker = Worker(kafka_config, [topic], group, calls,
                    policy=RetryPolicy(non_blocking=NonBlockingRetry(intervals=[0.1])))
    thread = start_in_thread(worker)
    try:
        _raw(kafka_config, topic, [(key, b'{"n": 1}', [("x-binary", binary), (h.REQUEST_ID, b"r\xff")])])
        [retried] = read_all(kafka_config, retry_topic(topic, group, 1), expected=1, timeout=30)
        [dead] = read_all(kafka_config, dead_letter_topic(topic, group), expected=1, timeout=30)
    finally:
        stop_thread(worker, thread)
    for moved in (retried, dead):
        assert moved.key() == key
        assert _headers(moved)["x-binary"] == binary and _headers(moved)[h.REQUEST_ID] == b"r\xff"
    replayed = deadletters.replay(kafka_config, topic, group)
    assert [letter.id for letter in replayed] == [f"{dead_letter_topic(topic, group)}:0:0"]
    again = read_all(kafka_config, topic, expected=2, timeout=30)
    assert again[1].key() == key and _headers(again[1])["x-binary"] == binary
    assert _headers(again[1])[h.REPLAYED_FROM] == f"{dead_letter_topic(topic, group)}:0:0".encode()


def test_a_second_replay_of_the_same_selection_resends_nothing_unless_asked(
        kafka_config: dict[str, Any], topic: str, group: str) -> None:
    ensure_topics(kafka_config, [TopicSpec(topic, 1)])
    calls = Calls(failing={f"k{n}" for n in range(4)})
    worker = Worker(kafka_config, [topic], group, calls, policy=RetryPolicy())
    thread = start_in_thread(worker)
    try:
        producer = RequestProducer(kafka_config)
        for n in range(4):
            producer.send(topic, {"n": n}, key=f"k{n}")
        producer.flush()
        read_all(kafka_config, dead_letter_topic(topic, group), expected=4, timeout=30)
    finally:
        stop_thread(worker, thread)
    first = deadletters.replay(kafka_config, topic, group, deadletters.Filter(key="k1"))
    assert [letter.key for letter in first] == ["k1"]
    assert deadletters.replay(kafka_config, topic, group, deadletters.Filter(key="k1")) == []
    assert [letter.key for letter in deadletters.replay(kafka_config, topic, group, dry_run=True)] == ["k0", "k2", "k3"]
    again = deadletters.replay(kafka_config, topic, group, deadletters.Filter(key="k1"), again=True)
    assert [letter.key for letter in again] == ["k1"]
    assert [m.key() for m in read_all(kafka_config, topic, expected=6, timeout=30)][4:] == [b"k1", b"k1"]


def test_control_records_of_the_wrong_shape_are_ignored_counted_and_good_ones_still_apply(
        kafka_config: dict[str, Any], topic: str, group: str) -> None:
    ensure_topics(kafka_config, [TopicSpec(topic, 1)])
    from stack.broker import free_port

    port = free_port()
    worker = Worker(kafka_config, [topic], group, Calls(), metrics_port=port)
    thread = start_in_thread(worker)
    try:
        time.sleep(1.0)  # the follower starts at the end of the control topic
        _raw(kafka_config, CONTROL_TOPIC, [
            (group.encode(), b"\x00not json", []),
            (group.encode(), b"[1, 2]", []),
            (group.encode(), json.dumps({"kind": "command", "group": group}).encode(), []),
            (group.encode(), json.dumps({"kind": "command", "group": group, "op": "skip", "id": "x",
                                         "topic": [topic], "partition": "zero", "at": "now"}).encode(), []),
        ])
        _, applied = send_command(kafka_config, "pause", group, reason="after the garbage", wait=30)
        assert [a["result"] for a in applied] == ["paused 1 partition(s)"]
        wait_for(lambda: _metric(port, "kw_worker_control_ignored_total") >= 4, 20, "the ignored records counted")
        assert thread.is_alive()
    finally:
        stop_thread(worker, thread)


def _metric(port: int, name: str) -> float:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name))


def test_skip_needs_the_offset_the_operator_saw(kafka_config: dict[str, Any], group: str) -> None:
    with pytest.raises(ConfigError, match="skip needs the offset you saw held"):
        send_command(kafka_config, "skip", group, topic="t", partition=0, wait=0)


def test_a_paused_group_stays_paused_for_a_worker_that_joins_later(
        kafka_config: dict[str, Any], topic: str, group: str) -> None:
    ensure_topics(kafka_config, [TopicSpec(topic, 1)])
    first = Worker(kafka_config, [topic], group, Calls())
    thread = start_in_thread(first)
    try:
        time.sleep(1.0)
        _, applied = send_command(kafka_config, "pause", group, reason="maintenance", wait=30)
        assert applied
    finally:
        stop_thread(first, thread)
    calls = Calls()
    later = Worker(kafka_config, [topic], group, calls)
    thread = start_in_thread(later)
    try:
        producer = RequestProducer(kafka_config)
        producer.send(topic, {"n": 1}, key="k")
        producer.flush()
        time.sleep(4.0)
        assert calls.handled == [], "a worker that joined a paused group handled a message"
        _, applied = send_command(kafka_config, "resume", group, reason="done", wait=30)
        assert applied
        wait_for(lambda: calls.handled, 30, "the message after resume")
    finally:
        stop_thread(later, thread)


def test_a_failing_status_write_does_not_stop_the_worker(kafka_config: dict[str, Any], topic: str,
                                                        group: str) -> None:
    from confluent_kafka.admin import AlterConfigOpType, ConfigEntry, ConfigResource

    from kafka_workflows.ops.control import STATUS_TOPIC, ensure_control_topics

    ensure_control_topics(kafka_config)
    ensure_topics(kafka_config, [TopicSpec(topic, 1)])
    admin = AdminClient(kafka_config)

    def set_max_bytes(value: str | None) -> None:
        entry = (ConfigEntry("max.message.bytes", value, incremental_operation=AlterConfigOpType.SET)
                 if value is not None else
                 ConfigEntry("max.message.bytes", "", incremental_operation=AlterConfigOpType.DELETE))
        resource = ConfigResource(ConfigResource.Type.TOPIC, STATUS_TOPIC, incremental_configs=[entry])
        admin.incremental_alter_configs([resource])[resource].result(30)

    calls = Calls()
    worker = Worker(kafka_config, [topic], group, calls, status_interval=0.2)
    set_max_bytes("64")  # every status record is larger: each write fails
    try:
        thread = start_in_thread(worker)
        try:
            producer = RequestProducer(kafka_config)
            for n in range(20):
                producer.send(topic, {"n": n}, key=f"k{n}")
                producer.flush()
                time.sleep(0.1)
            wait_for(lambda: len(calls.handled) == 20, 30, "every message while status writes fail")
            time.sleep(1.5)
            assert thread.is_alive(), "a failed status write stopped the worker"
        finally:
            stop_thread(worker, thread)
    finally:
        set_max_bytes(None)


def _json_transform(message: KafkaMessage) -> list[Output]:
    value = json.loads(message.value())  # a non-JSON input raises here
    return [Output(f"{message.topic()}.out", message.key(), json.dumps({"double": 2 * value["n"]}).encode())]


def test_a_poison_input_of_an_exactly_once_processor_is_dead_lettered_inside_its_transaction(
        kafka_config: dict[str, Any], topic: str, group: str) -> None:
    out = f"{topic}.out"
    ensure_topics(kafka_config, [TopicSpec(topic, 1), TopicSpec(out, 1)])
    processor = TransactionalProcessor(kafka_config, [topic], group, _json_transform, commit_interval=0.2)
    thread = start_in_thread(processor)
    try:
        records: list[tuple[bytes | None, bytes | None, list]] = []
        for n in range(30):
            records.append((f"k{n}".encode(), json.dumps({"n": n}).encode(), []))
            if n % 10 == 5:
                records.append((b"poison", b"{not json " + str(n).encode(), [("x-bin", b"\xff")]))
        _raw(kafka_config, topic, records)
        outputs = read_all(kafka_config, out, expected=30, timeout=60)
        dead = read_all(kafka_config, dead_letter_topic(topic, group), expected=3, timeout=30)
        assert thread.is_alive(), "the processor stopped on a poison input"
    finally:
        stop_thread(processor, thread)
    assert sorted(json.loads(m.value())["double"] for m in outputs) == [2 * n for n in range(30)]
    assert [m.key() for m in dead] == [b"poison"] * 3
    assert {_headers(m)[h.ERROR_TYPE] for m in dead} == {b"JSONDecodeError"}
    assert {_headers(m)[h.ORIGINAL_OFFSET] for m in dead} == {b"6", b"17", b"28"}
    assert all(_headers(m)["x-bin"] == b"\xff" for m in dead)
    admin = AdminClient(kafka_config)
    for t in (out, dead_letter_topic(topic, group)):
        assert end_offsets(admin, t, [0], IsolationLevel.READ_COMMITTED) == end_offsets(admin, t, [0])


def test_a_malformed_store_command_is_dead_lettered_and_the_store_goes_on(kafka_config: dict[str, Any]) -> None:
    store = f"s-{uuid.uuid4().hex[:8]}"
    ensure_store_topics(kafka_config, store)
    processor = StoreProcessor(kafka_config, store, commit_interval=0.2)
    thread = start_in_thread(processor)
    try:
        _raw(kafka_config, commands_topic(store), [
            (b"r1", b"not json at all", []),
            (b"r1", json.dumps({"op": "explode", "request_id": "r1"}).encode(), []),
        ])
        client = StoreClient(kafka_config, store)
        client.init("r1", 2)
        client.complete("r1", 0)
        client.complete("r1", 1)
        value = wait_for(lambda: (lambda v: v if v and v["status"] == "succeeded" else None)(client.get("r1")),
                         60, "the request to succeed after the garbage")
        dead = read_all(kafka_config, dead_letter_topic(commands_topic(store), processor.group), expected=2,
                        timeout=30)
        assert thread.is_alive()
    finally:
        stop_thread(processor, thread)
    assert (value["completed"], value["total"]) == (2, 2)
    assert sorted(_headers(m)[h.ERROR_TYPE] for m in dead) == [b"CommandError", b"MessageDecodeError"]
