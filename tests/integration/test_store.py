"""The atomic KV store on the real broker: exact counts, one event, restore, retention, a SIGKILL crash test."""

from __future__ import annotations

import json
import random
import re
import signal
import subprocess
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, IsolationLevel, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, ConfigResource, NewTopic

from kafka_workflows.kafka.admin import end_offsets
from kafka_workflows.store import (
    COMPLETED_WITH_FAILURES,
    PENDING,
    RUNNING,
    SUCCEEDED,
    StoreClient,
    StoreError,
    StoreProcessor,
    commands_topic,
    ensure_store_topics,
    events_topic,
    partition_for,
    store_topic,
)
from tests.helpers.aggregation import spawn, unique
from tests.helpers.kafka import committed, read_all, wait_for

pytestmark = pytest.mark.integration


@pytest.fixture
def name() -> str:
    return unique("store")


class Running:
    """A StoreProcessor on a thread, with what its callbacks saw."""

    def __init__(self, config: dict[str, Any], name: str, **options: Any) -> None:
        self.updates: list[dict[str, Any]] = []
        self.completions: list[dict[str, Any]] = []
        options.setdefault("commit_interval", 0.2)
        self.processor = StoreProcessor(config, name, on_update=self.updates.append,
                                        on_complete=self.completions.append, **options)
        ready = threading.Event()
        self.thread = threading.Thread(target=self.processor.run, kwargs={"ready": ready}, daemon=True)
        self.thread.start()
        assert ready.wait(30), "store processor did not start"
        wait_for(lambda: self.processor.processor.stats.assigned, 30, "partitions assigned")

    def stop(self) -> None:
        self.processor.stop()
        self.thread.join(30)
        assert not self.thread.is_alive(), "store processor did not stop"


@pytest.fixture
def running(kafka_config: dict[str, Any], name: str) -> Iterator[list[Running]]:
    started: list[Running] = []
    yield started
    for r in started:
        if r.thread.is_alive():
            r.stop()


def _events(config: dict[str, Any], name: str, expected: int | None = None) -> list[dict[str, Any]]:
    return [json.loads(m.value()) for m in read_all(config, events_topic(name), expected=expected, timeout=30)]


def _value(client: StoreClient, request_id: str, predicate: Any, what: str, timeout: float = 30) -> dict[str, Any]:
    return wait_for(lambda: (lambda v: v if v is not None and predicate(v) else None)(client.get(request_id)),
                    timeout, what, interval=0.3)


# -- topics ------------------------------------------------------------------------------------
def test_store_topics_are_created_with_compaction_and_equal_partitions(kafka_config: dict[str, Any],
                                                                       name: str) -> None:
    created = ensure_store_topics(kafka_config, name, partitions=4)
    assert sorted(created) == sorted([commands_topic(name), store_topic(name), events_topic(name)])
    assert ensure_store_topics(kafka_config, name, partitions=4) == []
    admin = AdminClient(kafka_config)
    topics = admin.list_topics(timeout=10).topics
    assert {len(topics[t].partitions) for t in created} == {4}
    resources = [ConfigResource(ConfigResource.Type.TOPIC, t) for t in (store_topic(name), commands_topic(name))]
    configs = {r.name: f.result()["cleanup.policy"].value for r, f in admin.describe_configs(resources).items()}
    assert configs == {store_topic(name): "compact", commands_topic(name): "delete"}

    other = unique("store")
    admin.create_topics([NewTopic(store_topic(other), 2, 1)])[store_topic(other)].result()
    with pytest.raises(StoreError, match=rf"{store_topic(other)} has 2 partitions but {commands_topic(other)} has 3"):
        ensure_store_topics(kafka_config, other, partitions=3)


