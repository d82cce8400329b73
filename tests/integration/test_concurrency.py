"""Key-ordered concurrency against the real broker: order per key, the cap on calls, per-key
blocking retries, skip on a key, SIGKILL mid-flight, and bounded memory under a backlog."""

from __future__ import annotations

import asyncio
import itertools
import json
import random
import signal
import threading
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import pytest

from kafka_workflows.kafka.admin import TopicSpec, ensure_topics
from kafka_workflows.kafka.producer import RequestProducer
from kafka_workflows.messages import Message
from kafka_workflows.ops.control import send_command
from kafka_workflows.ops.status import read_statuses
from kafka_workflows.retry.policy import BlockingRetry, RetryPolicy
from kafka_workflows.retry.topics import dead_letter_topic
from kafka_workflows.worker import Worker
from tests.helpers.kafka import committed, read_all, records, start_in_thread, start_worker, stop_thread, wait_for

pytestmark = pytest.mark.integration


def _produce(config: dict[str, Any], topic: str, items: list[tuple[str, Any]]) -> None:
    producer = RequestProducer(config, **{"linger.ms": 20})
    for key, value in items:
        producer.send(topic, value, key=key)
    producer.flush()


class Calls:
    """Start and end of every handler call, from whichever thread or task ran it."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.calls: list[tuple[str, int, float, float, str]] = []  # key, n, start, end, outcome

    def add(self, message: Message, started: float, outcome: str) -> None:
        with self.lock:
            self.calls.append((message.key or "", message.value["n"], started, time.monotonic(), outcome))

    def max_overlap(self) -> int:
        events = sorted([(s, 1) for _, _, s, _, _ in self.calls] + [(e, -1) for _, _, _, e, _ in self.calls])
        running = peak = 0
        for _, step in events:
            running += step
            peak = max(peak, running)
        return peak


@pytest.mark.parametrize("kind", ["async", "threads"])
def test_200_keys_on_one_partition_keep_per_key_order_and_at_most_concurrency_calls_overlap(
        kafka_config: dict[str, Any], topic: str, group: str, kind: str) -> None:
    ensure_topics(kafka_config, [TopicSpec(topic, partitions=1)])
    rng = random.Random(13)
    items = [(f"user-{i % 200}", {"n": i, "sleep": rng.uniform(0.001, 0.02)}) for i in range(1000)]
    _produce(kafka_config, topic, items)
    calls = Calls()

    async def handle_async(message: Message) -> None:
        started = time.monotonic()
        await asyncio.sleep(message.value["sleep"])
        calls.add(message, started, "ok")

    def handle_sync(message: Message) -> None:
        started = time.monotonic()
        time.sleep(message.value["sleep"])
        calls.add(message, started, "ok")

    # A small in-flight cap, so fetching is paused and resumed many times on the way.
    worker = Worker(kafka_config, [topic], group, handle_async if kind == "async" else handle_sync,
                    concurrency=8, max_in_flight=60, batch_size=50)
    thread = start_in_thread(worker)
    wait_for(lambda: len(calls.calls) >= 1000, 120, "1000 calls")
    wait_for(lambda: committed(kafka_config, group, topic) == {0: 1000}, 30, "offset 1000 committed")
    stop_thread(worker, thread)

    assert sorted(n for _, n, _, _, _ in calls.calls) == list(range(1000))  # each once, none lost
    per_key: dict[str, list[tuple[int, float, float]]] = defaultdict(list)
    for key, n, start, end, _ in calls.calls:
        per_key[key].append((n, start, end))
    for key, seen in per_key.items():
        by_start = sorted(seen, key=lambda c: c[1])
        assert [n for n, _, _ in by_start] == sorted(n for n, _, _ in seen), f"{key} out of order"
        for (_, _, end), (_, start, _) in itertools.pairwise(by_start):
            assert start >= end, f"{key}: a call started before the previous one of its key ended"
    overlap = calls.max_overlap()
    print(f"{kind}: at most {overlap} calls at once; peak admitted {worker.keyed.scheduler.peak_messages}")
    assert 2 <= overlap <= 8
    assert worker.keyed is not None and worker.keyed.scheduler.peak_messages <= 60 + 50


def test_a_key_failing_3_times_delays_only_its_own_later_messages_and_its_hold_is_in_the_status_topic(
        kafka_config: dict[str, Any], topic: str, group: str) -> None:
    ensure_topics(kafka_config, [TopicSpec(topic, partitions=1)])
    items = [(f"user-{i % 50}", {"n": i}) for i in range(400)]
    items.insert(10, ("bad", {"n": 1000}))
    items.insert(20, ("bad", {"n": 1001}))
    items.insert(300, ("bad", {"n": 1002}))
    _produce(kafka_config, topic, items)
    calls = Calls()

    async def handle(message: Message) -> None:
        started = time.monotonic()
        await asyncio.sleep(0.002)
        if message.value["n"] == 1000 and message.attempt <= 3:
            calls.add(message, started, f"failed attempt {message.attempt}")
            raise ConnectionError("provider down for bad")
        calls.add(message, started, "ok")

    policy = RetryPolicy(blocking=BlockingRetry(initial=1.5, max=1.5))
    worker = Worker(kafka_config, [topic], group, handle, policy=policy, concurrency=16, status_interval=0.5)
    thread = start_in_thread(worker)
    try:
        wait_for(lambda: any(o == "failed attempt 2" for *_, o in calls.calls), 60, "bad's second failure")

        def key_hold() -> dict[str, Any] | None:
            for status in read_statuses(kafka_config):
                for held in status.get("held", []):
                    if status["group"] == group and held.get("key") == "bad":
                        return held
            return None

        wait_for(lambda: key_hold() is not None, 30, "bad's hold in the status topic")
        hold = key_hold()
        assert hold is not None
        assert (hold["kind"], hold["scope"], hold["offset"]) == ("blocked", "key", 10)
        assert hold["attempt"] >= 2 and hold["error"] == "ConnectionError: provider down for bad"
        assert worker.metrics.registry.get_sample_value("kw_worker_blocked_keys", {"group": group}) == 1
        wait_for(lambda: sum(1 for *_, o in calls.calls if o == "ok") >= 403, 60, "every message handled")
    finally:
        stop_thread(worker, thread)

    ok = {n: (start, end) for _, n, start, end, o in calls.calls if o == "ok"}
    failures = [start for _, n, start, _, o in calls.calls if n == 1000 and o != "ok"]
    assert len(failures) == 3
    bad_done = ok[1000][0]
    others = [n for n in range(400)]
    # Every other key finished while bad was held (its backoff alone is 4.5 s)...
    assert max(ok[n][1] for n in others) < bad_done, "other keys waited for bad"
    # ...and bad's later messages came after it, in order.
    assert ok[1000][1] <= ok[1001][0] and ok[1001][1] <= ok[1002][0]
    assert committed(kafka_config, group, topic) == {0: 403}
    assert worker.metrics.registry.get_sample_value("kw_worker_blocked_keys", {"group": group}) == 0


def test_skip_on_a_key_dead_letters_its_held_message_and_its_later_messages_flow(
        kafka_config: dict[str, Any], topic: str, group: str) -> None:
    ensure_topics(kafka_config, [TopicSpec(topic, partitions=1)])
    _produce(kafka_config, topic, [("stuck", {"n": 0}), ("stuck", {"n": 1}), ("other", {"n": 2})])
    handled: list[int] = []

    def handle(message: Message) -> None:
        if message.value["n"] == 0:
            raise TimeoutError("stuck forever")
        handled.append(message.value["n"])

    worker = Worker(kafka_config, [topic], group, handle, policy=RetryPolicy(blocking=BlockingRetry(initial=60)),
                    concurrency=4)
    thread = start_in_thread(worker)
    try:
        wait_for(lambda: handled == [2], 30, "the other key handled while stuck is held")
        # skip names the offset the operator saw held (here with the key): that message and no other.
        _, wrong = send_command(kafka_config, "skip", group, topic=topic, partition=0, offset=0, key="other", wait=15)
        assert [r["result"] for r in wrong] == [f"nothing held at {topic}[0] key 'other'@0"]
        _, applied = send_command(kafka_config, "skip", group, topic=topic, partition=0, offset=0, key="stuck",
                                  reason="bad account", by="ops@test", wait=30)
        assert [r["result"] for r in applied] == [f"skipped {topic}[0]@0 key 'stuck' to the dead-letter topic"]
        wait_for(lambda: handled == [2, 1], 30, "stuck's next message after the skip")
        wait_for(lambda: committed(kafka_config, group, topic) == {0: 3}, 30, "offset 3 committed")
    finally:
        stop_thread(worker, thread)
    letters = read_all(kafka_config, dead_letter_topic(topic, group), expected=1)
    assert [m.key() for m in letters] == [b"stuck"]
    assert dict(letters[0].headers())["kw-skipped-by"] == b"ops@test"


def test_sigkill_mid_flight_then_restart_loses_nothing_and_repeats_only_in_flight_or_uncommitted_work(
        kafka_config: dict[str, Any], topic: str, group: str, tmp_path: Path) -> None:
    ensure_topics(kafka_config, [TopicSpec(topic, partitions=1)])
    rng = random.Random(5)
    total = 3000
    _produce(kafka_config, topic, [(f"user-{i % 300}", {"n": i, "sleep": rng.uniform(0.01, 0.08)})
                                   for i in range(total)])
    record = tmp_path / "calls.jsonl"
    # Offsets are committed every 100 ms, so what a kill repeats is what was in flight (or done < 1 s ago).
    env = {"KAFKA_CONFIG": json.dumps({"session.timeout.ms": 6000, "heartbeat.interval.ms": 1000,
                                       "auto.commit.interval.ms": 100})}
    args = ("--concurrency", "32")
    worker = start_worker(kafka_config, topic, group, "tests.helpers.handlers.record_async", record, *args, env=env)
    try:
        wait_for(lambda: sum(1 for r in records(record) if r["outcome"] == "ok") >= 1500, 90, "1500 handled")
        time.sleep(rng.uniform(0.2, 0.8))
        worker.send_signal(signal.SIGKILL)
        killed_at = time.time()
        worker.wait(10)
        first = records(record)
        at_kill = committed(kafka_config, group, topic)[0]
        worker = start_worker(kafka_config, topic, group, "tests.helpers.handlers.record_async", record, *args,
                              env=env)
        wait_for(lambda: {r["offset"] for r in records(record) if r["outcome"] == "ok"} == set(range(total)), 180,
                 "every message handled", 1)
    finally:
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(60) == 0
    ended = {r["offset"]: r["t"] for r in first if r["outcome"] == "ok"}
    started = {r["offset"] for r in first if r["outcome"] == "start"}
    # Nothing lost: everything below the offset committed at the kill had been done.
    assert set(range(at_kill)) <= set(ended), "an offset was committed before the work below it was done"
    # Only work in flight, or stored but not yet committed (librdkafka commits every second), repeats:
    # the committed offset had followed the lowest offset not done to within that second and a margin.
    behind = min(o for o in range(total) if o not in ended or ended[o] > killed_at - 2.5)
    ok = Counter(r["offset"] for r in records(record) if r["outcome"] == "ok")
    repeated = sorted(offset for offset, n in ok.items() if n > 1)
    in_flight = started - set(ended)
    lowest = min(set(range(total)) - set(ended))
    print(f"killed with {len(in_flight)} calls in flight, lowest offset not done {lowest} (2.5 s before: {behind}); "
          f"committed {at_kill}; repeated {len(repeated)} (offsets {repeated[:1]}..{repeated[-1:]})")
    assert in_flight, "the kill found nothing in flight: kill later"
    assert at_kill >= behind
    assert all(offset >= at_kill for offset in repeated)
    # What was in flight is bounded: admitted messages past the lowest one not done are capped
    # (1,000 by default, plus one consumed batch of 500).
    assert all(offset < lowest + 1500 for offset in repeated)


def test_memory_stays_bounded_with_a_slow_handler_and_a_100k_backlog(
        kafka_config: dict[str, Any], topic: str, group: str) -> None:
    ensure_topics(kafka_config, [TopicSpec(topic, partitions=1)])
    producer = RequestProducer(kafka_config, **{"linger.ms": 50, "batch.num.messages": 10000})
    pad = "x" * 200
    for i in range(100_000):
        producer.send(topic, {"n": i, "pad": pad}, key=f"user-{i % 5000}")
    producer.flush()

    def rss() -> int:
        return int(Path("/proc/self/statm").read_text().split()[1]) * 4096

    handled = Counter[str]()

    async def slow(message: Message) -> None:
        await asyncio.sleep(0.05)
        handled["n"] += 1

    before = rss()
    worker = Worker(kafka_config, [topic], group, slow, concurrency=50, max_in_flight=1000,
                    max_in_flight_bytes=1 << 20, batch_size=500)
    thread = start_in_thread(worker)
    peak_rss = before
    try:
        deadline = time.monotonic() + 8
        while time.monotonic() < deadline:
            peak_rss = max(peak_rss, rss())
            time.sleep(0.1)
    finally:
        stop_thread(worker, thread)
    s = worker.keyed.scheduler if worker.keyed is not None else None
    assert s is not None
    print(f"handled {handled['n']} of 100000 in 8 s; peak admitted {s.peak_messages} messages, "
          f"{s.peak_bytes} bytes; RSS grew {(peak_rss - before) / 2**20:.1f} MiB")
    assert handled["n"] > 500  # it was working...
    assert s.peak_messages <= 1000 + 500  # ...with at most the cap (plus one consumed batch) admitted
    assert s.peak_bytes <= (1 << 20) + 500 * 400
    assert peak_rss - before < 40 * 2**20  # the 25 MB backlog was not slurped into memory (as objects, ~3x that)
    assert committed(kafka_config, group, topic)[0] >= handled["n"] - 1000


def test_with_concurrency_retry_topics_and_dead_letters_work_as_without_and_bad_json_is_dead_lettered(
        kafka_config: dict[str, Any], topic: str, group: str) -> None:
    ensure_topics(kafka_config, [TopicSpec(topic, partitions=1)])
    producer = RequestProducer(kafka_config)
    for key in ("x", "y", "a", "b"):
        producer.send(topic, {"n": key}, key=key)
    producer.send(topic, b"not json", key="z", raw=True)
    producer.flush()
    calls: list[tuple[str, int]] = []

    async def handle(message: Message) -> None:
        calls.append((message.value["n"], message.attempt))
        if message.key == "x" or (message.key == "y" and message.attempt == 1):
            raise ConnectionError(f"{message.key} failed")

    policy = RetryPolicy.parse({"non_blocking": {"intervals": [0.5]}}, where="test")
    worker = Worker(kafka_config, [topic], group, handle, policy=policy, concurrency=8)
    thread = start_in_thread(worker)
    try:
        wait_for(lambda: worker.stats.dead_lettered >= 2 and ("y", 2) in calls, 60, "x and z dead-lettered, y retried")
        wait_for(lambda: committed(kafka_config, group, topic) == {0: 5}, 30, "offset 5 committed")
    finally:
        stop_thread(worker, thread)
    assert sorted(calls) == [("a", 1), ("b", 1), ("x", 1), ("x", 2), ("y", 1), ("y", 2)]
    letters = read_all(kafka_config, dead_letter_topic(topic, group), expected=2)
    errors = {m.key(): dict(m.headers())["kw-error-type"] for m in letters}
    assert errors == {b"x": b"ConnectionError", b"z": b"MessageDecodeError"}
    assert worker.stats.retried == 2 and worker.stats.handled == 3


def test_a_held_key_whose_later_messages_fill_the_cap_pauses_the_partition_instead_of_taking_more(
        kafka_config: dict[str, Any], topic: str, group: str) -> None:
    ensure_topics(kafka_config, [TopicSpec(topic, partitions=1)])
    _produce(kafka_config, topic, [("bad", {"n": n}) for n in range(300)] + [("ok", {"n": 300})])
    handled: list[int] = []

    def handle(message: Message) -> None:
        if message.value["n"] == 0:
            raise ConnectionError("down")
        handled.append(message.value["n"])

    worker = Worker(kafka_config, [topic], group, handle, policy=RetryPolicy(blocking=BlockingRetry(initial=60)),
                    concurrency=4, max_in_flight=50, batch_size=20)
    thread = start_in_thread(worker)
    try:
        wait_for(lambda: worker.stats.failed >= 1, 30, "the first failure")
        time.sleep(3)  # nothing runs: every admitted message is behind the held key
    finally:
        stop_thread(worker, thread)
    assert worker.keyed is not None
    assert handled == [] and worker.keyed.scheduler.peak_messages <= 50 + 20
    assert committed(kafka_config, group, topic) in ({0: -1001}, {0: 0})  # nothing past the held message


def test_a_rebalance_waits_for_in_flight_calls_so_no_key_runs_in_two_workers_at_once(
        kafka_config: dict[str, Any], topic: str, group: str, tmp_path: Path) -> None:
    ensure_topics(kafka_config, [TopicSpec(topic, partitions=4)])
    total = 160  # calls of 3 s: a revoked worker that did not wait would still be running them
    _produce(kafka_config, topic, [(f"user-{i % 80}", {"n": i, "sleep": 3}) for i in range(total)])
    record = tmp_path / "calls.jsonl"
    env = {"KAFKA_CONFIG": json.dumps({"session.timeout.ms": 6000, "heartbeat.interval.ms": 1000})}
    handler = "tests.helpers.handlers.record_async"
    first = start_worker(kafka_config, topic, group, handler, record, "--concurrency", "16", env=env)
    second = None
    try:
        wait_for(lambda: sum(1 for r in records(record) if r["outcome"] == "ok") >= 16, 90, "16 handled")
        second = start_worker(kafka_config, topic, group, handler, record, "--concurrency", "16", env=env)
        wait_for(lambda: len({r["pid"] for r in records(record)}) == 2, 60, "the second worker handling messages")
        wait_for(lambda: len({r["value"]["n"] for r in records(record) if r["outcome"] == "ok"}) == total, 120,
                 "every message handled", 1)
    finally:
        for proc in (first, second):
            if proc is not None:
                proc.send_signal(signal.SIGTERM)
        for proc in (first, second):
            if proc is not None:
                assert proc.wait(60) == 0
    open_calls: dict[tuple[str, int, int], float] = {}  # (key, n, pid) -> start of the call running
    per_key: dict[str, list[tuple[float, float, int]]] = defaultdict(list)
    for r in records(record):
        call = (r["key"], r["value"]["n"], r["pid"])
        if r["outcome"] == "start":
            open_calls[call] = r["t"]
        else:
            per_key[r["key"]].append((open_calls.pop(call), r["t"], r["value"]["n"]))
    assert not open_calls, f"calls that never ended in workers only ever stopped with SIGTERM: {sorted(open_calls)[:5]}"
    for key, spans in per_key.items():
        spans.sort()
        for (_, end, n), (start, _, m) in itertools.pairwise(spans):
            assert start >= end, f"{key}: n={m} started before n={n} ended"
    assert sum(committed(kafka_config, group, topic).values()) == total
