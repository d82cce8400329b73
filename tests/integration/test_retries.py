"""Retry policies against the real broker: blocking, non-blocking retry topics, dead letters."""

from __future__ import annotations

import itertools
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from kafka_workflows import headers as h
from kafka_workflows.errors import NonRetryableError
from kafka_workflows.kafka.admin import TopicSpec, ensure_topics
from kafka_workflows.kafka.producer import RequestProducer
from kafka_workflows.messages import Message
from kafka_workflows.retry.policy import BlockingRetry, NonBlockingRetry, RetryPolicy
from kafka_workflows.retry.topics import dead_letter_topic, retry_topic
from kafka_workflows.worker import Worker
from tests.helpers.kafka import read_all, scrape_metrics, start_in_thread, stop_thread, wait_for

pytestmark = pytest.mark.integration


class Recorder:
    """An in-process handler that fails as told and records every call with its time."""

    def __init__(self, fail: dict[str, int] | None = None, always: set[str] | None = None,
                 error: type[Exception] = ConnectionError) -> None:
        self.fail = dict(fail or {})
        self.always = set(always or ())
        self.error = error
        self.calls: list[dict[str, Any]] = []
        self.lock = threading.Lock()

    def __call__(self, message: Message) -> None:
        key = message.key or ""
        with self.lock:
            failing = key in self.always or self.fail.get(key, 0) > 0
            if self.fail.get(key, 0) > 0:
                self.fail[key] -= 1
            self.calls.append({"key": key, "topic": message.topic, "partition": message.partition,
                               "t": time.monotonic(), "ok": not failing, "attempt": message.attempt})
        if failing:
            raise self.error(f"{key} failed")

    def ok(self, key: str | None = None) -> list[dict[str, Any]]:
        return [c for c in self.calls if c["ok"] and (key is None or c["key"] == key)]

    def attempts(self, key: str) -> list[dict[str, Any]]:
        return [c for c in self.calls if c["key"] == key]


def test_blocking_retry_delays_only_its_partition_at_the_configured_intervals(
        kafka_config: dict[str, Any], topic: str, group: str) -> None:
    ensure_topics(kafka_config, [TopicSpec(topic, partitions=2)])
    intervals = [0.5, 1.0, 1.5]
    handler = Recorder(fail={"a1": 3})
    worker = Worker(kafka_config, [topic], group, handler,
                    policy=RetryPolicy(blocking=BlockingRetry(intervals=intervals)))
    thread = start_in_thread(worker)
    try:
        producer = RequestProducer(kafka_config)
        for n in range(5):
            producer.send(topic, {"n": n}, key=f"a{n}", partition=0)
        producer.flush()
        wait_for(lambda: handler.attempts("a1"), 20, "the first attempt of a1")
        for n in range(20):  # partition 1 gets its traffic while partition 0 is blocked
            producer.send(topic, {"n": n}, key=f"b{n}", partition=1)
        producer.flush()
        wait_for(lambda: len(handler.ok()) == 25, 30, "every message handled")
    finally:
        stop_thread(worker, thread)

    attempts = [c["t"] for c in handler.attempts("a1")]
    assert len(attempts) == 4
    gaps = [later - earlier for earlier, later in itertools.pairwise(attempts)]
    for gap, interval in zip(gaps, intervals, strict=True):
        assert interval - 0.05 <= gap <= interval + 0.5, f"gaps {gaps} vs intervals {intervals}"
    on_p0 = [c["key"] for c in handler.ok() if c["partition"] == 0]
    assert on_p0 == [f"a{n}" for n in range(5)], "order within the blocked partition is kept"
    a1_done = handler.ok("a1")[0]["t"]
    b_done = [c["t"] for c in handler.ok() if c["partition"] == 1]
    assert [c["key"] for c in handler.ok() if c["partition"] == 1] == [f"b{n}" for n in range(20)]
    assert max(b_done) < a1_done, "partition 1 flowed while partition 0 was blocked"