# -- accounting through the processor ----------------------------------------------------------
def test_duplicates_change_nothing_and_terminal_emits_exactly_one_event(
        kafka_config: dict[str, Any], name: str, running: list[Running]) -> None:
    ensure_store_topics(kafka_config, name)
    running.append(proc := Running(kafka_config, name))
    client = StoreClient(kafka_config, name)
    client.init("req-1", 5, meta={"dag_id": "contacts_import"})
    for job in [0, 1, 1, 2, 0, 3]:
        client.complete("req-1", job, flush=False)
    client.flush()
    value = _value(client, "req-1", lambda v: v["completed"] == 4, "4 distinct jobs counted")
    assert value["status"] == RUNNING and value["duplicates"] == 2 and value["total"] == 5
    client.complete("req-1", 4)
    for job in range(5):  # duplicates after the terminal value: ignored
        client.complete("req-1", job, flush=False)
    client.flush()
    final = _value(client, "req-1", lambda v: v["status"] == SUCCEEDED, "request succeeded")
    assert (final["completed"], final["failed"], final["completed_jobs"]) == (5, 0, [[0, 4]])
    assert final["meta"] == {"dag_id": "contacts_import"} and final["completed_at"] is not None
    time.sleep(1.0)  # the ignored duplicates had time to be processed
    events = _events(kafka_config, name, expected=1)
    assert [e["request_id"] for e in events] == ["req-1"] and events[0] == final
    assert client.get("req-1") == final
    assert [c["request_id"] for c in proc.completions] == ["req-1"]
    assert proc.updates[-1] == final and all(u["completed"] <= 5 for u in proc.updates)


def test_failures_finish_with_failures_and_list_failed_jobs(kafka_config: dict[str, Any], name: str,
                                                            running: list[Running]) -> None:
    ensure_store_topics(kafka_config, name)
    running.append(Running(kafka_config, name))
    client = StoreClient(kafka_config, name)
    client.init("req-f", 4)
    client.complete("req-f", 0)
    client.fail("req-f", 0, "late failure of a completed job")  # first outcome wins
    client.fail("req-f", 2, "row 3: invalid email 'x@'")
    client.fail("req-f", 2, "dead-lettered twice")  # duplicate failure
    client.complete("req-f", 2)  # a replay succeeding later does not flip it
    client.complete("req-f", 7)  # out of range
    value = _value(client, "req-f", lambda v: v["rejected"] == 3, "the rejected commands applied")
    assert (value["completed"], value["failed"], value["status"]) == (1, 1, RUNNING)
    client.complete("req-f", 1)
    client.fail("req-f", 3, "timeout")
    final = _value(client, "req-f", lambda v: v["status"] != RUNNING, "a terminal status")
    assert final["status"] == COMPLETED_WITH_FAILURES
    assert (final["completed"], final["failed"], final["total"]) == (2, 2, 4)
    assert final["failed_jobs"] == [[2, 3]] and final["completed_jobs"] == [[0, 1]]
    assert final["failure_reasons"] == {"2": "row 3: invalid email 'x@'", "3": "timeout"}
    assert final["duplicates"] == 1
    assert [e["status"] for e in _events(kafka_config, name, expected=1)] == [COMPLETED_WITH_FAILURES]


def test_commands_before_init_are_kept_and_conflicting_init_rejected(kafka_config: dict[str, Any], name: str,
                                                                     running: list[Running]) -> None:
    ensure_store_topics(kafka_config, name)
    running.append(Running(kafka_config, name))
    client = StoreClient(kafka_config, name)
    client.complete("req-p", 1)
    client.complete("req-p", 5)  # beyond the total that init will declare
    pending = _value(client, "req-p", lambda v: v["completed"] == 2, "pending completions recorded")
    assert pending["status"] == PENDING and pending["total"] is None
    client.init("req-p", 3)
    client.init("req-p", 3)  # same total: no-op
    client.init("req-p", 9)  # different total: rejected
    value = _value(client, "req-p", lambda v: v["rejected"] == 2, "init resolved the pending state")
    assert (value["total"], value["completed"], value["completed_jobs"], value["status"]) == (3, 1, [[1, 1]], RUNNING)
    client.complete("req-p", 0)
    client.complete("req-p", 2)
    assert _value(client, "req-p", lambda v: v["status"] == SUCCEEDED, "succeeded")["completed"] == 3


