"""What the UI tests share: calls to the plugin's API, and a worker of `subscription_renewals`' group.

The worker runs in the test process (a thread) as group `renewals` on `subscription-renewals`,
the group the workflow spec declares, so the plugin shows it under that workflow. Its handler is
`tests.helpers.handlers.record`: a value `{"fail_unless_exists": path}` blocks its partition
(blocking retries, forever) until that file exists.
"""

from __future__ import annotations

import json
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from kafka_workflows.kafka.producer import RequestProducer
from kafka_workflows.retry.policy import BlockingRetry, RetryPolicy
from kafka_workflows.worker import Worker
from stack.airflow import AirflowStandalone
from tests.helpers.kafka import start_in_thread, stop_thread

PREFIX = "/kafka-workflows"
WORKFLOW, GROUP, TOPIC = "subscription_renewals", "renewals", "subscription-renewals"


def call(standalone: AirflowStandalone, method: str, path: str, token: str | None = None,
         body: Any = None, timeout: float = 60.0) -> tuple[int, Any]:
    """(status, JSON body or text) of one call to the plugin's app."""
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(f"{standalone.url}{PREFIX}{path}", data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            status, raw = response.status, response.read()
    except urllib.error.HTTPError as exc:
        status, raw = exc.code, exc.read()
    try:
        return status, json.loads(raw)
    except ValueError:
        return status, raw.decode("utf-8", "replace")


def produce(config: dict[str, Any], key: str, value: dict[str, Any]) -> tuple[int, int]:
    """(partition, offset) of one request produced to the workflow's topic."""
    producer = RequestProducer(config)
    producer.send(TOPIC, value, key=key)
    [delivered] = producer.flush()
    return delivered.partition, delivered.offset


@contextmanager
def renewals_worker(config: dict[str, Any], retry_every: float = 1.0, **options: Any) -> Iterator[Worker]:
    """A worker of the group whose blocking retries come every `retry_every` seconds, forever
    (`options`: more of Worker's, e.g. incidents)."""
    worker = Worker(config, [TOPIC], GROUP, "tests.helpers.handlers.record", status_interval=1.0,
                    policy=RetryPolicy(blocking=BlockingRetry(intervals=[retry_every])), **options)
    thread: threading.Thread = start_in_thread(worker)
    try:
        yield worker
    finally:
        stop_thread(worker, thread)


def held(standalone: AirflowStandalone, token: str, partition: int) -> dict[str, Any] | None:
    status, group = call(standalone, "GET", f"/api/workflows/{WORKFLOW}/groups/{GROUP}", token)
    assert status == 200, group
    row = next(p for p in group["partitions"] if p["topic"] == TOPIC and p["partition"] == partition)
    return row["hold"] if row["state"] == "blocked" else None


def flag_file(tmp: Path, name: str) -> Path:
    return tmp / f"{name}.ok"
