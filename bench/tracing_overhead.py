"""What tracing costs the worker: off (no OpenTelemetry configured) against today's path, and on.

Writes N 1 KiB JSON job messages carrying what split writes (kw-request-id, kw-attempt, a W3C
traceparent) to a 3-partition topic, then reads them all with a no-op message handler:

- `off`: this tree's Worker, tracing off (the default: no OTEL_* variables);
- `today`: the Worker of the revision before tracing was added (its `include/`, taken out of git
  with `git archive` into a temporary folder), in a process of its own;
- `on`: this tree's Worker with tracing on: the OpenTelemetry SDK, a BatchSpanProcessor and an
  exporter that drops what it is given (the SDK's cost, not a backend's).

Each process measures a bare confluent-kafka consume-and-commit loop too, taking turns with the
worker, best round of each; every worker figure is a ratio to the bare loop of its own process, so
the two processes compare: `off_vs_today` = (off / its raw) / (today / its raw), target >= 0.97
(no cost when off: within 3 %). `on_vs_off` reports the cost with tracing on.

    .venv/bin/python bench/tracing_overhead.py [--messages 200000] [--rounds 5] [--baseline REV]
                                                [--smoke] [--bootstrap HOST:PORT]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
# A `--code DIR` child imports the worker from DIR/include (the baseline revision); the parent from this tree.
_CODE = sys.argv[sys.argv.index("--code") + 1] if "--code" in sys.argv else str(REPO)
sys.path[:0] = [str(REPO), str(Path(_CODE) / "include")]

from confluent_kafka import Producer  # noqa: E402

from bench.common import add_bench_args, bench_broker, handled_per_second, raw_loop  # noqa: E402
from kafka_workflows.kafka.admin import TopicSpec, ensure_topics  # noqa: E402
from kafka_workflows.messages import Message  # noqa: E402
from kafka_workflows.worker import Worker  # noqa: E402

TRACED_FILE = "include/kafka_workflows/observe/tracing.py"
TARGET = 0.97


def produce(config: dict[str, str], topic: str, n: int) -> None:
    producer = Producer({**config, "linger.ms": 20, "batch.num.messages": 10000, "enable.idempotence": True})
    value = json.dumps({"user_id": "u", "pad": "x" * 990}).encode()
    for i in range(n):
        headers = [("kw-request-id", b"bench"), ("kw-attempt", b"1"),
                   ("traceparent", f"00-{uuid.uuid4().hex}-{i + 1:016x}-01".encode())]
        while True:
            try:
                producer.produce(topic, value, key=f"user-{i % 1000}".encode(), headers=headers)
                break
            except BufferError:
                producer.poll(0.05)
    producer.flush(60)


def worker_loop(config: dict[str, str], topic: str, n: int) -> float:
    first: list[float] = []

    def noop(message: Message) -> None:
        if not first:
            first.append(time.perf_counter())

    worker = Worker(config, [topic], f"worker-{uuid.uuid4().hex}", noop)
    return handled_per_second(worker, n, first)


def measure(config: dict[str, str], topic: str, n: int, rounds: int, kinds: list[str]) -> dict[str, float]:
    """Best msg/s of each of `kinds` ("raw", "worker", "on") over `rounds`, taking turns at going first."""
    def traced() -> float:
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

        from kafka_workflows.observe import tracing  # only this tree has it: never imported for "today"

        class Drop(SpanExporter):
            def export(self, spans: Any) -> SpanExportResult:
                return SpanExportResult.SUCCESS

        provider = TracerProvider()
        provider.add_span_processor(BatchSpanProcessor(Drop()))
        tracing.enable(provider)
        try:
            return worker_loop(config, topic, n)
        finally:
            tracing.disable()
            provider.shutdown()

    runs = {"raw": lambda: raw_loop(config, topic, n), "worker": lambda: worker_loop(config, topic, n),
            "on": traced}
    best: dict[str, float] = {}
    for round_ in range(rounds):
        order = kinds[round_ % len(kinds):] + kinds[:round_ % len(kinds)]
        for kind in order:
            best[kind] = max(best.get(kind, 0.0), runs[kind]())
        print(f"[{'today' if str(REPO) != _CODE else 'this tree'}] round {round_ + 1}: "
              + ", ".join(f"{k} {best[k]:,.0f}" for k in order), file=sys.stderr, flush=True)
    return best


def baseline_revision(rev: str | None) -> str:
    """`rev`, else the revision before the one that added observe/tracing.py."""
    if rev:
        return rev
    added = subprocess.run(["git", "-C", str(REPO), "log", "--diff-filter=A", "--format=%H", "-1", "--",
                            TRACED_FILE], capture_output=True, text=True, check=False).stdout.strip()
    if not added:
        raise SystemExit(f"no commit adds {TRACED_FILE} (not a git checkout?): give --baseline REV")
    known = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--verify", "-q", f"{added}^"],
                           capture_output=True, text=True, check=False)
    if known.returncode != 0:
        raise SystemExit(f"the revision before {added[:12]} is not in this clone (a shallow clone?): "
                         "fetch more history or give --baseline REV")
    return f"{added}^"


def today(args: argparse.Namespace, bootstrap: str, topic: str) -> dict[str, float]:
    """Today's worker (the baseline revision's include/) measured in a process of its own."""
    rev = baseline_revision(args.baseline)
    with tempfile.TemporaryDirectory(prefix="kw-bench-today-") as tmp:
        archive = subprocess.run(["git", "-C", str(REPO), "archive", rev, "include"], capture_output=True,
                                 check=True).stdout
        subprocess.run(["tar", "-x", "-C", tmp], input=archive, check=True)
        done = subprocess.run([sys.executable, __file__, "--code", tmp, "--child", "--bootstrap", bootstrap,
                               "--topic", topic, "--messages", str(args.messages), "--rounds", str(args.rounds)],
                              capture_output=True, text=True, check=False, timeout=3600)
        sys.stderr.write(done.stderr[-2000:])
        if done.returncode != 0:
            raise SystemExit(f"the baseline ({rev}) run failed ({done.returncode})")
        return json.loads(done.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=200_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--baseline", metavar="REV", help="today's revision (default: the one before tracing)")
    parser.add_argument("--code", help=argparse.SUPPRESS)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--topic", help=argparse.SUPPRESS)
    add_bench_args(parser)
    args = parser.parse_args()
    if args.child:  # today's worker: its raw loop and its worker, on the parent's topic
        print(json.dumps(measure({"bootstrap.servers": args.bootstrap}, args.topic, args.messages, args.rounds,
                                 ["raw", "worker"])))
        return
    if args.smoke:
        args.messages, args.rounds = 2_000, 1
    with bench_broker(args) as config:
        topic = f"bench-traced-{uuid.uuid4().hex[:8]}"
        ensure_topics(config, [TopicSpec(topic, partitions=3)])
        produce(config, topic, args.messages)
        raw_loop(config, topic, args.messages)  # warm-up: the broker and the page cache, not counted
        here = measure(config, topic, args.messages, args.rounds, ["raw", "worker", "on"])
        try:
            rev: str | None = baseline_revision(args.baseline)
            base = today(args, config["bootstrap.servers"], topic)
        except SystemExit as exc:
            if not args.smoke:
                raise
            # A smoke run proves this tree's paths run; without history there is no "today" to compare.
            print(f"smoke: no baseline: {exc}", file=sys.stderr)
            rev, base = None, {"raw": here["raw"], "worker": here["worker"]}
    off_ratio, today_ratio = here["worker"] / here["raw"], base["worker"] / base["raw"]
    off_vs_today = round(off_ratio / today_ratio, 3)
    result = {"smoke": args.smoke, "messages": args.messages, "rounds": args.rounds,
              "baseline": rev,
              "msgs_per_s": {"raw": round(here["raw"]), "off": round(here["worker"]), "on": round(here["on"]),
                             "today_raw": round(base["raw"]), "today": round(base["worker"])},
              "off_ratio_to_raw": round(off_ratio, 3), "today_ratio_to_raw": round(today_ratio, 3),
              "off_vs_today": off_vs_today, "target": TARGET, "target_met": off_vs_today >= TARGET,
              "on_vs_off": round(here["on"] / here["worker"], 3)}
    print(json.dumps(result))


if __name__ == "__main__":
    main()