def test_non_blocking_retries_move_through_retry_topics_to_the_dead_letter_topic(
        kafka_config: dict[str, Any], topic: str, group: str) -> None:
    ensure_topics(kafka_config, [TopicSpec(topic, partitions=3)])
    intervals = [1.0, 2.0]
    handler = Recorder(always={"bad-0", "bad-1", "bad-2"})
    worker = Worker(kafka_config, [topic], group, handler,
                    policy=RetryPolicy(non_blocking=NonBlockingRetry(intervals=intervals)))
    thread = start_in_thread(worker)
    producer = RequestProducer(kafka_config)
    try:
        for n in range(30):
            key = f"bad-{n // 10}" if n % 10 == 0 else f"good-{n}"
            producer.send(topic, {"n": n}, key=key, headers={h.REQUEST_ID: "req-1", h.WORKFLOW: "wf"})
        producer.flush()
        wait_for(lambda: len(handler.attempts("bad-0")) >= 2, 20, "bad-0 in retry-1")
        # The main topic keeps flowing while the failed ones wait in their retry topics.
        for n in range(10):
            producer.send(topic, {"n": 100 + n}, key=f"late-{n}")
        producer.flush()
        wait_for(lambda: len(handler.ok()) == 37, 20, "healthy messages")
        late_done = max(c["t"] for c in handler.ok() if c["key"].startswith("late-"))
        wait_for(lambda: worker.stats.dead_lettered == 3, 30, "the failing ones to be dead-lettered")
    finally:
        stop_thread(worker, thread)

    for key in ("bad-0", "bad-1", "bad-2"):
        calls = handler.attempts(key)
        assert [c["topic"] for c in calls] == [topic, retry_topic(topic, group, 1), retry_topic(topic, group, 2)]
        assert [c["attempt"] for c in calls] == [1, 2, 3]
        gaps = [b["t"] - a["t"] for a, b in itertools.pairwise(calls)]
        assert all(gap >= interval - 0.05 for gap, interval in zip(gaps, intervals, strict=True)), gaps
    first_retry_due = min(handler.attempts(k)[1]["t"] for k in ("bad-0", "bad-1", "bad-2"))
    healthy_done = max(c["t"] for c in handler.ok() if c["key"].startswith("good-"))
    assert healthy_done < first_retry_due, "healthy messages were not held up by failing ones"
    assert late_done < max(handler.attempts(k)[2]["t"] for k in ("bad-0", "bad-1", "bad-2"))

    retried = read_all(kafka_config, retry_topic(topic, group, 2), expected=3)
    assert sorted(m.key().decode() for m in retried) == ["bad-0", "bad-1", "bad-2"]
    for m in retried:
        headers = dict((k, v.decode()) for k, v in m.headers())
        assert headers[h.ATTEMPT] == "3" and int(headers[h.RETRY_AT]) > 0

    dead = read_all(kafka_config, dead_letter_topic(topic, group), expected=3)
    assert sorted(m.key().decode() for m in dead) == ["bad-0", "bad-1", "bad-2"]
    for m in dead:
        headers = dict((k, v.decode()) for k, v in m.headers())
        n = {"bad-0": 0, "bad-1": 10, "bad-2": 20}[m.key().decode()]
        assert headers[h.ORIGINAL_TOPIC] == topic
        assert headers[h.CONSUMER_GROUP] == group
        assert headers[h.ERROR_TYPE] == "ConnectionError" and "failed" in headers[h.ERROR_MESSAGE]
        assert headers[h.ATTEMPT] == "3" and h.RETRY_AT not in headers
        assert headers[h.REQUEST_ID] == "req-1" and headers[h.WORKFLOW] == "wf"
        assert int(headers[h.FIRST_FAILED_AT]) <= m.timestamp()[1]
        original = read_all(kafka_config, topic, expected=40)
        [source] = [o for o in original if o.key() == m.key()]
        assert (int(headers[h.ORIGINAL_PARTITION]), int(headers[h.ORIGINAL_OFFSET])) == (
            source.partition(), source.offset())
        assert m.value() == source.value() and b'"n":%d' % n in m.value()


def _x_dead_lettered_y_handled(kafka_config: dict[str, Any], topic: str, group: str, handler: Recorder,
                               policy: RetryPolicy) -> None:
    """Run a worker over a failing `x` then a healthy `y` until x is dead-lettered and y handled."""
    worker = Worker(kafka_config, [topic], group, handler, policy=policy)
    thread = start_in_thread(worker)
    try:
        producer = RequestProducer(kafka_config)
        producer.send(topic, {"n": 1}, key="x")
        producer.send(topic, {"n": 2}, key="y")
        producer.flush()
        wait_for(lambda: worker.stats.dead_lettered == 1 and handler.ok("y"), 20, "x dead-lettered, y handled")
    finally:
        stop_thread(worker, thread)


def test_combined_policy_blocks_n_times_then_uses_retry_topics(
        kafka_config: dict[str, Any], topic: str, group: str) -> None:
    ensure_topics(kafka_config, [TopicSpec(topic, partitions=1)])
    handler = Recorder(always={"x"})
    policy = RetryPolicy(blocking=BlockingRetry(intervals=[0.2], attempts=2),
                         non_blocking=NonBlockingRetry(intervals=[0.3]))
    _x_dead_lettered_y_handled(kafka_config, topic, group, handler, policy)
    assert [c["topic"] for c in handler.attempts("x")] == [topic, topic, retry_topic(topic, group, 1)]
    assert [c["attempt"] for c in handler.attempts("x")] == [1, 2, 3]
    [dead] = read_all(kafka_config, dead_letter_topic(topic, group), expected=1)
    assert dict(dead.headers())[h.ATTEMPT] == b"3", "a dead letter tells how many attempts were made"


