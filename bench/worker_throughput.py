"""Worker throughput vs a raw confluent-kafka consume-and-commit loop, same topic, same run.

Starts its own broker, writes N 1 KiB JSON messages to a 3-partition topic, then reads them all
with (a) a bare loop: consume batches, store offsets, auto-commit (what any at-least-once
consumer must do at least), (b) the kafka-workflows Worker with a no-op message handler (value
decoded before the call, latency histogram, policy bookkeeping, offsets) and (c) the Worker with
a no-op batch handler (`@batch_handler`: one call per run of a partition's messages, values
decoded when read). Beside them, the message handler that reads each value, (d) JSON and (e) Avro
through a schema registry (the same record, ~1 KiB, in the registry's wire format on a topic of its
own, decoded once at the worker's boundary with confluent-kafka's AvroDeserializer): what decoding
costs per message. After one uncounted warm-up read, they run `--rounds` times, each in a fresh
consumer group, taking turns at going first; the best round of each counts (this machine's noise
only ever slows a run down). Last line: one JSON object with each ratio to the same bare loop and
the decoding costs in microseconds per message.

    .venv/bin/python bench/worker_throughput.py [--messages 300000] [--rounds 5] [--smoke] [--bootstrap HOST:PORT]
                                                [--registry URL]    (default: starts its own Apicurio Registry)
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

sys.path[:0] = [str(Path(__file__).resolve().parents[1]), str(Path(__file__).resolve().parents[1] / "include")]

from confluent_kafka import Producer  # noqa: E402

from bench.common import add_bench_args, bench_broker, handled_per_second, raw_loop  # noqa: E402
from kafka_workflows.handlers import batch_handler  # noqa: E402
from kafka_workflows.kafka.admin import TopicSpec, ensure_topics  # noqa: E402
from kafka_workflows.messages import Message, MessageBatch  # noqa: E402
from kafka_workflows.worker import Worker  # noqa: E402

RECORD = {"type": "record", "name": "BenchRequest", "namespace": "kw.bench",
          "fields": [{"name": "user_id", "type": "string"}, {"name": "pad", "type": "string"}]}


def produce(config: dict[str, str], topic: str, n: int, codec: Any = None) -> None:
    producer = Producer({**config, "linger.ms": 20, "batch.num.messages": 10000, "enable.idempotence": True})
    record = {"user_id": "u", "pad": "x" * 990}
    value = json.dumps(record).encode() if codec is None else codec.encode(record)
    assert 995 <= len(value) <= 1100
    for i in range(n):
        while True:
            try:
                producer.produce(topic, value, key=f"user-{i % 1000}".encode(),
                                 headers=[("kw-request-id", b"bench"), ("kw-attempt", b"1")])
                break
            except BufferError:
                producer.poll(0.05)
    producer.flush(60)


def worker_loop(config: dict[str, str], topic: str, n: int, batch: bool, read_value: bool = False,
                codecs: dict[str, Any] | None = None) -> float:
    first: list[float] = []

    def noop(message: Message) -> None:
        if not first:
            first.append(time.perf_counter())

    def reads(message: Message) -> None:
        if not first:
            first.append(time.perf_counter())
        message.value["user_id"]

    @batch_handler
    def noop_batch(messages: MessageBatch) -> None:
        if not first:
            first.append(time.perf_counter())

    handler = noop_batch if batch else reads if read_value else noop
    worker = Worker(config, [topic], f"worker-{uuid.uuid4().hex}", handler, codecs=codecs)
    return handled_per_second(worker, n, first)


@contextmanager
def bench_registry(args: argparse.Namespace) -> Iterator[str]:
    """`--registry`'s URL, or an Apicurio Registry started (and stopped) here."""
    if args.registry:
        yield args.registry
        return
    import tempfile

    from stack.broker import free_port
    from stack.registry import SchemaRegistry

    with tempfile.TemporaryDirectory(prefix="kw-bench-registry-") as tmp, \
            SchemaRegistry(Path(tmp), port=free_port()) as registry:
        yield registry.url


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=300_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--registry", metavar="URL", help="a schema registry's Confluent-compatible API "
                        "(default: start Apicurio Registry, as ./dev up does)")
    add_bench_args(parser)
    args = parser.parse_args()
    if args.smoke:
        args.messages, args.rounds = 2_000, 1
    with bench_broker(args) as config, bench_registry(args) as registry_url:
        topic = f"bench-requests-{uuid.uuid4().hex[:8]}"
        avro_topic = f"{topic}-avro"
        ensure_topics(config, [TopicSpec(topic, partitions=3), TopicSpec(avro_topic, partitions=3)])
        produce(config, topic, args.messages)
        from kafka_workflows.schemas.registry import RegistrySettings
        from kafka_workflows.schemas.resolve import codec as make_codec

        avro = make_codec({"topic": avro_topic, "format": "avro", "schema_str": json.dumps(RECORD)},
                          RegistrySettings(registry_url))
        produce(config, avro_topic, args.messages, avro)
        # The broker and the page cache warm up over the first reads of the topic: one read that
        # does not count, then rounds that rotate who goes first.
        print(f"warm-up: raw {raw_loop(config, topic, args.messages):,.0f} msg/s (not counted)", flush=True)
        runs = {"raw": lambda: raw_loop(config, topic, args.messages),
                "message_handler": lambda: worker_loop(config, topic, args.messages, batch=False),
                "batch_handler": lambda: worker_loop(config, topic, args.messages, batch=True),
                "json_value_handler": lambda: worker_loop(config, topic, args.messages, False, read_value=True),
                "avro_value_handler": lambda: worker_loop(config, avro_topic, args.messages, False, read_value=True,
                                                          codecs={avro_topic: avro})}
        rates: dict[str, list[float]] = {name: [] for name in runs}
        for round_ in range(args.rounds):
            order = list(runs)[round_ % len(runs):] + list(runs)[:round_ % len(runs)]
            for name in order:
                rates[name].append(runs[name]())
            print(f"round {round_ + 1}: " + ", ".join(f"{name} {rates[name][-1]:,.0f} msg/s" for name in order),
                  flush=True)
    raw = rates.pop("raw")
    worker = rates
    ratio = {kind: round(max(runs) / max(raw), 3) for kind, runs in worker.items()}
    best = {kind: max(runs) for kind, runs in worker.items()}

    def cost_us(kind: str) -> float:  # what reading the value adds per message, over the no-op handler
        return round((1 / best[kind] - 1 / best["message_handler"]) * 1e6, 2)

    target = ("message_handler", "batch_handler")
    result = {"smoke": args.smoke, "messages": args.messages, "value_bytes": 1024, "rounds": args.rounds,
              "raw_msgs_per_s": round(max(raw)),
              "worker_msgs_per_s": {kind: round(rate) for kind, rate in best.items()},
              "ratio": ratio, "target_ratio": 0.8, "target_met": {kind: ratio[kind] >= 0.8 for kind in target},
              "decode_us_per_msg": {"json": cost_us("json_value_handler"), "avro": cost_us("avro_value_handler")}}
    print(json.dumps(result))


if __name__ == "__main__":
    main()
