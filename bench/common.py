"""What every bench shares: `--smoke` (tiny sizes, seconds: the suite runs each bench so, so none can
rot) and `--bootstrap` (use a running broker instead of starting one: the suite passes its own).

A smoke run proves the bench still runs end to end and prints its JSON line; its figures mean
nothing. Real figures come from a run without `--smoke` on an otherwise idle machine.
"""

from __future__ import annotations

import argparse
import contextlib
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, TopicPartition


def add_bench_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--smoke", action="store_true",
                        help="tiny sizes, a few seconds: checks the bench runs, its figures mean nothing")
    parser.add_argument("--bootstrap", metavar="HOST:PORT",
                        help="use this running broker instead of starting one (its topics are the bench's own)")


@contextlib.contextmanager
def bench_broker(args: argparse.Namespace, **broker_settings: Any) -> Iterator[dict[str, str]]:
    """The librdkafka config of the bench's broker: `--bootstrap`'s, or one started (and stopped) here."""
    if args.bootstrap:
        yield {"bootstrap.servers": args.bootstrap}
        return
    from stack.broker import Broker, free_port

    with tempfile.TemporaryDirectory(prefix="kw-bench-") as tmp:
        broker = Broker(Path(tmp) / "kafka", port=free_port(), **broker_settings).start()
        try:
            yield {"bootstrap.servers": broker.bootstrap_servers}
        finally:
            broker.stop()


def raw_loop(config: dict[str, str], topic: str, n: int) -> float:
    """The baseline every worker bench divides by: a bare read_committed consume loop storing offsets
    (what any consumer does), in messages per second from its first batch."""
    consumer = Consumer({**config, "group.id": f"raw-{uuid.uuid4().hex}", "auto.offset.reset": "earliest",
                         "enable.auto.commit": True, "enable.auto.offset.store": False,
                         "auto.commit.interval.ms": 1000, "isolation.level": "read_committed",
                         "fetch.wait.max.ms": 100, "fetch.queue.backoff.ms": 10})
    consumer.subscribe([topic])
    seen, started = 0, None
    while seen < n:
        batch = consumer.consume(500, 1.0)
        if batch and started is None:
            started = time.perf_counter()
        last: dict[tuple[str, int], int] = {}
        for msg in batch:
            if msg.error():
                continue
            msg.value()
            last[(msg.topic(), msg.partition())] = msg.offset() + 1
            seen += 1
        if last:
            consumer.store_offsets(offsets=[TopicPartition(t, p, o) for (t, p), o in last.items()])
    elapsed = time.perf_counter() - (started or time.perf_counter())
    consumer.close()
    return n / elapsed


def dag_known(api: Any, dag_id: str) -> bool:
    """Whether the standalone behind `api` (an airflow_client ApiClient) has parsed `dag_id` yet."""
    import airflow_client.client as af
    from airflow_client.client.api.dag_api import DAGApi

    try:
        return DAGApi(api).get_dag(dag_id).dag_id == dag_id
    except af.ApiException:
        return False


def handled_per_second(worker: Any, n: int, first: list[float]) -> float:
    """Run `worker` (a kafka_workflows Worker, of this tree or another revision) in a thread until it
    has handled `n` messages; messages per second from `first[0]`, which its handler sets on its first call."""
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    while worker.stats.handled < n:
        time.sleep(0.01)
    elapsed = time.perf_counter() - first[0]
    worker.stop()
    thread.join(30)
    return n / elapsed