def test_wait_returns_the_final_value_when_the_request_finishes(kafka_config: dict[str, Any], name: str,
                                                               running: list[Running]) -> None:
    ensure_store_topics(kafka_config, name)
    running.append(Running(kafka_config, name))
    client = StoreClient(kafka_config, name)
    client.init("req-w", 2)
    client.complete("req-w", 0)
    assert client.wait("req-w", timeout=1.5) is None  # still running
    waited: list[dict[str, Any] | None] = []
    waiter = threading.Thread(target=lambda: waited.append(StoreClient(kafka_config, name).wait("req-w", 30)))
    waiter.start()
    time.sleep(1.0)
    client.fail("req-w", 1, "boom")
    waiter.join(35)
    assert waited and waited[0] is not None and waited[0]["status"] == COMPLETED_WITH_FAILURES
    assert client.wait("req-w", timeout=5) == waited[0]  # already terminal: found in the store


def test_a_completion_commits_when_the_input_is_drained_not_at_the_commit_interval(
        kafka_config: dict[str, Any], name: str, running: list[Running]) -> None:
    """The await waits for the completion event: an idle store commits it at once (commit_soon), the
    commit interval (here longer than the wait below) only batches progress under load."""
    ensure_store_topics(kafka_config, name)
    running.append(Running(kafka_config, name, commit_interval=300.0, transaction_timeout_ms=600_000))
    client = StoreClient(kafka_config, name)
    client.init("req-soon", 2)
    for job in range(2):
        client.complete("req-soon", job)
    events = _events(kafka_config, name, expected=1)  # read_committed, 30 s: far less than the interval
    assert [(e["request_id"], e["status"], e["completed"]) for e in events] == [("req-soon", SUCCEEDED, 2)]


def test_zero_jobs_succeed_at_init(kafka_config: dict[str, Any], name: str, running: list[Running]) -> None:
    ensure_store_topics(kafka_config, name)
    running.append(Running(kafka_config, name))
    client = StoreClient(kafka_config, name)
    client.init("empty", 0)
    assert _value(client, "empty", lambda v: True, "value")["status"] == SUCCEEDED
    assert len(_events(kafka_config, name, expected=1)) == 1


def test_misrouted_command_is_forwarded_to_its_partition(kafka_config: dict[str, Any], name: str,
                                                         running: list[Running]) -> None:
    ensure_store_topics(kafka_config, name)
    running.append(Running(kafka_config, name))
    client = StoreClient(kafka_config, name)
    client.init("req-m", 2)
    home = partition_for("req-m", 3)
    wrong = Producer(kafka_config)  # put there by hand, as a producer with another partitioner would
    for job in (0, 1):
        wrong.produce(commands_topic(name), json.dumps({"op": "complete", "request_id": "req-m", "job": job}),
                      key=b"req-m", partition=(home + 1 + job) % 3)
    assert wrong.flush(10) == 0
    assert _value(client, "req-m", lambda v: v["status"] == SUCCEEDED, "both completions counted")["completed"] == 2


def test_restart_restores_state_and_continues_counts_exactly(kafka_config: dict[str, Any], name: str,
                                                             running: list[Running]) -> None:
    ensure_store_topics(kafka_config, name)
    running.append(first := Running(kafka_config, name, instance_id="a"))
    client = StoreClient(kafka_config, name)
    client.init("req-r", 100)
    for job in range(60):
        client.complete("req-r", job, flush=False)
    client.flush()
    _value(client, "req-r", lambda v: v["completed"] == 60, "60 counted by the first processor")
    first.stop()

    running.append(second := Running(kafka_config, name, instance_id="b"))
    assert second.processor.stats.restored >= 1
    for job in list(range(40, 100)) + list(range(0, 60, 3)):  # 40..59 and every third of 0..59 again
        client.complete("req-r", job, flush=False)
    client.flush()
    final = _value(client, "req-r", lambda v: v["status"] == SUCCEEDED, "succeeded after the restart")
    assert (final["completed"], final["completed_jobs"]) == (100, [[0, 99]])
    assert final["duplicates"] == 20  # 40..59; the 0..59 repeats arrived after the terminal value
    assert len(_events(kafka_config, name, expected=1)) == 1


