"""Latency of the operations API (the plugin's routes) over warm readers, against cold reads.

Starts its own broker and fills it: 50 workflows of one worker group each (a status record per
worker, some with a blocked partition, 20 messages per group topic), 10,000 dead letters in the
first workflow's dead-letter topic (so its list filters and pages through all of them), and 1,000
request values in the store `bench` of that workflow. Then it serves the plugin's FastAPI app
in-process (Airflow's auth dependencies replaced by "allowed": this measures the routes, the
warm readers and the JSON, not the auth manager) and times, `--rounds` times each:

- overview: GET /api/workflows (50 workflows, their groups, lag, dead-letter and request counts);
- dead-letter list: GET /api/workflows/wf00/dead-letters?error_type=...&offset=..&limit=50;
- one request's progress: GET /api/workflows/wf00/stores/bench/requests/<random id>.

Baseline in the same process, the reads a request would need without warm readers: the CLI's
`ops.status.read_statuses` (status topic) for the overview, `dlq.list_dead_letters` (the whole
dead-letter topic) for the list, and `StoreClient.get` (a read of the request's store partition)
for a request. Target: p95 <= 300 ms each. Last line: one JSON object.

    .venv/bin/python bench/ui_api.py [--rounds 200] [--smoke] [--bootstrap HOST:PORT]
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "include"), str(REPO / "plugins")]

from fastapi.testclient import TestClient  # noqa: E402

from bench.common import add_bench_args, bench_broker  # noqa: E402
from kafka_workflows.kafka.admin import TopicSpec, ensure_topics  # noqa: E402
from kafka_workflows.kafka.producer import RequestProducer  # noqa: E402
from kafka_workflows.monitor.service import Monitor  # noqa: E402
from kafka_workflows.ops import control  # noqa: E402
from kafka_workflows.ops import deadletters as dlq  # noqa: E402
from kafka_workflows.ops.status import read_statuses  # noqa: E402
from kafka_workflows.retry.topics import dead_letter_topic  # noqa: E402
from kafka_workflows.store import StoreClient, ensure_store_topics, store_topic  # noqa: E402

GROUPS, LETTERS, REQUESTS, STORE = 50, 10_000, 1_000, "bench"
TARGET_MS = 300.0


def _specs(folder: Path) -> None:
    for n in range(GROUPS):
        store = f"stores: [{{name: {STORE}}}]\n" if n == 0 else ""
        (folder / f"wf{n:02d}.yaml").write_text(
            f"name: wf{n:02d}\nworkers:\n  - name: w{n:02d}\n    topics: [bench-t{n:02d}]\n    group: bench-g{n:02d}\n"
            f"    handler: kw_examples.subscriptions.renew\n{store}")


def _fill(config: dict[str, Any]) -> list[str]:
    control.ensure_control_topics(config)
    ensure_topics(config, [TopicSpec(f"bench-t{n:02d}", partitions=1) for n in range(GROUPS)]
                  + [TopicSpec(dead_letter_topic("bench-t00", "bench-g00"), partitions=3)])
    ensure_store_topics(config, STORE)
    producer = RequestProducer(config)
    now = time.time()
    for n in range(GROUPS):
        group, topic = f"bench-g{n:02d}", f"bench-t{n:02d}"
        for i in range(20):
            producer.send(topic, {"i": i}, key=f"k{i}")
        held = [{"kind": "blocked", "topic": topic, "partition": 0, "offset": 3, "failures": 4, "error": "E: x",
                 "since": now, "next_attempt_at": now + 5, "key": "k3"}] if n % 10 == 0 else []
        status = {"worker": f"bench-{n}", "group": group, "topics": [topic], "at": now + 3600, "paused": False,
                  "assigned": [f"{topic}[0]"], "held": held, "handled": 0, "failed": 0, "retried": 0,
                  "dead_lettered": 0}
        producer.send(control.STATUS_TOPIC, status, key=f"{group}/bench-{n}")
    errors = ["TimeoutError", "ConnectionError", "ValueError", "KeyError"]
    for i in range(LETTERS):
        error = errors[i % len(errors)]
        producer.send(dead_letter_topic("bench-t00", "bench-g00"), {"user": i}, key=f"user-{i % 500}", headers={
            "kw-consumer-group": "bench-g00", "kw-original-topic": "bench-t00", "kw-original-partition": 0,
            "kw-original-offset": i, "kw-error-type": error, "kw-attempt": 3,
            "kw-error-message": f"{error} on account {i} after 3 tries"})
    ids = [f"wf00.split.run-{i}" for i in range(REQUESTS)]
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime(now - 60))
    client = StoreClient(config, STORE)
    for i, rid in enumerate(ids):
        failed = {str(j): f"ValueError: bad row {j}" for j in range(i % 3)}
        producer.send(store_topic(STORE), {
            "request_id": rid, "total": 100, "completed": 100 - len(failed) if i % 2 else 40, "failed": len(failed),
            "status": "running" if i % 2 == 0 else "completed_with_failures" if failed else "succeeded",
            "created_at": stamp, "updated_at": stamp, "completed_at": None,
            "meta": {"dag_id": "wf00", "run_id": f"run-{i}", "rows": 5000, "bad_rows": 3},
            "failure_reasons": failed}, key=rid, partition=client.partition_of(rid))
    producer.flush()
    client.close()
    return ids


def _app(monitor: Monitor) -> TestClient:
    from kafka_workflows_airflow.api import deps
    from kafka_workflows_airflow.api.app import create_app

    app = create_app()
    for dependency in (*deps.READ, *deps.EDIT):
        app.dependency_overrides[dependency.dependency] = lambda: None  # type: ignore[index]
    app.dependency_overrides[deps.get_monitor] = lambda: monitor
    app.dependency_overrides[deps.readable_workflows] = lambda: set(monitor.specs())
    app.dependency_overrides[deps.user_name] = lambda: "bench"
    return TestClient(app)


def _p95(timings: list[float]) -> float:
    if len(timings) < 2:
        return round(timings[0] * 1000, 1)
    return round(statistics.quantiles(timings, n=20)[18] * 1000, 1)


def _time(fn: Callable[[], Any], rounds: int) -> list[float]:
    timings = []
    for _ in range(rounds):
        start = time.perf_counter()
        fn()
        timings.append(time.perf_counter() - start)
    return timings


def main() -> None:
    global GROUPS, LETTERS, REQUESTS
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=200)
    parser.add_argument("--cold-rounds", type=int, default=5)
    add_bench_args(parser)
    args = parser.parse_args()
    if args.smoke:
        GROUPS, LETTERS, REQUESTS, args.rounds, args.cold_rounds = 3, 40, 20, 5, 1
    with tempfile.TemporaryDirectory(prefix="kw-bench-ui-") as tmp, bench_broker(args) as config:
        specs = Path(tmp) / "workflows"
        specs.mkdir()
        _specs(specs)
        t = time.perf_counter()
        ids = _fill(config)
        print(f"filled in {time.perf_counter() - t:.1f}s", flush=True)
        monitor = Monitor(config, specs, lag_interval=5.0).start()
        t = time.perf_counter()
        assert monitor.wait_ready(120), monitor.describe()
        print(f"warm readers caught up in {time.perf_counter() - t:.1f}s: {monitor.describe()}", flush=True)
        client = _app(monitor)
        overview = client.get("/api/workflows").json()
        assert len(overview) == GROUPS, overview
        page = client.get("/api/workflows/wf00/dead-letters").json()
        assert page["total"] == LETTERS, page["total"]
        rng = random.Random(7)

        def get(path: str) -> Any:
            response = client.get(path)
            assert response.status_code == 200, (path, response.text[:300])
            return response

        warm = {
            "overview": _time(lambda: get("/api/workflows"), args.rounds),
            "dead_letters": _time(lambda: get(
                f"/api/workflows/wf00/dead-letters?error_type=TimeoutError&offset={rng.randrange(0, 2400)}"
                "&limit=50"), args.rounds),
            "request": _time(lambda: get(f"/api/workflows/wf00/stores/{STORE}/requests/{rng.choice(ids)}"),
                             args.rounds),
        }
        store = StoreClient(config, STORE)
        cold = {
            "overview": _time(lambda: read_statuses(config, max_age=1e9), args.cold_rounds),
            "dead_letters": _time(lambda: dlq.list_dead_letters(
                config, "bench-t00", "bench-g00", dlq.Filter(error_type="TimeoutError")), args.cold_rounds),
            "request": _time(lambda: store.get(rng.choice(ids)), args.cold_rounds),
        }
        store.close()
        monitor.stop()
    result: dict[str, Any] = {"smoke": args.smoke, "groups": GROUPS, "dead_letters": LETTERS, "requests": REQUESTS,
                              "rounds": args.rounds,
                              "target_p95_ms": TARGET_MS}
    for name in warm:
        result[f"{name}_p95_ms"] = _p95(warm[name])
        result[f"{name}_p50_ms"] = round(statistics.median(warm[name]) * 1000, 1)
        result[f"{name}_cold_read_p95_ms"] = _p95(cold[name])
        result[f"{name}_cold_over_warm"] = round(_p95(cold[name]) / max(_p95(warm[name]), 0.1), 1)
    result["within_target"] = all(result[f"{n}_p95_ms"] <= TARGET_MS for n in warm)
    for name in warm:
        print(f"{name:13s} p50 {result[f'{name}_p50_ms']:7.1f} ms  p95 {result[f'{name}_p95_ms']:7.1f} ms   "
              f"cold read p95 {result[f'{name}_cold_read_p95_ms']:8.1f} ms")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
