"""Key-ordered concurrency: an I/O-bound handler at concurrency 1 vs 100, same topic, same run.

Starts its own broker, writes 20,000 small JSON messages with 1,000 keys to ONE partition, then
reads them with the kafka-workflows Worker and a handler that waits 20 ms per message: an
`async def` handler awaiting asyncio.sleep (one event loop) and a plain function calling
time.sleep (a thread pool). At concurrency 1 (one message at a time, today's path) a run would
take 400 s, so it is timed over its first `--baseline-messages` (default 1,000: a steady rate
after the first call); at concurrency 100 over all messages. Each run is a fresh consumer group;
`--rounds` rounds take turns at going first and the best round of each counts. Last line: one
JSON object with the rates and the ratio (target >= 50x).

    .venv/bin/python bench/concurrency.py [--messages 20000] [--keys 1000] [--rounds 1]
        [--smoke] [--bootstrap HOST:PORT]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
import uuid
from pathlib import Path

sys.path[:0] = [str(Path(__file__).resolve().parents[1]), str(Path(__file__).resolve().parents[1] / "include")]

from confluent_kafka import Producer  # noqa: E402

from bench.common import add_bench_args, bench_broker, handled_per_second  # noqa: E402
from kafka_workflows.kafka.admin import TopicSpec, ensure_topics  # noqa: E402
from kafka_workflows.messages import Message  # noqa: E402
from kafka_workflows.worker import Worker  # noqa: E402

WAIT = 0.020


def produce(config: dict[str, str], topic: str, n: int, keys: int) -> None:
    producer = Producer({**config, "linger.ms": 20, "enable.idempotence": True})
    for i in range(n):
        while True:
            try:
                producer.produce(topic, json.dumps({"n": i}).encode(), key=f"user-{i % keys}".encode(), partition=0)
                break
            except BufferError:
                producer.poll(0.05)
    producer.flush(60)


def run(config: dict[str, str], topic: str, n: int, kind: str, concurrency: int) -> float:
    """msg/s of one worker over the first `n` messages, from its first handler call."""
    first: list[float] = []

    async def awaits(message: Message) -> None:
        if not first:
            first.append(time.perf_counter())
        await asyncio.sleep(WAIT)

    def sleeps(message: Message) -> None:
        if not first:
            first.append(time.perf_counter())
        time.sleep(WAIT)

    worker = Worker(config, [topic], f"bench-{uuid.uuid4().hex}", awaits if kind == "async" else sleeps,
                    concurrency=concurrency)
    return handled_per_second(worker, n, first)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--keys", type=int, default=1_000)
    parser.add_argument("--baseline-messages", type=int, default=1_000)
    parser.add_argument("--concurrency", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=1)
    add_bench_args(parser)
    args = parser.parse_args()
    if args.smoke:
        args.messages, args.keys, args.baseline_messages, args.concurrency = 400, 40, 20, 20
    with bench_broker(args) as config:
        topic = f"bench-concurrency-{uuid.uuid4().hex[:8]}"
        ensure_topics(config, [TopicSpec(topic, partitions=1)])
        produce(config, topic, args.messages, args.keys)
        runs = {f"{kind}_c{c}": (kind, c, n) for kind in ("async", "threads")
                for c, n in ((1, args.baseline_messages), (args.concurrency, args.messages))}
        rates: dict[str, list[float]] = {name: [] for name in runs}
        for round_ in range(args.rounds):
            names = list(runs)
            order = names[round_ % len(names):] + names[:round_ % len(names)]
            for name in order:
                kind, c, n = runs[name]
                rates[name].append(run(config, topic, n, kind, c))
                print(f"round {round_ + 1}: {name} {rates[name][-1]:,.1f} msg/s over {n:,} messages", flush=True)
    best = {name: max(r) for name, r in rates.items()}
    c = args.concurrency
    ratio = {kind: round(best[f"{kind}_c{c}"] / best[f"{kind}_c1"], 1) for kind in ("async", "threads")}
    print(json.dumps({"smoke": args.smoke, "messages": args.messages, "keys": args.keys, "partitions": 1,
                      "handler_wait_ms": WAIT * 1000,
                      "baseline_messages": args.baseline_messages, "rounds": args.rounds, "concurrency": c,
                      "msgs_per_s": {name: round(r, 1) for name, r in best.items()},
                      "ratio": ratio, "target_ratio": 50, "target_met": {k: r >= 50 for k, r in ratio.items()}}))


if __name__ == "__main__":
    main()