def test_terminal_requests_past_retention_are_tombstoned(kafka_config: dict[str, Any], name: str,
                                                         running: list[Running]) -> None:
    ensure_store_topics(kafka_config, name)
    running.append(proc := Running(kafka_config, name, retention=3.0, retention_check_interval=0.3))
    client = StoreClient(kafka_config, name)
    client.init("old", 1)
    client.init("live", 2)
    client.complete("old", 0)
    client.complete("live", 0)
    assert _value(client, "old", lambda v: v["status"] == SUCCEEDED, "old succeeded")["completed"] == 1
    wait_for(lambda: proc.processor.stats.tombstones == 1 and client.get("old") is None, 30, "old deleted",
             interval=0.3)
    records = [(m.key(), m.value()) for m in read_all(kafka_config, store_topic(name))]
    assert (b"old", None) in records  # the tombstone, written in a transaction (read_committed sees it)
    assert client.get("live")["completed"] == 1  # running requests stay whatever their age


def test_sigterm_commits_the_open_transaction(kafka_config: dict[str, Any], name: str, tmp_path: Path) -> None:
    ensure_store_topics(kafka_config, name)
    group = unique("g")
    consumed = tmp_path / "consumed.log"
    proc = spawn(kafka_config, "store-processor", "--store", name, "--group", group, "--instance", "0",
                 "--commit-interval", "60", "--consumed-log", str(consumed), log=tmp_path / "proc.log")
    try:
        client = StoreClient(kafka_config, name)
        client.init("req-t", 3)
        client.complete("req-t", 0)
        client.complete("req-t", 1)
        wait_for(lambda: proc.poll() is not None or (consumed.exists() and len(consumed.read_text().split()) == 3),
                 60, "3 commands consumed")
        assert proc.poll() is None, f"the store processor died; see {tmp_path / 'proc.log'}"
        assert client.get("req-t") is None  # consumed, not committed: a 60 s commit interval
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    value = client.get("req-t")
    assert value is not None and (value["completed"], value["status"]) == (2, RUNNING)


# -- the crash test ----------------------------------------------------------------------------
class StoreWatcher(threading.Thread):
    """Reads S.store read_committed from the start the whole time, checking every value it sees."""

    def __init__(self, config: dict[str, Any], name: str) -> None:
        super().__init__(daemon=True)
        self.consumer = Consumer({**config, "group.id": f"watch-{uuid.uuid4().hex}", "enable.auto.commit": False,
                                  "isolation.level": "read_committed"})
        self.topic = store_topic(name)
        self.last: dict[str, dict[str, Any]] = {}
        self.violations: list[str] = []
        self.seen = 0
        self.halt = threading.Event()

    def run(self) -> None:
        partitions = self.consumer.list_topics(self.topic, timeout=10).topics[self.topic].partitions
        self.consumer.assign([TopicPartition(self.topic, p, OFFSET_BEGINNING) for p in partitions])
        try:
            while not self.halt.is_set():
                for msg in self.consumer.consume(500, 0.2):
                    if msg.error() or msg.value() is None:
                        continue
                    self._check(json.loads(msg.value()))
        finally:
            self.consumer.close()

    def _check(self, value: dict[str, Any]) -> None:
        self.seen += 1
        rid, before = value["request_id"], self.last.get(value["request_id"])
        if value["total"] is not None and value["completed"] + value["failed"] > value["total"]:
            self.violations.append(f"{rid}: {value['completed']}+{value['failed']} > total {value['total']}")
        if before is not None:
            if value["completed"] < before["completed"] or value["failed"] < before["failed"]:
                self.violations.append(f"{rid}: went down from {before['completed']}/{before['failed']} "
                                       f"to {value['completed']}/{value['failed']}")
            if before["status"] in (SUCCEEDED, COMPLETED_WITH_FAILURES) and value != before:
                self.violations.append(f"{rid}: changed after its terminal value")
        self.last[rid] = value


def _request_ids_per_partition(count: int) -> list[str]:
    """Request ids that land on `count` different partitions of a 3-partition store."""
    found: dict[int, str] = {}
    n = 0
    while len(found) < count:
        rid = f"import-{uuid.uuid4().hex[:6]}-{n}"
        found.setdefault(partition_for(rid, 3), rid)
        n += 1
    return list(found.values())


