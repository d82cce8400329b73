"""Every long-running process serves /metrics, /healthz and /readyz on its one metrics port.

`kafka-workflows worker <specs>` runs a worker, an exactly-once processor and a store in one
process: their metrics come from one registry on one port, read here over HTTP. The probes: a
healthy process answers 200 on both; a loop wedged by a handler fails /healthz after the configured
staleness; a partition held by a blocking retry leaves the worker ready; a worker whose broker does
not answer is not ready.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import pytest

from kafka_workflows.kafka.admin import TopicSpec, ensure_topics
from kafka_workflows.kafka.producer import RequestProducer
from kafka_workflows.observe import Telemetry
from kafka_workflows.retry.policy import BlockingRetry, RetryPolicy
from kafka_workflows.store.client import StoreClient
from kafka_workflows.worker import Worker
from stack import reaper
from stack.broker import free_port
from tests.helpers.kafka import REPO, read_all, wait_for

pytestmark = pytest.mark.integration


def get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()
    except OSError:
        return 0, ""


def samples(port: int) -> dict[str, float]:
    """`name{labels}` -> value of every sample on /metrics."""
    status, text = get(port, "/metrics")
    assert status == 200
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            out[name] = float(value)
    return out


def value(found: dict[str, float], name: str, **labels: str) -> float | None:
    """The sum of `name`'s samples whose labels include `labels`."""
    hits = [v for k, v in found.items() if k.split("{", 1)[0] == name
            and all(f'{lk}="{lv}"' in k for lk, lv in labels.items())]
    return sum(hits) if hits else None


def test_one_process_serves_the_metrics_and_probes_of_its_worker_processor_and_store(
        kafka_config: dict[str, Any], tmp_path: Path) -> None:
    n = uuid.uuid4().hex[:8]
    jobs, source, sink, store = f"jobs-{n}", f"in-{n}", f"out-{n}", f"st{n}"
    spec = tmp_path / "telemetry.yaml"
    spec.write_text(f"""
name: telemetry_{n}
steps: []
workers:
  - {{name: jobs, topics: [{jobs}], group: jobs-{n}, handler: tests.helpers.handlers.record, store: {store},
     partitions: 1}}
processors:
  - {{name: echo, topics: [{source}], group: echo-{n}, transform: tests.helpers.handlers.echo_or_poison,
     outputs: [{sink}], commit_interval: 0.2, partitions: 2}}
stores:
  - {{name: {store}, partitions: 2, commit_interval: 0.2}}
""")
    port = free_port()
    record = tmp_path / "calls.jsonl"
    env = {**os.environ, "KAFKA_BOOTSTRAP_SERVERS": kafka_config["bootstrap.servers"],
           "KW_TEST_RECORD": str(record), "PYTHONPATH": os.pathsep.join([str(REPO / "include"), str(REPO)])}
    log = tmp_path / "worker.log"
    with log.open("ab") as out:
        proc = reaper.popen([sys.executable, "-m", "kafka_workflows.cli", "worker", str(spec),
                             "--metrics-port", str(port)], env=env, cwd=REPO, stdout=out, stderr=out)
    try:
        def alive() -> None:
            assert proc.poll() is None, log.read_text()[-3000:]
        try:
            wait_for(lambda: get(port, "/readyz")[0] == 200, 90, "/readyz to answer 200", alive=alive)
        except TimeoutError as exc:
            raise AssertionError(get(port, "/readyz")[1]) from exc
        status, body = get(port, "/healthz")
        assert status == 200
        units = json.loads(body)["units"]
        assert sorted(units) == [f"telemetry_{n}/echo", f"telemetry_{n}/jobs", f"telemetry_{n}/store:{store}"]
        assert all(u["ready"] and u["joined"] and u["broker_up"] for u in units.values())

        client = StoreClient(kafka_config, store)
        client.init(f"req-{n}", 2)
        producer = RequestProducer(kafka_config)
        for job in range(2):
            producer.send(jobs, {"job": job}, key=f"k{job}", headers={"kw-request-id": f"req-{n}",
                                                                     "kw-job-index": str(job)})
        for i in range(5):
            producer.send(source, {"i": i}, key=f"k{i}")
        producer.send(source, {"poison": True}, key="bad")
        producer.flush()
        read_all(kafka_config, sink, expected=5, timeout=60)

        def counted() -> bool:
            found = samples(port)
            return (value(found, "kw_processor_records_in_total", group=f"echo-{n}") == 6
                    and value(found, "kw_store_requests", store=store, status="succeeded") == 1
                    and value(found, "kw_processor_consumer_lag", group=f"echo-{n}") is not None)
        try:
            wait_for(counted, 60, "the processor's and the store's metrics")
        except TimeoutError as exc:
            raise AssertionError({k: v for k, v in samples(port).items() if "kw_processor_r" in k or "kw_store" in k
                                  or "lag" in k or "handled" in k}) from exc
        found = samples(port)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
    echo = {"group": f"echo-{n}"}
    assert value(found, "kw_processor_transactions_committed_total", **echo) >= 1
    assert value(found, "kw_processor_transactions_aborted_total", **echo) == 0
    assert value(found, "kw_processor_commit_seconds_count", **echo) >= 1
    assert value(found, "kw_processor_records_out_total", **echo, topic=sink) == 5
    assert value(found, "kw_processor_records_out_total", **echo, topic=f"{source}.echo-{n}.dlq") == 1
    assert value(found, "kw_processor_poison_dead_lettered_total", **echo) == 1
    assert value(found, "kw_store_requests", store=store, status="running") == 0
    assert value(found, "kw_worker_handled_total", group=f"jobs-{n}", topic=jobs) == 2
    # The store processor is an exactly-once processor too: its transactions count under its group.
    assert (value(found, "kw_processor_records_in_total", group=f"{store}.store-processor") or 0) >= 3
    assert proc.returncode == 0, log.read_text()[-3000:]


