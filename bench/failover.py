"""Failover: how long a group of two workers leaves a SIGKILLed member's partitions unhandled.

Starts its own broker (loopback, Maven-resolved jars) and, per variant, a 6-partition topic that a
producer thread fills at a steady rate (every partition gets a message about every 60 ms). Two
`kafka-workflows worker` processes (the recording test handler: one JSON line per message with
its pid, partition and time) share one group. `--kills` times: wait until both handle messages,
note the partitions the victim handles, SIGKILL it, and measure the time from the kill until
the survivor has handled a message on every one of those partitions; then start a replacement
and wait until it handles messages before the next kill.

Variants (the group protocol through `KW_GROUP_PROTOCOL`, exactly as workers choose it):

- `consumer`: KIP-848, the broker's `group.consumer.session.timeout.ms` = `--session-ms`;
- `classic-session`: cooperative-sticky with `session.timeout.ms` = `--session-ms` (client side);
- `classic`: `KW_GROUP_PROTOCOL=classic` as shipped (cooperative-sticky, 6 s session);
- `before`: cooperative-sticky with librdkafka's defaults (45 s session, 3 s heartbeat): what
  workers did before (slow: about a minute per kill).

Last line: one JSON object with p50 and max per variant, and each variant's p50 as a ratio to
the first variant's.

    .venv/bin/python bench/failover.py [--kills 5] [--session-ms 4000] [--variants consumer,classic-session] [--smoke]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from functools import partial
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "include")]

from confluent_kafka import Producer  # noqa: E402

from kafka_workflows.kafka.admin import TopicSpec, ensure_topics  # noqa: E402
from stack.broker import Broker, free_port  # noqa: E402
from stack.wait import wait_for  # noqa: E402
from tests.helpers.kafka import start_worker  # noqa: E402

PARTITIONS = 6
HANDLER = "tests.helpers.handlers.record"


class Records:
    """The recording handler's file, read incrementally: (time, pid, partition) per handled message."""

    def __init__(self, path: Path) -> None:
        self.path, self.offset, self.rows = path, 0, []  # type: ignore[var-annotated]

    def refresh(self) -> list[tuple[float, int, int]]:
        if self.path.exists():
            with open(self.path, "rb") as f:
                f.seek(self.offset)
                data = f.read()
            complete = data[:data.rfind(b"\n") + 1]
            self.offset += len(complete)
            for line in complete.splitlines():
                row = json.loads(line)
                self.rows.append((row["t"], row["pid"], row["partition"]))
        return self.rows

    def owners_since(self, since: float) -> dict[int, int]:
        """partition -> pid of the last message handled on it after `since`."""
        owners: dict[int, int] = {}
        for t, pid, partition in self.refresh():
            if t >= since:
                owners[partition] = pid
        return owners


def _both_handle(records: Records, workers: list[subprocess.Popen[bytes]]) -> dict[int, int] | None:
    """partition -> pid over the last 1.5 s, once both live workers handle messages and every partition flows."""
    owners = records.owners_since(time.time() - 1.5)
    pids = {w.pid for w in workers if w.poll() is None}
    return owners if len(owners) == PARTITIONS and set(owners.values()) == pids and len(pids) == 2 else None


def _taken_over(records: Records, killed_at: float, survivor: int, lost: set[int]) -> float | None:
    """Seconds from the kill until `survivor` had handled a message on every partition in `lost`."""
    firsts: dict[int, float] = {}
    for t, pid, partition in records.refresh():
        if t > killed_at and pid == survivor and partition in lost and partition not in firsts:
            firsts[partition] = t
    return max(firsts.values()) - killed_at if len(firsts) == len(lost) else None


def _produce(config: dict[str, Any], topic: str, stop: threading.Event, rate: float) -> None:
    producer = Producer({**config, "linger.ms": 5})
    n = 0
    while not stop.is_set():
        producer.produce(topic, json.dumps({"n": n}).encode(), key=f"k{n}".encode(), partition=n % PARTITIONS)
        producer.poll(0)
        n += 1
        time.sleep(1 / rate)
    producer.flush(10)