def test_sigkilled_store_processors_count_exactly(kafka_config: dict[str, Any], name: str, tmp_path: Path) -> None:
    """Modelled on Kafka's transactions system test: SIGKILL processors at random, then check exact output."""
    seed = random.randrange(2**32)
    print(f"kill seed {seed}")  # the kill points are random; the seed replays them
    rng = random.Random(seed)
    ensure_store_topics(kafka_config, name, partitions=3)
    group = unique("g")
    big, medium, failing = _request_ids_per_partition(3)
    totals = {big: 1000, medium: 150, failing: 150}
    failed_jobs = set(range(0, 150, 15))  # 10 failures in `failing`
    commands: list[tuple[str, int, bool]] = []  # (request, job, is_failure)
    for rid, total in totals.items():
        commands += [(rid, job, rid == failing and job in failed_jobs) for job in range(total)]
    commands += rng.sample(commands, 150)  # duplicates, shuffled in
    rng.shuffle(commands)

    watcher = StoreWatcher(kafka_config, name)
    watcher.start()
    logs = tmp_path / "processors.log"

    def start(slot: int) -> subprocess.Popen[bytes]:
        # A stable instance id per slot (the restarted process aborts its predecessor's open transaction)
        # and static membership (it takes its partitions back without waiting for a session timeout),
        # so the kills land while commands are being processed. Static membership with the eager
        # range assignor: with cooperative-sticky a restarted static member once never got its
        # partition back (librdkafka 2.16), leaving it unprocessed.
        return spawn(kafka_config, "store-processor", "--store", name, "--group", group, "--instance",
                     f"slot-{slot}", "--commit-interval", "0.2", "--static", "--strategy", "range", log=logs)

    procs = {slot: start(slot) for slot in (0, 1)}
    client = StoreClient(kafka_config, name)
    for rid, total in totals.items():
        client.init(rid, total, flush=False)
    client.flush()
    sent = threading.Event()

    def send() -> None:
        for i in range(0, len(commands), 10):  # ~8 s of commands: the whole kill window
            for rid, job, failure in commands[i:i + 10]:
                if failure:
                    client.fail(rid, job, f"job {job} dead-lettered", flush=False)
                else:
                    client.complete(rid, job, flush=False)
            client.flush()
            time.sleep(0.045)
        sent.set()

    sender = threading.Thread(target=send, daemon=True)
    sender.start()
    kills = 0
    # Random moments, the two slots in turn: one slot drawn seven times in a row (1 in 64) once left the
    # other never killed, and most restarts killed again before their restore had finished.
    first = rng.choice([0, 1])
    victims = [(first + n) % 2 for n in range(7)]
    try:
        for slot in victims:
            time.sleep(rng.uniform(0.5, 1.5))
            procs[slot].send_signal(signal.SIGKILL)
            procs[slot].wait(10)
            procs[slot] = start(slot)
            kills += 1
        assert sent.wait(60), "commands were not all sent"
        events = wait_for(lambda: (lambda ev: ev if len(ev) >= 3 else None)(_events(kafka_config, name)), 120,
                          "3 completion events")
        time.sleep(1.5)  # room for a (wrong) second event to show up
        for proc in procs.values():
            proc.send_signal(signal.SIGTERM)
        for proc in procs.values():
            assert proc.wait(30) == 0, f"processor did not stop cleanly; see {logs}"
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()

    events = _events(kafka_config, name)
    assert Counter(e["request_id"] for e in events) == {big: 1, medium: 1, failing: 1}
    final = {rid: client.get(rid) for rid in totals}
    assert final[big]["completed"] == 1000 and final[big]["status"] == SUCCEEDED
    assert final[medium]["completed"] == 150 and final[medium]["status"] == SUCCEEDED
    assert (final[failing]["completed"], final[failing]["failed"]) == (140, 10)
    assert final[failing]["status"] == COMPLETED_WITH_FAILURES
    assert {e["request_id"]: e for e in events} == final
    # Exactly-once, not just idempotent counting: a command applied twice (state restored, offset not
    # committed with it) would count as a duplicate. One producer sends them in order per partition,
    # so the duplicates before each request's terminal command are known exactly.
    for rid, total in totals.items():
        seen: set[int] = set()
        duplicates = 0
        for cmd_rid, job, _ in commands:
            if cmd_rid != rid or len(seen) == total:
                continue
            if job in seen:
                duplicates += 1
            seen.add(job)
        assert (final[rid]["duplicates"], final[rid]["rejected"]) == (duplicates, 0), rid
    # No transaction left open: the last stable offset is the high watermark everywhere we write.
    admin = AdminClient(kafka_config)
    for topic in (store_topic(name), events_topic(name)):
        wait_for(lambda t=topic: end_offsets(admin, t, range(3), IsolationLevel.READ_COMMITTED)
                 == end_offsets(admin, t, range(3)), 5, f"last stable offset == high watermark on {topic}")
    # Every command was consumed and committed (S.commands has no transaction markers).
    assert committed(kafka_config, group, commands_topic(name)) == end_offsets(admin, commands_topic(name), range(3))
    wait_for(lambda: all(watcher.last.get(rid) == final[rid] for rid in totals), 30, "the watcher at the end")
    watcher.halt.set()
    watcher.join(10)
    assert watcher.violations == []
    assert watcher.seen > 3
    # The kills hit processors that held state: restarted ones restored non-empty partitions.
    restores = re.findall(r"restored ([1-9][0-9]*) request", logs.read_text())
    assert len(restores) >= 3, f"crash recovery barely exercised ({len(restores)} restores, seed {seed}); see {logs}"
    assert kills == 7


