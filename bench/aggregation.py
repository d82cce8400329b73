"""Aggregation throughput: commands/s through the atomic KV store, exactly-once vs at-least-once, Quix, Kafka Streams.

Starts its own broker, writes the same command stream (R requests x J jobs: one init each, then
every job's completion in shuffled order plus 5 % duplicates) to three 3-partition command topics,
and runs over each. The exactly-once and at-least-once runs take turns going first over several
rounds (`--rounds`, 3 by default; fresh topics every run), and the best round of each counts, so a
machine that warms up or gets busy mid-run does not favour one of them (two single runs of the same
code measured ratios of 0.82 and 0.99). Then, once:

- eos: the StoreProcessor (TransactionalProcessor, one transaction per 1 s commit interval);
- alo: the same StoreHandler in a plain consumer + idempotent producer loop, no transactions,
  store writes flushed and offsets committed every 1 s (at-least-once);
- quix: Quix Streams with processing_guarantee="exactly-once", commit_interval=1 s, the same
  accounting (per-key state: one entry per seen job index, a count, the total; one completion
  message when count == total). Quix pins confluent-kafka<2.13, so it runs in its own venv
  (.state/bench/quix-venv, created on first use) instead of downgrading the project's.
- streams: Kafka Streams (the Kafka version the stack runs) with processing.guarantee=exactly_once_v2,
  commit.interval.ms=1000, one stream thread, the same accounting in a RocksDB store with its
  changelog (bench/streams/: StreamsStore.java). Maven builds it on first use into
  .state/bench/streams (rebuilt when its pom or source changes); `--no-streams` skips it. A smoke
  run includes it (a tiny stream): the build is seconds once Maven's cache holds the jars.

Each rate is commands / (last completion visible to a read_committed reader - first command
processed), so process start-up and group joins are not counted. Last line: one JSON object.

    .venv/bin/python bench/aggregation.py [--requests 400] [--jobs 1000] [--no-quix] [--no-streams]
        [--smoke] [--bootstrap HOST:PORT]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.common import add_bench_args, bench_broker  # noqa: E402
from stack import reaper  # noqa: E402

QUIX_VERSION = "3.28.1"
QUIX_VENV = REPO / ".state" / "bench" / "quix-venv"
STREAMS_SRC = REPO / "bench" / "streams"
STREAMS_BUILD = REPO / ".state" / "bench" / "streams"


# -- the Quix app (runs in the Quix venv: only the standard library and quixstreams) -------------
def quix_app(bootstrap: str, topic: str, output: str, group: str, started_file: str) -> None:
    from quixstreams import Application, State

    app = Application(broker_address=bootstrap, consumer_group=group, auto_offset_reset="earliest",
                      processing_guarantee="exactly-once", commit_interval=1.0,
                      state_dir=tempfile.mkdtemp(prefix="quix-state-"), loglevel="WARNING")
    commands = app.topic(topic, value_deserializer="json")
    out = app.topic(output, value_serializer="json")
    first: list[float] = []

    def count(command: dict[str, Any], state: State) -> dict[str, Any] | None:
        if not first:
            first.append(time.time())
            Path(started_file).write_text(str(first[0]))
        total = state.get("total")
        done = total is not None and state.get("count", 0) >= total
        if done:
            return None
        if command["op"] == "init":
            if total is None:
                state.set("total", command["total"])
                total = command["total"]
        else:
            key = f"job:{command['job']}"
            if state.get(key) is not None:
                return None
            state.set(key, 1)
            state.set("count", state.get("count", 0) + 1)
        n = state.get("count", 0)
        if total is not None and n >= total:
            return {"request_id": command["request_id"], "completed": n, "total": total}
        return None

    sdf = app.dataframe(commands)
    sdf = sdf.apply(count, stateful=True).filter(lambda v: v is not None)
    sdf.to_topic(out)
    app.run()


def ensure_quix_venv() -> Path:
    python = QUIX_VENV / "bin" / "python"
    if python.exists():
        probe = subprocess.run([str(python), "-c", "import quixstreams; print(quixstreams.__version__)"],
                               capture_output=True, text=True)
        if probe.returncode == 0 and probe.stdout.strip() == QUIX_VERSION:
            return python
    print(f"creating {QUIX_VENV} with quixstreams=={QUIX_VERSION} (once)", flush=True)
    subprocess.run([sys.executable, "-m", "venv", "--clear", str(QUIX_VENV)], check=True)
    subprocess.run([str(python), "-m", "pip", "install", "-q", f"quixstreams=={QUIX_VERSION}"], check=True)
    return python


# -- the bench (project venv) ------------------------------------------------------------------
def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=400)
    parser.add_argument("--jobs", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=3, help="rounds of eos and alo, taking turns at going first")
    parser.add_argument("--no-quix", action="store_true", help="skip the Quix Streams run")
    parser.add_argument("--no-streams", action="store_true", help="skip the Kafka Streams run")
    parser.add_argument("--no-latency", action="store_true",
                        help="skip the completion-to-notify latency in airflow standalone")
    parser.add_argument("--latency-requests", type=int, default=5)
    add_bench_args(parser)
    parser.add_argument("--quix-app", nargs=5, metavar=("BOOTSTRAP", "TOPIC", "OUTPUT", "GROUP", "STARTED"),
                        help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.quix_app:
        quix_app(*args.quix_app)
        return 0

    sys.path.insert(1, str(REPO / "include"))
    if args.smoke:  # the Quix venv and the Airflow stack are minutes of set-up: a smoke run checks ours and Streams
        args.requests, args.jobs, args.rounds, args.no_quix, args.no_latency = 4, 20, 1, True, True
    commands = command_stream(args.requests, args.jobs)
    results: dict[str, Any] = {"smoke": args.smoke, "requests": args.requests, "jobs_per_request": args.jobs,
                               "commands": len(commands), "commit_interval_s": 1.0}
    with bench_broker(args) as config:
        rates: dict[str, list[float]] = {"alo": [], "eos": []}
        for round_ in range(args.rounds):
            for mode in (("alo", "eos") if round_ % 2 == 0 else ("eos", "alo")):
                rate, detail = run_ours(config, mode, commands, args.requests)
                rates[mode].append(rate)
                results[f"{mode}_detail"] = detail
                print(f"round {round_ + 1} {mode}: {rate:,.0f} commands/s ({detail})", flush=True)
        for mode, runs in rates.items():
            results[f"commands_per_s_{mode}"] = round(max(runs))
            results[f"commands_per_s_{mode}_rounds"] = [round(r) for r in runs]
        results["rounds"] = args.rounds
        if not args.no_quix:
            rate = run_quix(config, commands, args.requests)
            results["commands_per_s_quix"] = round(rate)
            results["quix_version"] = QUIX_VERSION
            print(f"quix {QUIX_VERSION} exactly-once: {rate:,.0f} commands/s", flush=True)
        if not args.no_streams:
            rate, version = run_streams(config, commands, args.requests)
            results["commands_per_s_streams"] = round(rate)
            results["streams_version"] = version
            print(f"kafka streams {version} exactly_once_v2: {rate:,.0f} commands/s", flush=True)
    results["ratio_vs_alo"] = round(results["commands_per_s_eos"] / results["commands_per_s_alo"], 3)
    if "commands_per_s_quix" in results:
        results["ratio_vs_quix"] = round(results["commands_per_s_eos"] / results["commands_per_s_quix"], 3)
    if "commands_per_s_streams" in results:
        results["ratio_vs_streams"] = round(results["commands_per_s_eos"] / results["commands_per_s_streams"], 3)
    if not args.no_latency:
        # The last job's completion acknowledged -> notify's start_date, the DAG as shipped.
        sys.path.insert(0, str(REPO / "bench"))
        from completion_latency import measure

        latency = measure(requests=args.latency_requests, variants=("end_from_trigger",))["end_from_trigger"]
        results["completion_to_notify_p50_s"] = latency["notify_start"]["p50"]
        results["completion_to_notify_p95_s"] = latency["notify_start"]["p95"]
        results["latency_failed_runs"] = latency["failed_runs"]
        print(f"completion -> notify: p50 {latency['notify_start']['p50']:.2f}s, "
              f"p95 {latency['notify_start']['p95']:.2f}s", flush=True)
    print(json.dumps(results))
    return 0


def command_stream(requests: int, jobs: int) -> list[tuple[str, bytes]]:
    rng = random.Random(7)
    ids = [f"import-{n:04d}" for n in range(requests)]
    inits = [(rid, json.dumps({"op": "init", "request_id": rid, "total": jobs}).encode()) for rid in ids]
    completes = [(rid, json.dumps({"op": "complete", "request_id": rid, "job": j}).encode())
                 for rid in ids for j in range(jobs)]
    completes += rng.sample(completes, len(completes) // 20)
    rng.shuffle(completes)
    return inits + completes


def produce(config: dict[str, str], topic: str, commands: Iterable[tuple[str, bytes]]) -> None:
    from confluent_kafka import Producer

    producer = Producer({**config, "linger.ms": 20, "batch.num.messages": 10000, "enable.idempotence": True,
                         "partitioner": "murmur2_random"})
    for key, value in commands:
        while True:
            try:
                producer.produce(topic, value, key=key.encode())
                break
            except BufferError:
                producer.poll(0.05)
    if producer.flush(120):
        raise RuntimeError(f"could not write the commands to {topic}")


class CompletionWatcher(threading.Thread):
    """A read_committed reader of the output topic: when did the last completion become visible?"""

    def __init__(self, config: dict[str, str], topic: str, expected: int) -> None:
        super().__init__(daemon=True)
        from confluent_kafka import Consumer

        self.consumer = Consumer({**config, "group.id": f"watch-{uuid.uuid4().hex}", "auto.offset.reset": "earliest",
                                  "isolation.level": "read_committed", "enable.auto.commit": False})
        self.topic, self.expected = topic, expected
        self.seen: set[str] = set()
        self.done_at = 0.0
        self.done = threading.Event()

    def run(self) -> None:
        self.consumer.subscribe([self.topic])
        try:
            while len(self.seen) < self.expected:
                for msg in self.consumer.consume(100, 0.05):
                    if not msg.error() and msg.value() is not None:
                        self.seen.add(msg.key().decode())
            self.done_at = time.time()
            self.done.set()
        finally:
            self.consumer.close()


def run_ours(config: dict[str, str], mode: str, commands: list[tuple[str, bytes]], requests: int
             ) -> tuple[float, str]:
    from kafka_workflows.store import StoreHandler, StoreProcessor, ensure_store_topics, events_topic

    name = f"bench-{mode}-{uuid.uuid4().hex[:6]}"
    ensure_store_topics(config, name, partitions=3)
    produce(config, f"{name}.commands", commands)
    watcher = CompletionWatcher(config, events_topic(name), requests)
    watcher.start()
    first: list[float] = []

    def timed(process: Callable[[Any], Any]) -> Callable[[Any], Any]:
        def wrapper(message: Any) -> Any:
            if not first:
                first.append(time.time())
            return process(message)
        return wrapper

    if mode == "eos":
        processor = StoreProcessor(config, name, commit_interval=1.0)
        processor.handler.process = timed(processor.handler.process)  # type: ignore[method-assign]
        thread = threading.Thread(target=processor.run, daemon=True)
        thread.start()
        if not watcher.done.wait(600):
            raise RuntimeError("exactly-once run did not finish")
        processor.stop()
        thread.join(60)
        stats = processor.processor.stats
        detail = f"{stats.commits} transactions"
    else:
        handler = StoreHandler(config, name)
        handler.process = timed(handler.process)  # type: ignore[method-assign]
        stop = threading.Event()
        thread = threading.Thread(target=at_least_once_loop, args=(config, name, handler, stop), daemon=True)
        thread.start()
        if not watcher.done.wait(600):
            raise RuntimeError("at-least-once run did not finish")
        stop.set()
        thread.join(60)
        detail = "plain consumer + idempotent producer"
    return len(commands) / (watcher.done_at - first[0]), detail


def at_least_once_loop(config: dict[str, str], name: str, handler: Any, stop: threading.Event) -> None:
    """The StoreHandler without transactions: flush outputs, then commit offsets, every second."""
    from confluent_kafka import Consumer, Producer, TopicPartition

    from kafka_workflows.eos import Output
    from kafka_workflows.store import commands_topic

    handler.open()
    consumer = Consumer({**config, "group.id": f"{name}.alo", "enable.auto.commit": False,
                         "auto.offset.reset": "earliest", "partition.assignment.strategy": "cooperative-sticky"})
    producer = Producer({**config, "enable.idempotence": True, "acks": "all", "linger.ms": 5,
                         "partitioner": "murmur2_random"})

    def on_assign(c: Any, partitions: list[Any]) -> None:
        handler.on_assign([(p.topic, p.partition) for p in partitions])
        c.incremental_assign(partitions)

    consumer.subscribe([commands_topic(name)], on_assign=on_assign)
    positions: dict[tuple[str, int], int] = {}
    last_commit = time.monotonic()

    def send(outputs: Iterable[Output]) -> None:
        for out in outputs:
            kwargs: dict[str, Any] = {"key": out.key.encode() if isinstance(out.key, str) else out.key}
            if out.partition is not None:
                kwargs["partition"] = out.partition
            producer.produce(out.topic, out.value, **kwargs)

    while not stop.is_set():
        for msg in consumer.consume(1000, 0.1):
            if msg.error():
                continue
            send(handler.process(msg))
            positions[(msg.topic(), msg.partition())] = msg.offset() + 1
        if positions and time.monotonic() - last_commit >= 1.0:
            send(handler.before_commit())
            if producer.flush(60):
                raise RuntimeError("store writes not acknowledged")
            consumer.commit(offsets=[TopicPartition(t, p, o) for (t, p), o in positions.items()], asynchronous=False)
            positions.clear()
            last_commit = time.monotonic()
    consumer.close()
    handler.close()


def run_quix(config: dict[str, str], commands: list[tuple[str, bytes]], requests: int) -> float:
    from kafka_workflows.kafka.admin import TopicSpec, ensure_topics

    python = ensure_quix_venv()
    topic = f"bench-quix-{uuid.uuid4().hex[:6]}"
    output = f"{topic}.completions"
    ensure_topics(config, [TopicSpec(topic, 3), TopicSpec(output, 3)])
    produce(config, topic, commands)
    watcher = CompletionWatcher(config, output, requests)
    watcher.start()
    with tempfile.TemporaryDirectory(prefix="kw-bench-quix-") as tmp:
        started = Path(tmp) / "started"
        log = open(Path(tmp) / "quix.log", "wb")  # noqa: SIM115 - the child writes it
        proc = reaper.popen([str(python), str(Path(__file__).resolve()), "--quix-app",
                             config["bootstrap.servers"], topic, output, f"{topic}.group", str(started)],
                            stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONPATH": ""})
        try:
            while not watcher.done.wait(0.5):
                if proc.poll() is not None:
                    raise RuntimeError(f"the Quix app exited with {proc.returncode}:\n"
                                       f"{(Path(tmp) / 'quix.log').read_text()[-3000:]}")
        finally:
            proc.terminate()
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
            log.close()
        first = float(started.read_text())
    return len(commands) / (watcher.done_at - first)


# -- Kafka Streams (a Java app built by Maven, cached under .state/bench/streams) ----------------
def ensure_streams_app() -> tuple[str, str]:
    """The classpath of the built StreamsStore app and its Kafka Streams version; builds it when its
    pom or source changed (the stamp), the way stack/broker.py resolves the broker's jars."""
    import hashlib
    import re
    import shutil

    sources = [STREAMS_SRC / "pom.xml", *sorted((STREAMS_SRC / "src").rglob("*.java"))]
    stamp = hashlib.sha256(b"".join(p.read_bytes() for p in sources)).hexdigest()
    target = STREAMS_BUILD / "target"
    stamp_file = STREAMS_BUILD / ".stamp"
    match = re.search(r"<kafka.version>([^<]+)</kafka.version>", (STREAMS_SRC / "pom.xml").read_text())
    version = match.group(1) if match else "?"
    classpath = f"{target / 'classes'}:{target / 'libs'}/*"
    if stamp_file.exists() and stamp_file.read_text() == stamp and (target / "classes").is_dir():
        return classpath, version
    if shutil.which("mvn") is None or shutil.which("java") is None:
        raise RuntimeError("Java 17+ and Maven are needed to build the Kafka Streams app (mvn/java not on PATH)")
    shutil.rmtree(STREAMS_BUILD, ignore_errors=True)
    STREAMS_BUILD.mkdir(parents=True)
    print(f"building the Kafka Streams app into {STREAMS_BUILD} (once)", flush=True)
    done = subprocess.run(["mvn", "-B", "-q", "-f", str(STREAMS_SRC / "pom.xml"), "package",
                           "dependency:copy-dependencies", f"-DbuildDirectory={target}",
                           f"-DoutputDirectory={target / 'libs'}", "-DincludeScope=runtime"],
                          capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"Maven could not build the Kafka Streams app:\n{done.stdout[-4000:]}{done.stderr[-4000:]}")
    stamp_file.write_text(stamp)
    return classpath, version


