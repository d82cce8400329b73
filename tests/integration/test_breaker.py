"""The circuit breaker of a worker group (retry/breaker.py, worker/loop.py), on a real broker with
real worker processes: a provider outage pauses the group instead of filling the dead-letter topic;
an operator's open and close from the CLI, kept across a worker's start."""

from __future__ import annotations

import json
import threading
import time
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from kafka_workflows.kafka.admin import TopicSpec, ensure_topics
from kafka_workflows.kafka.producer import RequestProducer
from kafka_workflows.ops.control import breaker_key, control_history
from kafka_workflows.ops.status import read_status_topic
from kafka_workflows.retry.topics import dead_letter_topic
from stack.broker import free_port
from tests.helpers.kafka import read_all, records, start_worker, wait_for
from tests.integration.test_operations import cli

pytestmark = pytest.mark.integration
OUTAGE = "tests.helpers.handlers.outage"
# Without a breaker, three failed attempts of one message would dead-letter it.
POLICY = json.dumps({"blocking": {"intervals": [0.2], "attempts": 3}})
NAMES = {0: "closed", 1: "open", 2: "half_open"}

def breaker_gauge(port: int) -> int | None:
    try:
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith("kw_worker_breaker_state{"):
            return int(float(line.rsplit(" ", 1)[1]))
    return 0  # not set yet: closed

# (strategy, handler, worker flags, outage seconds): the 30 s outage once; the other strategies shorter
STRATEGIES = [("message", OUTAGE, (), 30.0),
              ("concurrency", OUTAGE, ("--concurrency", "4"), 10.0),
              ("batch", "tests.helpers.handlers.outage_batch", (), 10.0)]


@pytest.mark.parametrize("strategy, handler, flags, seconds", STRATEGIES, ids=[s[0] for s in STRATEGIES])
def test_a_provider_outage_opens_the_breaker_and_nothing_is_dead_lettered_lost_or_doubled(
        kafka_config: dict[str, Any], topic: str, group: str, tmp_path: Path, strategy: str, handler: str,
        flags: tuple[str, ...], seconds: float) -> None:
    ensure_topics(kafka_config, [TopicSpec(topic, partitions=3)])
    record, outage, port = tmp_path / "calls.jsonl", tmp_path / "provider-down", free_port()
    breaker = json.dumps({"errors": ["ConnectionError"], "repeats": 3, "cooldown": 3})
    worker = start_worker(kafka_config, topic, group, handler, record, "--policy", POLICY, "--breaker", breaker,
                          "--metrics-port", str(port), *flags, env={"KW_TEST_OUTAGE": str(outage)})
    sent: list[str] = []
    stop = threading.Event()

    def renewals() -> None:  # a steady stream of renewals, 10 a second, through the outage
        producer = RequestProducer(kafka_config)
        while not stop.is_set():
            key = f"renewal-{len(sent)}"
            producer.send(topic, {"renew": key}, key=key)
            producer.flush()
            sent.append(key)
            time.sleep(0.1)

    thread = threading.Thread(target=renewals, daemon=True)
    try:
        thread.start()
        wait_for(lambda: any(r["outcome"] == "ok" for r in records(record)), 60, "the worker handling renewals")
        timeline: list[tuple[float, str]] = []
        started = time.monotonic()

        def watch(seconds: float) -> None:
            end = time.monotonic() + seconds
            while time.monotonic() < end:
                state = breaker_gauge(port)
                if state is not None and (not timeline or timeline[-1][1] != NAMES[state]):
                    timeline.append((round(time.monotonic() - started, 1), NAMES[state]))
                time.sleep(0.2)

        outage.touch()  # the payment provider goes down
        watch(seconds)
        outage.unlink()
        back = round(time.monotonic() - started, 1)
        watch(5)
        stop.set()
        thread.join(10)
        wait_for(lambda: breaker_gauge(port) == 0, 60, "the breaker to close after the outage")
        watch(0.5)
        print(f"\n{strategy}: outage 0.0 s .. {back} s; breaker (seconds since the outage began, state): {timeline}")
        assert "open" in [s for _, s in timeline], timeline
        assert timeline[-1][1] == "closed", timeline

        def every_renewal_done() -> bool:
            ok = Counter(r["key"] for r in records(record) if r["outcome"] == "ok")
            return all(ok[key] >= 1 for key in sent)

        wait_for(every_renewal_done, 90, "every renewal handled after the outage")
        calls = records(record)
        ok = Counter(r["key"] for r in calls if r["outcome"] == "ok")
        assert set(ok) == set(sent) and set(ok.values()) == {1}, "a renewal lost or handled twice"
        failed = [r for r in calls if r["outcome"] == "ConnectionError"]
        assert failed, "the outage was not seen by the handler"
        # Attempts were given back while the breaker was open: none went past the policy's third.
        assert max(r["attempt"] for r in failed) <= 3
        print(f"{len(sent)} renewals, {len(failed)} failed calls during the outage (probes included)")
        assert read_all(kafka_config, dead_letter_topic(topic, group)) == []
        audit = [r for r in control_history(kafka_config, ("command",)) if r.get("group") == group]
        assert [r["op"] for r in audit if r.get("auto")][:1] == ["open"] and audit[-1]["op"] == "close", audit
        state = read_status_topic(kafka_config)[breaker_key(group)]
        assert state["breaker"] == "closed", state
    finally:
        stop.set()
        worker.terminate()
        worker.wait(30)

def test_an_operators_open_holds_across_a_worker_start_until_closed_from_the_cli(
        kafka_config: dict[str, Any], topic: str, group: str, tmp_path: Path) -> None:
    ensure_topics(kafka_config, [TopicSpec(topic, partitions=2)])
    record, outage = tmp_path / "calls.jsonl", tmp_path / "never"
    opened = cli(kafka_config, "open-breaker", "--group", group, "--reason", "provider maintenance", "--wait", "1")
    assert opened.returncode == 1  # no worker yet to answer; the group's state is kept
    assert read_status_topic(kafka_config)[breaker_key(group)]["breaker"] == "open"
    worker = start_worker(kafka_config, topic, group, OUTAGE, record, "--policy", POLICY,
                          "--breaker", json.dumps({"cooldown": 1}), env={"KW_TEST_OUTAGE": str(outage)})
    try:
        def status() -> dict[str, Any] | None:
            for key, value in read_status_topic(kafka_config).items():
                if key.startswith(f"{group}/") and value.get("assigned"):
                    return value
            return None

        seen = wait_for(status, 60, "the worker's status with its partitions")
        assert seen["breaker"]["state"] == "open" and seen["breaker"]["forced"] is True, seen
        producer = RequestProducer(kafka_config)
        producer.send(topic, {"renew": "a"}, key="a")
        producer.flush()
        time.sleep(5)  # well past the breaker's cool-down: an operator's open does not probe
        assert records(record) == []
        closed = cli(kafka_config, "close-breaker", "--group", group, "--reason", "maintenance over")
        assert closed.returncode == 0, closed.stderr
        assert "circuit breaker open -> closed" in closed.stdout
        wait_for(lambda: [r for r in records(record) if r["outcome"] == "ok"], 30, "the renewal after the close")
        assert read_status_topic(kafka_config)[breaker_key(group)]["breaker"] == "closed"
        applied = [r for r in control_history(kafka_config, ("applied",)) if r.get("group") == group]
        assert any(r["op"] == "close" for r in applied)
    finally:
        worker.terminate()
        worker.wait(30)