# -- issue 17: bounded commands, restore that never stops the processor --------------------------
def _produce_raw(config: dict[str, Any], topic: str, records: list[tuple[str, bytes]], partitions: int = 3) -> None:
    """Records put on `topic` by hand, as any producer could, on their request id's partition."""
    producer = Producer({**config, "message.max.bytes": 1_048_576})
    for key, value in records:
        producer.produce(topic, value, key=key.encode(), partition=partition_for(key, partitions))
    assert producer.flush(30) == 0


def _dead_letters(config: dict[str, Any], name: str, expected: int) -> list[Any]:
    dlq = f"{commands_topic(name)}.{name}.store-processor.dlq"
    return read_all(config, dlq, expected=expected, timeout=60)


def _complete_a_new_request(config: dict[str, Any], name: str, request_id: str) -> dict[str, Any] | None:
    client = StoreClient(config, name)
    try:
        client.init(request_id, 3)
        for job in range(3):
            client.complete(request_id, job, flush=False)
        client.flush()
        return client.wait(request_id, timeout=60)
    finally:
        client.close()


def test_a_huge_total_with_spread_completions_is_dead_lettered_and_new_requests_complete(
        kafka_config: dict[str, Any], name: str, running: list[Running]) -> None:
    """Defect 2a: init(10^13) + 66 spread completes (4 kB) made the processor crash-loop on MemoryError
    (a 10^13-bit bitmap); a 999,800-byte command's dead letter did not fit its topic."""
    ensure_store_topics(kafka_config, name)
    running.append(proc := Running(kafka_config, name))
    evil = [("evil", json.dumps({"op": "init", "request_id": "evil", "total": 10**13}).encode())]
    evil += [("evil", json.dumps({"op": "complete", "request_id": "evil", "job": (i + 1) * 150_000_000_000}).encode())
             for i in range(66)]
    assert sum(len(v) for _, v in evil) < 5000
    evil.append(("huge", b"x" * 999_800))  # not JSON, and more than max_command_bytes
    _produce_raw(kafka_config, commands_topic(name), evil)

    final = _complete_a_new_request(kafka_config, name, "after-the-attack")
    assert final is not None and final["status"] == SUCCEEDED, "a new request completes after the attack"
    assert proc.thread.is_alive()
    dead = _dead_letters(kafka_config, name, expected=68)
    assert len(dead) == 68
    kinds = Counter(dict(m.headers())["kw-error-type"] for m in dead)
    assert kinds == {b"CommandError": 68}
    messages = [dict(m.headers())["kw-error-message"].decode() for m in dead]
    assert sum("total in 0..10,000,000 (max_total)" in m for m in messages) == 1
    assert sum("job index in 0..9,999,999" in m for m in messages) == 66
    [huge] = [m for m in dead if m.key() == b"huge"]
    headers = dict(huge.headers())
    assert headers["kw-original-size"] == b"999800" and 0 < len(huge.value()) < 999_800  # truncated to fit
    assert b"xxxx" not in headers["kw-error-message"]
    assert StoreClient(kafka_config, name).get("evil") is None  # nothing of it was stored