@pytest.mark.parametrize("error", ["configured", "base"])
def test_non_retryable_errors_go_straight_to_the_dead_letter_topic(
        kafka_config: dict[str, Any], topic: str, group: str, error: str) -> None:
    from tests.helpers.handlers import PermanentError

    ensure_topics(kafka_config, [TopicSpec(topic, partitions=1)])
    handler = Recorder(always={"x"}, error=PermanentError if error == "configured" else NonRetryableError)
    policy = RetryPolicy(blocking=BlockingRetry(intervals=[5], attempts=3), non_blocking=NonBlockingRetry(
        intervals=[5]), non_retryable=["tests.helpers.handlers.PermanentError"])
    _x_dead_lettered_y_handled(kafka_config, topic, group, handler, policy)
    assert len(handler.attempts("x")) == 1
    [dead] = read_all(kafka_config, dead_letter_topic(topic, group), expected=1)
    assert dict(dead.headers())[h.ERROR_TYPE].decode() == handler.error.__name__


def test_policy_errors_name_the_field() -> None:
    from kafka_workflows.errors import ConfigError

    with pytest.raises(ConfigError, match=r"blocking\.intervals\.1: Input should be greater than or equal to 0"):
        RetryPolicy.parse({"blocking": {"intervals": [1, -2]}})
    with pytest.raises(ConfigError, match=r"non_blocking\.interval: Extra inputs are not permitted"):
        RetryPolicy.parse({"non_blocking": {"interval": [1]}})
    with pytest.raises(ConfigError, match="non_blocking would never be reached"):
        RetryPolicy.parse({"blocking": {"intervals": [1]}, "non_blocking": {"intervals": [1]}})
    with pytest.raises(ConfigError, match=r"non_retryable: .*cannot import module 'nope'"):
        RetryPolicy.parse({"non_retryable": ["nope.Error"]})


def test_dead_lettered_counts_by_topic_in_metrics(kafka_config: dict[str, Any], topic: str, group: str) -> None:
    from stack.broker import free_port

    ensure_topics(kafka_config, [TopicSpec(topic, partitions=1)])
    port = free_port()
    handler = Recorder(always={"x"}, fail={"y": 1})
    worker = Worker(kafka_config, [topic], group, handler, metrics_port=port,
                    policy=RetryPolicy(non_blocking=NonBlockingRetry(intervals=[0.1])),
                    consumer_overrides={"statistics.interval.ms": 500})
    thread = start_in_thread(worker)
    try:
        producer = RequestProducer(kafka_config)
        for key in ("x", "y", "z"):
            producer.send(topic, {"k": key}, key=key)
        producer.flush()
        wait_for(lambda: worker.stats.dead_lettered == 1 and len(handler.ok()) == 2, 20, "x dead, y and z done")
        # the lag gauge comes with librdkafka's statistics (every 0.5 s here), once they know the partition's ends
        samples = wait_for(lambda: (m := scrape_metrics(port, topic)) and "kw_worker_consumer_lag" in m and m, 30,
                           "the consumer lag gauge", 0.5)
    finally:
        stop_thread(worker, thread)
    assert samples["kw_worker_handled_total"] == 2
    assert samples["kw_worker_failed_total"] == 3  # x twice (main, retry-1), y once
    assert samples["kw_worker_retried_total"] == 2
    assert samples["kw_worker_dead_lettered_total"] == 1
    assert samples["kw_worker_handler_seconds_count"] == 2
    assert "kw_worker_consumer_lag" in samples


def test_a_bad_policy_fails_the_worker_at_start_before_consuming(
        kafka_config: dict[str, Any], topic: str, group: str, tmp_path: Path) -> None:
    import subprocess
    import sys

    from tests.helpers.kafka import REPO

    for policy, fragment in [('{"blocking": {"intervals": [-1]}}', "blocking.intervals.0"),
                             ('{"blocking": {"tries": 3}}', "blocking.tries: Extra inputs are not permitted"),
                             ("{not json", "--policy: not JSON")]:
        result = subprocess.run(
            [sys.executable, "-m", "kafka_workflows.cli", "worker", "--topic", topic, "--group", group,
             "--handler", "tests.helpers.handlers.record", "--policy", policy],
            capture_output=True, text=True, timeout=60, cwd=REPO,
            env={"KAFKA_BOOTSTRAP_SERVERS": kafka_config["bootstrap.servers"], "PATH": "/usr/bin:/bin",
                 "PYTHONPATH": f"{REPO / 'include'}:{REPO}"})
        assert result.returncode == 2, result.stderr
        assert fragment in result.stderr
    from confluent_kafka.admin import AdminClient

    assert topic not in AdminClient(kafka_config).list_topics(timeout=10).topics, "nothing was created"
