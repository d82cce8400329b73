"""Many deferred awaits on one triggerer process: memory, store consumers, and how soon each fires.

Runs in one process what a triggerer does for `await` steps: `StoreCompletionTrigger.run()`
coroutines on one asyncio loop (its Kafka config given directly instead of from the Airflow
connection). Starts its own broker and a store processor (in a thread of this process, commit
interval 1 s, as the examples' stores), registers `--awaits` requests of one job each, starts
one trigger per request and waits until all of them wait. Then it completes the requests at
about 200 a second, noting for each the moment its `complete` command was acknowledged (t0),
and the moment its trigger fired (t1). Reported: t1 - t0 (p50, p95, max), the number of store
consumers the triggers share, and the resident memory the waiting triggers added.

The baseline, in the same process first: one await alone, the same way. The ratio is the p95
of the many over that of the one.

Targets from issue 12: one store consumer, extra RSS < 100 MB, p95 <= 2 s.

    .venv/bin/python bench/awaits.py [--awaits 1000] [--smoke] [--bootstrap HOST:PORT]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "include"), str(REPO / "plugins")]
os.environ.setdefault("AIRFLOW_HOME", tempfile.mkdtemp(prefix="bench-awaits-airflow-"))

import psutil  # noqa: E402

from bench.common import add_bench_args, bench_broker  # noqa: E402
from kafka_workflows.store import StoreClient, StoreProcessor, ensure_store_topics  # noqa: E402
from kafka_workflows_airflow.triggers.completion import StoreCompletionTrigger, active_readers  # noqa: E402


class Trigger(StoreCompletionTrigger):
    """The product's trigger with its Kafka config given, not read from the `kafka_default` connection."""

    config: dict[str, Any] = {}

    def _kafka_config(self) -> dict[str, Any]:
        return dict(self.config)


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def _round(config: dict[str, Any], store: str, count: int, rate: float) -> dict[str, Any]:
    """`count` awaits, then their completions at `rate` a second: latencies and memory."""
    client = StoreClient(config, store)
    ids = [f"r-{uuid.uuid4().hex[:10]}" for _ in range(count)]
    for rid in ids:
        client.init(rid, 1, flush=False)
    client.flush()
    process = psutil.Process()
    rss_before = process.memory_info().rss
    fired: dict[str, float] = {}

    async def wait(rid: str) -> None:
        async for event in Trigger(request_id=rid, store=store, linger=5.0).run():
            assert event.payload["status"] == "done", event.payload
            fired[rid] = time.time()

    tasks = [asyncio.create_task(wait(rid)) for rid in ids]
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:  # every trigger watches, and the reader knows every request
        readers = active_readers()
        if readers and readers[0].caught_up.is_set() and readers[0].refs == count and \
                all(readers[0].progress(rid) is not None for rid in ids):
            break
        await asyncio.sleep(0.2)
    else:
        raise TimeoutError("the triggers never all waited on a caught-up reader")
    await asyncio.sleep(1)
    rss_waiting = process.memory_info().rss
    consumers = len(active_readers())
    completed: dict[str, float] = {}
    step = 10
    for i in range(0, count, step):
        for rid in ids[i:i + step]:
            client.complete(rid, 0, flush=False)
        await asyncio.to_thread(client.flush)
        now = time.time()
        for rid in ids[i:i + step]:
            completed[rid] = now
        await asyncio.sleep(step / rate)
    await asyncio.wait_for(asyncio.gather(*tasks), timeout=120)
    latencies = [fired[rid] - completed[rid] for rid in ids]
    return {"awaits": count, "p50_s": round(statistics.median(latencies), 3),
            "p95_s": round(_percentile(latencies, 0.95), 3), "max_s": round(max(latencies), 3),
            "store_consumers": consumers, "extra_rss_mb": round((rss_waiting - rss_before) / 2**20, 1)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--awaits", type=int, default=1000)
    parser.add_argument("--rate", type=float, default=200.0, help="completions a second")
    add_bench_args(parser)
    args = parser.parse_args()
    if args.smoke:
        args.awaits = 20
    with bench_broker(args) as config:
        Trigger.config = config
        store = f"awaits{uuid.uuid4().hex[:6]}"
        ensure_store_topics(config, store)
        processor = StoreProcessor(config, store, commit_interval=1.0)
        ready = threading.Event()
        thread = threading.Thread(target=processor.run, kwargs={"ready": ready}, daemon=True)
        thread.start()
        try:
            assert ready.wait(60), "the store processor did not start"
            baseline = asyncio.run(_round(config, store, 1, args.rate))
            print(f"baseline: {baseline}", flush=True)
            time.sleep(6)  # the baseline's reader lingers 5 s, then stops: the big round starts its own
            many = asyncio.run(_round(config, store, args.awaits, args.rate))
            print(f"{args.awaits} awaits: {many}", flush=True)
        finally:
            processor.stop()
            thread.join(30)
    summary = {"bench": "awaits", "smoke": args.smoke, "baseline": baseline, "many": many,
               "p95_ratio_to_baseline": round(many["p95_s"] / max(baseline["p95_s"], 1e-3), 2),
               "targets_met": many["store_consumers"] == 1 and many["extra_rss_mb"] < 100 and many["p95_s"] <= 2.0}
    print(json.dumps(summary), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