def test_completions_beyond_max_total_never_commit_an_unrestorable_value(
        kafka_config: dict[str, Any], name: str, running: list[Running]) -> None:
    """Defect 2b: without init, spread completions plus job 20,000,000 committed a value that
    RequestState.from_value refused, so every later restore failed, for good."""
    ensure_store_topics(kafka_config, name)
    running.append(first := Running(kafka_config, name, instance_id="a"))
    spread = [i * 100_003 for i in range(66)]
    _produce_raw(kafka_config, commands_topic(name), [
        ("spread", json.dumps({"op": "complete", "request_id": "spread", "job": j}).encode())
        for j in [*spread, 20_000_000]])
    client = StoreClient(kafka_config, name)
    pending = _value(client, "spread", lambda v: v["completed"] == 66, "the 66 completions in range recorded")
    assert pending["status"] == PENDING
    assert len(_dead_letters(kafka_config, name, expected=1)) == 1  # job 20,000,000
    first.stop()

    running.append(second := Running(kafka_config, name, instance_id="b"))  # restores every partition
    assert second.processor.stats.restored >= 1 and second.thread.is_alive()
    final = _complete_a_new_request(kafka_config, name, "after-the-restart")
    assert final is not None and final["status"] == SUCCEEDED
    client.init("spread", 6_600_000)
    value = _value(client, "spread", lambda v: v["total"] == 6_600_000, "the restored request goes on")
    assert value["completed"] == 66 and value["status"] == RUNNING


def test_a_value_that_does_not_restore_marks_only_its_request_corrupt(
        kafka_config: dict[str, Any], name: str, running: list[Running]) -> None:
    """A stored value anyone wrote that cannot be decoded or validated: that one request reads as
    `corrupt` (in S.store and to `wait`), the processor goes on with the others."""
    ensure_store_topics(kafka_config, name)
    running.append(first := Running(kafka_config, name, instance_id="a"))
    client = StoreClient(kafka_config, name)
    client.init("ongoing", 4)
    client.complete("ongoing", 0)
    _value(client, "ongoing", lambda v: v["completed"] == 1, "ongoing recorded")
    first.stop()

    bitmap_too_big = {"request_id": "bad-bitmap", "total": None, "completed": 1, "failed": 0, "status": "pending",
                      "completed_jobs": {"format": "zlib-bitmap-v1", "size": 20_000_001, "count": 1, "data": ""}}
    _produce_raw(kafka_config, store_topic(name), [
        ("garbage", b"\x00\xff not json at all"),
        ("bad-bitmap", json.dumps(bitmap_too_big).encode()),
        ("bad-total", json.dumps({"request_id": "bad-total", "total": 10**13, "completed_jobs": [[0, 5]]}).encode()),
    ])
    running.append(second := Running(kafka_config, name, instance_id="b"))
    assert second.thread.is_alive()
    for request_id in ("garbage", "bad-bitmap", "bad-total"):
        value = _value(client, request_id, lambda v: v["status"] == "corrupt", f"{request_id} marked corrupt")
        assert "could not be restored" in value["error"] and "not json" not in value["error"]
    assert client.wait("garbage", timeout=10)["status"] == "corrupt"  # a waiter fails instead of waiting
    for job in range(1, 4):
        client.complete("ongoing", job, flush=False)
    client.flush()
    assert _value(client, "ongoing", lambda v: v["status"] == SUCCEEDED, "ongoing finished")["completed"] == 4
    assert _complete_a_new_request(kafka_config, name, "new")["status"] == SUCCEEDED
    corrupt_events = [e for e in _events(kafka_config, name) if e["status"] == "corrupt"]
    assert sorted(e["request_id"] for e in corrupt_events) == ["bad-bitmap", "bad-total", "garbage"]
    client.complete("garbage", 0)  # later commands of a corrupt request change nothing
    time.sleep(2)
    assert client.get("garbage")["status"] == "corrupt" and second.thread.is_alive()