def run_streams(config: dict[str, str], commands: list[tuple[str, bytes]], requests: int) -> tuple[float, str]:
    from kafka_workflows.kafka.admin import TopicSpec, ensure_topics

    classpath, version = ensure_streams_app()
    topic = f"bench-streams-{uuid.uuid4().hex[:6]}"
    output = f"{topic}.completions"
    ensure_topics(config, [TopicSpec(topic, 3), TopicSpec(output, 3)])
    produce(config, topic, commands)
    watcher = CompletionWatcher(config, output, requests)
    watcher.start()
    with tempfile.TemporaryDirectory(prefix="kw-bench-streams-") as tmp:
        started = Path(tmp) / "started"
        log_path = Path(tmp) / "streams.log"
        log = open(log_path, "wb")  # noqa: SIM115 - the child writes it
        proc = reaper.popen(["java", "-cp", classpath, "io.kafkaworkflows.bench.StreamsStore",
                             config["bootstrap.servers"], topic, output, f"{topic}-app", str(Path(tmp) / "state"),
                             str(started)], stdout=log, stderr=subprocess.STDOUT)
        try:
            while not watcher.done.wait(0.5):
                if proc.poll() is not None:
                    raise RuntimeError(f"the Kafka Streams app exited with {proc.returncode}:\n"
                                       f"{log_path.read_text(errors='replace')[-3000:]}")
        finally:
            proc.terminate()  # its shutdown hook closes the Streams client
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
            log.close()
        first = float(started.read_text())
    return len(commands) / (watcher.done_at - first), version


if __name__ == "__main__":
    sys.exit(main())