def test_a_held_partition_keeps_the_worker_ready_and_a_wedged_loop_fails_healthz(
        kafka_config: dict[str, Any], topic: str, group: str) -> None:
    ensure_topics(kafka_config, [TopicSpec(topic, partitions=2)])
    release = threading.Event()

    def handler(message: Any) -> None:
        if message.key == "bad":
            raise ConnectionError("dependency down")
        if message.key == "wedge":
            release.wait()  # the loop stops turning here

    telemetry = Telemetry(stale_after=3.0)
    port = free_port()
    worker = Worker(kafka_config, [topic], group, handler, metrics_port=port, telemetry=telemetry,
                    policy=RetryPolicy(blocking=BlockingRetry(intervals=[0.5], attempts=None)),
                    consumer_overrides={"statistics.interval.ms": 500})
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    try:
        wait_for(lambda: get(port, "/readyz")[0] == 200, 60, "the worker to be ready")
        producer = RequestProducer(kafka_config)
        producer.send(topic, {"x": 1}, key="bad", partition=0)
        producer.flush()
        wait_for(lambda: value(samples(port), "kw_worker_blocked_partitions", group=group) == 1, 30,
                 "partition 0 held by the blocking retry")
        time.sleep(2 * telemetry.stale_after)  # longer than the staleness: the loop keeps turning
        assert value(samples(port), "kw_worker_blocked_partitions", group=group) == 1
        assert get(port, "/readyz")[0] == 200
        assert get(port, "/healthz")[0] == 200

        producer.send(topic, {"x": 2}, key="wedge", partition=1)
        producer.flush()
        wait_for(lambda: get(port, "/healthz")[0] == 503, 30, "/healthz to fail once the loop is wedged")
        body = get(port, "/healthz")[1]
        state = json.loads(body)["units"][f"worker {group}"]
        assert not state["alive"] and "loop has not turned" in state["not_ready"][0]
        assert get(port, "/readyz")[0] == 503
    finally:
        release.set()
        worker.stop()
        thread.join(30)
        telemetry.close()
    assert not thread.is_alive()


def test_a_worker_whose_broker_does_not_answer_is_not_ready() -> None:
    closed = free_port()  # nothing listens there
    telemetry = Telemetry()
    port = free_port()
    worker = Worker({"bootstrap.servers": f"127.0.0.1:{closed}"}, ["t"], "g-unreachable", lambda m: None,
                    metrics_port=port, telemetry=telemetry)
    errors: list[BaseException] = []

    def run() -> None:
        try:
            worker.run()
        except BaseException as exc:  # noqa: BLE001 - the broker check gives up; recorded below
            errors.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        wait_for(lambda: get(port, "/healthz")[0] == 200, 30, "the probes to answer")
        status, body = get(port, "/readyz")
        assert status == 503
        state = json.loads(body)["units"]["worker g-unreachable"]
        assert state["alive"] and not state["ready"] and not state["broker_up"]
    finally:
        worker.stop()
        thread.join(30)
        telemetry.close()
    assert errors and "cannot reach Kafka" in str(errors[0])