def run_variant(broker: Broker, variant: str, kills: int, session_ms: int, work: Path) -> list[float]:
    config = {"bootstrap.servers": broker.bootstrap_servers}
    topic, group = f"failover-{variant}-{uuid.uuid4().hex[:6]}", f"g-{uuid.uuid4().hex[:6]}"
    ensure_topics(config, [TopicSpec(topic, PARTITIONS)])
    env = {"KW_GROUP_PROTOCOL": "consumer" if variant == "consumer" else "classic"}
    if variant == "classic-session":
        env["KAFKA_CONFIG"] = json.dumps({"group.protocol": "classic", "partition.assignment.strategy":
                                          "cooperative-sticky", "session.timeout.ms": session_ms,
                                          "heartbeat.interval.ms": max(500, session_ms // 4)})
    elif variant == "before":  # librdkafka's own defaults, which workers used before
        env["KAFKA_CONFIG"] = json.dumps({"group.protocol": "classic", "partition.assignment.strategy":
                                          "cooperative-sticky", "session.timeout.ms": 45000,
                                          "heartbeat.interval.ms": 3000})
    record = work / f"{variant}.jsonl"
    records = Records(record)
    stop = threading.Event()
    producer = threading.Thread(target=_produce, args=(config, topic, stop, 100.0), daemon=True)
    producer.start()
    workers = [start_worker(config, topic, group, HANDLER, record, "--partitions", str(PARTITIONS),
                            log=work / f"{variant}.log", env=env) for _ in range(2)]
    rng = random.Random()
    samples: list[float] = []
    try:
        for kill in range(kills):
            both_handle = partial(_both_handle, records, list(workers))
            wait_for(both_handle, 180, f"{variant}: both workers handling messages", 0.2)
            time.sleep(rng.uniform(0.5, 1.5))
            owners = wait_for(both_handle, 60, f"{variant}: both workers handling messages", 0.2)
            victim = rng.choice(workers)
            survivor = next(w for w in workers if w is not victim)
            lost = {p for p, pid in owners.items() if pid == victim.pid}
            killed_at = time.time()
            victim.kill()
            victim.wait(10)

            taken_over = partial(_taken_over, records, killed_at, survivor.pid, lost)
            took = wait_for(taken_over, 300, f"{variant}: the survivor to take partitions {sorted(lost)}", 0.1)
            samples.append(round(took, 2))
            print(f"{variant} kill {kill + 1}: partitions {sorted(lost)} handled again after {took:.2f}s",
                  flush=True)
            workers = [survivor, start_worker(config, topic, group, HANDLER, record, "--partitions",
                                              str(PARTITIONS), log=work / f"{variant}.log", env=env)]
    finally:
        stop.set()
        producer.join(15)
        for w in workers:
            if w.poll() is None:
                w.terminate()
        for w in workers:
            try:
                w.wait(30)
            except Exception:  # noqa: BLE001 - make sure it is gone
                w.kill()
    return samples


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kills", type=int, default=5)
    parser.add_argument("--session-ms", type=int, default=4000,
                        help="session timeout of both protocols (broker side for KIP-848, client side for classic)")
    parser.add_argument("--variants", default="consumer,classic-session")
    parser.add_argument("--smoke", action="store_true",
                        help="one kill of one variant: checks the bench runs, its figures mean nothing")
    args = parser.parse_args()
    if args.smoke:
        args.kills, args.variants = 1, "consumer"
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    work = Path(tempfile.mkdtemp(prefix="bench-failover-", dir=REPO / ".state"))
    broker = Broker(work / "kafka", port=free_port(), extra={
        "group.consumer.session.timeout.ms": str(args.session_ms),
        "group.consumer.min.session.timeout.ms": str(min(args.session_ms, 3000)),
        "group.min.session.timeout.ms": str(min(args.session_ms, 3000)),
    }).start()
    results: dict[str, Any] = {}
    try:
        for variant in variants:
            samples = run_variant(broker, variant, args.kills, args.session_ms, work)
            results[variant] = {"p50_s": round(statistics.median(samples), 2), "max_s": max(samples),
                                "samples_s": samples}
    finally:
        broker.stop()
    base = results[variants[0]]["p50_s"]
    summary = {"bench": "failover", "smoke": args.smoke, "kills": args.kills, "session_ms": args.session_ms,
               "cpus": os.cpu_count(), "baseline": variants[0], "variants": results,
               "p50_ratio_to_baseline": {v: round(r["p50_s"] / base, 2) for v, r in results.items()}}
    shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(summary), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
