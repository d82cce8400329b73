"""Fuzz: thousands of malformed records, interleaved with good ones, into every topic we read.

Hypothesis draws batches of records: random header names and values (the kw- ones among them,
with non-integers where integers belong), keys that are not UTF-8, values that are not JSON or are
JSON of the wrong shape. Each batch goes, between good records, into a worker's request and retry
topics, a store's commands topic, an exactly-once processor's input and the control topic, all
read by processes that keep running across the batches. The last test then checks that every
process is still up, every good record was handled exactly as without the fuzz, every bad one is
in a dead-letter topic (its key kept byte for byte), and every control record of the wrong shape
was ignored and counted.

The second part (below) draws sizes and empties, not only shapes: one record of any kind (1 MB
values, empty keys and values, 400-digit integers, totals of 10^13, odd kw- headers, forged
provenance), then a canary behind it, in front of every worker strategy, the store and an
exactly-once processor, each run under its supervisor. Run alone with `-k "any_kind or any_single"`.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import pytest
from confluent_kafka import Message as KafkaMessage
from confluent_kafka import Producer
from hypothesis import HealthCheck, Phase, example, given, settings
from hypothesis import strategies as st

from kafka_workflows import headers as h
from kafka_workflows.eos import Output, TransactionalProcessor
from kafka_workflows.errors import BatchItemFailed
from kafka_workflows.handlers import batch_handler
from kafka_workflows.kafka.admin import TopicSpec, ensure_topics
from kafka_workflows.ops.control import CONTROL_TOPIC, send_command
from kafka_workflows.retry.policy import NonBlockingRetry, RetryPolicy
from kafka_workflows.retry.topics import dead_letter_topic, retry_topic
from kafka_workflows.store import StoreClient, StoreProcessor, commands_topic, ensure_store_topics
from kafka_workflows.store.partitioning import partition_for
from kafka_workflows.store.topics import store_topic
from kafka_workflows.supervise import shared_metrics
from kafka_workflows.worker import Worker
from tests.helpers import fuzz_records as fr
from tests.helpers.fuzz_units import Collector, SupervisedUnit
from tests.helpers.kafka import read_all, start_in_thread, stop_thread, wait_for

# Each pair of tests shares a module fixture: the fuzzing test fills it and the one after checks what it
# left. So the module runs in one pytest-xdist worker, in order (--dist loadgroup); spread, the check can
# land in the other worker with an empty fixture ("did not run").
pytestmark = [pytest.mark.integration, pytest.mark.xdist_group("fuzz")]

BATCHES = 40  # hypothesis examples; each draws ~70 bad records, ~2,800 in all

KW = [h.REQUEST_ID, h.WORKFLOW, h.ATTEMPT, h.RETRY_AT, h.ORIGINAL_TOPIC, h.ORIGINAL_PARTITION, h.ORIGINAL_OFFSET,
      h.CONSUMER_GROUP, h.ERROR_TYPE, h.ERROR_MESSAGE, h.FIRST_FAILED_AT, h.REPLAYED_FROM, h.JOB_INDEX]
header_names = st.one_of(st.sampled_from(KW), st.text(min_size=1, max_size=12))
header_values = st.one_of(st.binary(max_size=16), st.sampled_from([b"", b"-", b"1e9", b"NaN", b"\xff\xfe", b" 7"]))
headers = st.lists(st.tuples(header_names, header_values), max_size=4)
keys = st.one_of(st.none(), st.binary(max_size=12))
not_json = st.binary(max_size=40).map(lambda b: b"\xff" + b)  # 0xff never starts a JSON document
wrong_shape = st.sampled_from([b"[]", b"1", b'"text"', b"null", b"{}", b'{"op": 5}', b'{"op": "init"}',
                               b'{"op": "complete", "request_id": 7}', b"{" * 500])
bad_int = st.sampled_from([b"seven", b"", b"1.5", b"0x10", b"\xff", b"9" * 400])
bad_control = st.one_of(
    not_json, wrong_shape,
    st.fixed_dictionaries({"kind": st.just("command")},
                          optional={"op": st.one_of(st.sampled_from(["skip", "pause", "nuke"]), st.integers()),
                                    "topic": st.one_of(st.integers(), st.lists(st.text(max_size=5), max_size=2)),
                                    "partition": st.one_of(st.text(max_size=5), st.floats()),
                                    "offset": st.one_of(st.text(max_size=5), st.booleans()),
                                    "at": st.text(max_size=5)}))
Record = tuple[bytes | None, bytes | None, list[Any]]


@dataclass
class Fuzzed:
    """The running processes and what the batches put in front of them."""

    config: dict[str, Any]
    run: str = field(default_factory=lambda: uuid.uuid4().hex[:8])
    good: int = 0
    bad_worker_keys: list[bytes | None] = field(default_factory=list)
    bad_commands: int = 0
    bad_inputs: int = 0
    bad_control: int = 0
    requests: int = 0
    eos_good: int = 0
    handled: list[Any] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    producer: Producer | None = None
    store_client: StoreClient | None = None

    def __post_init__(self) -> None:
        self.topic, self.group, self.store = f"fuzz-{self.run}", f"fuzz-g-{self.run}", f"fuzz-s-{self.run}"
        self.eos_in, self.eos_group = f"fuzz-e-{self.run}", f"fuzz-eg-{self.run}"
        self.eos_out = f"{self.eos_in}.out"

    def handle(self, message: Any) -> None:
        with self.lock:
            self.handled.append(message.value)

    def double(self, message: KafkaMessage) -> list[Output]:
        return [Output(self.eos_out, message.key(), json.dumps(2 * json.loads(message.value())["n"]).encode())]

    def produce(self, topic: str, records: list[Record], partitions: int) -> None:
        if self.producer is None:  # one for the whole fuzz: a new idempotent producer per call cost seconds a batch
            self.producer = Producer({**self.config, "enable.idempotence": True, "linger.ms": 5})
        for i, (key, value, hdrs) in enumerate(records):
            self.producer.produce(topic, value, key=key, headers=hdrs, partition=i % partitions)
        assert self.producer.flush(60) == 0


@pytest.fixture(scope="module")
def fuzzed(broker: Any) -> Iterator[tuple[Fuzzed, dict[str, Any]]]:
    fz = Fuzzed({"bootstrap.servers": broker.bootstrap_servers})
    ensure_topics(fz.config, [TopicSpec(fz.topic, 2), TopicSpec(fz.eos_in, 2), TopicSpec(fz.eos_out, 2)])
    ensure_store_topics(fz.config, fz.store)
    units = {
        "worker": Worker(fz.config, [fz.topic], fz.group, fz.handle, store=fz.store,
                         policy=RetryPolicy(non_blocking=NonBlockingRetry(intervals=[0.1]))),
        "store": StoreProcessor(fz.config, fz.store, commit_interval=0.3),
        "eos": TransactionalProcessor(fz.config, [fz.eos_in], fz.eos_group, fz.double, commit_interval=0.3),
    }
    threads = {name: start_in_thread(unit) for name, unit in units.items()}
    yield fz, {"units": units, "threads": threads}
    for name, unit in units.items():
        if threads[name].is_alive():
            stop_thread(unit, threads[name])


@settings(max_examples=BATCHES, deadline=None, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                 HealthCheck.data_too_large])
@given(bad_main=st.lists(st.tuples(keys, not_json, headers), min_size=20, max_size=30),
       bad_jobs=st.lists(st.tuples(keys, headers, bad_int), min_size=2, max_size=4),
       bad_retry=st.lists(st.tuples(keys, headers, bad_int), min_size=2, max_size=4),
       bad_commands=st.lists(st.tuples(keys, st.one_of(not_json, wrong_shape), headers), min_size=8, max_size=14),
       bad_inputs=st.lists(st.tuples(keys, not_json, headers), min_size=6, max_size=12),
       bad_control=st.lists(bad_control, min_size=4, max_size=8))
def test_a_batch_of_fuzzed_records_between_good_ones(
        fuzzed: tuple[Fuzzed, dict[str, Any]], bad_main: list[Record], bad_jobs: list[Any], bad_retry: list[Any],
        bad_commands: list[Record], bad_inputs: list[Record], bad_control: list[Any]) -> None:
    fz, _ = fuzzed
    # Any JSON is a request a handler may get: what makes these bad is a value that is not JSON, or a
    # kw- header the worker itself must read (kw-job-index when it reports to a store, kw-retry-at).
    jobs = [(k, b'{"job": true}', [*hs, (h.REQUEST_ID, b"r"), (h.JOB_INDEX, v)]) for k, hs, v in bad_jobs]
    retries = [(k, b'{"retry": true}', [*hs, (h.RETRY_AT, v)]) for k, hs, v in bad_retry]
    good = [(f"good-{fz.good + n}".encode(), json.dumps({"n": fz.good + n}).encode(), []) for n in range(10)]
    fz.produce(fz.topic, good[:5] + bad_main + jobs + good[5:], 2)
    fz.produce(retry_topic(fz.topic, fz.group, 1), retries, 2)
    fz.good += len(good)
    fz.bad_worker_keys += [k for k, _, _ in bad_main + jobs + retries]

    client = fz.store_client = fz.store_client or StoreClient(fz.config, fz.store)
    fz.produce(commands_topic(fz.store), bad_commands, 3)
    request = f"req-{fz.requests}"
    client.init(request, 3, flush=False)
    for job in range(3):
        client.complete(request, job, flush=False)
    client.flush()
    fz.requests += 1
    fz.bad_commands += len(bad_commands)

    inputs = [(f"e{fz.eos_good + n}".encode(), json.dumps({"n": fz.eos_good + n}).encode(), []) for n in range(5)]
    fz.produce(fz.eos_in, inputs[:2] + bad_inputs + inputs[2:], 2)
    fz.eos_good += len(inputs)
    fz.bad_inputs += len(bad_inputs)

    encoded = [v if isinstance(v, bytes) else json.dumps({**v, "group": fz.group}).encode() for v in bad_control]
    fz.produce(CONTROL_TOPIC, [(fz.group.encode(), v, []) for v in encoded], 1)
    fz.bad_control += len(bad_control)


def test_after_the_fuzz_every_process_is_up_and_every_record_accounted_for(
        fuzzed: tuple[Fuzzed, dict[str, Any]]) -> None:
    fz, env = fuzzed
    units, threads = env["units"], env["threads"]
    assert fz.good >= 100 and len(fz.bad_worker_keys) >= 800, "the fuzz batches did not run"
    _, applied = send_command(fz.config, "pause", fz.group, reason="after the fuzz", wait=60)
    assert [a["op"] for a in applied] == ["pause"], "a good command after the fuzz was not applied"
    send_command(fz.config, "resume", fz.group, reason="after the fuzz", wait=60)

    dead = read_all(fz.config, dead_letter_topic(fz.topic, fz.group), expected=len(fz.bad_worker_keys), timeout=240)
    wait_for(lambda: len(fz.handled) >= fz.good, 120, "the good requests")
    client = StoreClient(fz.config, fz.store)
    finals = [wait_for(lambda r=r: (lambda v: v if v and v["status"] == "succeeded" else None)(
        client.get(f"req-{r}")), 120, f"req-{r} to succeed") for r in range(fz.requests)]
    store_dead = read_all(fz.config, dead_letter_topic(commands_topic(fz.store), units["store"].group),
                          expected=fz.bad_commands, timeout=120)
    outputs = read_all(fz.config, fz.eos_out, expected=fz.eos_good, timeout=120)
    eos_dead = read_all(fz.config, dead_letter_topic(fz.eos_in, fz.eos_group), expected=fz.bad_inputs, timeout=120)
    assert all(thread.is_alive() for thread in threads.values()), "a process stopped"
    ignored = units["worker"].metrics.registry.get_sample_value("kw_worker_control_ignored_total", {"group": fz.group})

    assert sorted(v["n"] for v in fz.handled) == list(range(fz.good)), "a bad record reached the handler"
    assert Counter(m.key() for m in dead) == Counter(fz.bad_worker_keys)
    assert [(f["completed"], f["total"], f["failed"]) for f in finals] == [(3, 3, 0)] * fz.requests
    assert len(store_dead) == fz.bad_commands
    assert sorted(json.loads(m.value()) for m in outputs) == [2 * n for n in range(fz.eos_good)]
    assert len(eos_dead) == fz.bad_inputs
    assert ignored == fz.bad_control


# == Sizes, empties, every record kind, every strategy: one record, then a canary ======================
#
# Each example draws one record of each kind (tests/helpers/fuzz_records.py) and puts it, followed by a
# normal "canary" record on the same partition (and key), in front of every unit: a worker per strategy
# (message handler, @batch_handler, concurrency 4; each reporting to a store, each with one retry topic),
# the store processor and an exactly-once processor, all run as `kafka-workflows worker` runs them
# (under `Supervised`, workers with `shared_metrics`). A control record of an odd shape goes to the
# control topic too. After the canaries, for each unit:
#   - it is up and its supervisor never rebuilt it (a restart is a failure: a single record made it give up);
#   - the canary was handled (the partition moves);
#   - every record so far was handled (handler call, store value, output) or dead-lettered, exactly once
#     (counted by the `x-fz` marker header; a dead letter of a 1 MB value may be truncated);
#   - a dead letter of a request-topic record names where the worker read it (never a forged kw-original-*);
#   - after a store case with many commands, a restarted store processor restores and goes on.
# A unit that fails is replaced by a fresh one (new topics and group), so each failure is its own finding;
# all of them are listed by the last test. derandomize=True: the same examples every run; each failure
# line holds the case's repr, which is enough to replay it (`ExampleCase`s below show how).

EXAMPLES = 20  # generated examples, after the explicit ones below
SETTLE_S = 45.0  # generous: the machine is shared; a unit that gave up is noticed within a second or two
FUZZ_POLICY = RetryPolicy(non_blocking=NonBlockingRetry(intervals=[0.1]))


class Env:
    """The broker, one producer, the lanes and the failures found."""

    def __init__(self, config: dict[str, Any]) -> None:
        self.config = config
        self.producer = Producer({**config, "enable.idempotence": True, "linger.ms": 2})
        self.failures: list[str] = []
        self.examples = 0
        self.lanes: list[Any] = []

    def produce(self, topic: str, records: list[fr.Record], partition: int = 0) -> list[int]:
        """Produce in order to one partition; the offsets they got."""
        offsets: list[int] = [-1] * len(records)
        errors: list[str] = []

        def delivered(i: int) -> Any:
            def report(err: Any, msg: Any) -> None:
                if err is not None:
                    errors.append(str(err))
                else:
                    offsets[i] = msg.offset()
            return report

        for i, (key, val, hdrs) in enumerate(records):
            self.producer.produce(topic, val, key=key, headers=hdrs, partition=partition, on_delivery=delivered(i))
        assert self.producer.flush(60) == 0 and not errors, f"the fuzz could not produce its records: {errors}"
        return offsets


def _wait(condition: Any, timeout: float, trouble: Any) -> bool:
    """Poll `condition` until true (True), the unit is in trouble or the time is up (False)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        if trouble() is not None:
            time.sleep(0.5)  # what it wrote before giving up, for the message
            return bool(condition())
        time.sleep(0.1)
    return bool(condition())


class WorkerLane:
    """A worker with one strategy, on a 1-partition topic of its own, reporting to a store."""

    def __init__(self, env: Env, strategy: str) -> None:
        self.env, self.strategy = env, strategy
        self.unit: SupervisedUnit | None = None
        self.collector: Collector | None = None
        self.start()

    @property
    def name(self) -> str:
        return f"worker[{self.strategy}]"

    def start(self) -> None:
        run = uuid.uuid4().hex[:8]
        self.topic, self.group = f"fz-{self.strategy}-{run}", f"fzg-{self.strategy}-{run}"
        self.handled: Counter[str] = Counter()
        self.cases: dict[str, str] = {}  # marker -> the case that produced it
        self.offsets: dict[str, tuple[str, int]] = {}  # marker of a request-topic record -> where it was written
        lock = threading.Lock()

        def handle(message: Any) -> None:
            _ = message.attempt  # a kw-attempt that is not an integer fails here
            value = message.value  # a value that is not JSON fails here
            if isinstance(value, dict) and value.get("fail"):
                raise RuntimeError("the record asks to fail")
            with lock:
                self.handled[message.headers.get(fr.MARKER, "?")] += 1

        @batch_handler
        def handle_batch(messages: Any) -> None:
            for i, message in enumerate(messages):
                try:
                    handle(message)
                except Exception as exc:
                    raise BatchItemFailed(i) from exc

        ensure_topics(self.env.config, [TopicSpec(self.topic, 1)])
        factory = shared_metrics(partial(
            Worker, self.env.config, [self.topic], self.group, handle_batch if self.strategy == "batch" else handle,
            policy=FUZZ_POLICY, topic_partitions=1, store=f"fzws-{run}", status_interval=1.0,
            concurrency=4 if self.strategy == "concurrent" else 1), None)
        self.unit = SupervisedUnit(f"worker {self.group}", factory)
        self.dlq = dead_letter_topic(self.topic, self.group)
        self.collector = Collector(self.env.config, [self.dlq])

    def stop(self) -> None:
        if self.unit is not None:
            self.unit.stop()
        if self.collector is not None:
            self.collector.close()

    def send(self, n: int, case: fr.RecordCase, control: str) -> None:
        marker, canary = f"w{n}", f"w{n}-canary"
        retry = case.to == "retry"
        target = retry_topic(self.topic, self.group, 1) if retry else self.topic
        key, val, hdrs = case.record(marker)
        canary_headers = [(fr.MARKER, canary.encode()), *([(h.RETRY_AT, b"0")] if retry else [])]
        if control != "none":
            self.env.produce(CONTROL_TOPIC, [(self.group.encode(), fr.control_record(control, self.group, self.topic),
                                              [])])
        offsets = self.env.produce(target, [(key, val, hdrs), (key, b'{"canary": true}', canary_headers)])
        self.cases[marker] = f"{case!r} (control record {control!r})"
        self.cases[canary] = f"the canary behind {case!r}"
        if not retry:
            self.offsets[marker] = (self.topic, offsets[0])
        self.pending = (marker, canary)

    def _counts(self) -> tuple[Counter[str], Counter[str]]:
        assert self.collector is not None
        return Counter(self.handled), Counter(s.marker for s in self.collector.of(self.dlq))

    def settle(self) -> list[str]:
        assert self.unit is not None
        marker, canary = self.pending

        def settled() -> bool:
            handled, dead = self._counts()
            return all(handled[m] + dead[m] >= 1 for m in (marker, canary))

        _wait(settled, SETTLE_S, self.unit.trouble)
        problems = []
        trouble = self.unit.trouble()
        if trouble:
            problems.append(trouble)
        problems += self.check(expect_all=True)
        return problems

    def check(self, expect_all: bool) -> list[str]:
        handled, dead = self._counts()
        problems = []
        for m in self.cases:
            if handled[m] + dead[m] != 1 and (expect_all or handled[m] + dead[m] > 1):
                what = "the canary" if m.endswith("-canary") else "the record"
                problems.append(f"{what} {m} was handled {handled[m]} and dead-lettered {dead[m]} time(s)")
        assert self.collector is not None
        for letter in self.collector.of(self.dlq):
            where = self.offsets.get(letter.marker or "")
            if where is None:
                continue
            said = (letter.headers.get(h.ORIGINAL_TOPIC, b"").decode("utf-8", "replace"),
                    letter.headers.get(h.ORIGINAL_OFFSET, b"").decode("utf-8", "replace"))
            if said != (where[0], str(where[1])):
                problems.append(f"the dead letter of {letter.marker} says it came from "
                                f"{said[0][:60]!r}@{said[1][:30]!r}, not {where[0]}@{where[1]} (where it was read)")
        return problems


class StoreLane:
    """The store processor of a store of its own (2 partitions: commands found on the other one are
    forwarded); every command of a case goes to partition 0, behind it a canary request homed there."""

    name = "store"

    def __init__(self, env: Env) -> None:
        self.env = env
        self.unit: SupervisedUnit | None = None
        self.collector: Collector | None = None
        self.start()

    def start(self, fresh: bool = True) -> None:
        if fresh:
            run = uuid.uuid4().hex[:8]
            self.store = f"fzst-{run}"
            self.group = f"fzst-g-{run}"
            self.cases: dict[str, tuple[str, list[str], str | None]] = {}  # request id -> case, markers, own id
            ensure_store_topics(self.env.config, self.store, 2)
            self.dlq = dead_letter_topic(commands_topic(self.store), self.group)
            ensure_topics(self.env.config, [TopicSpec(self.dlq, 2)])
            self.collector = Collector(self.env.config, [self.dlq, store_topic(self.store)])
        self.unit = SupervisedUnit(f"store {self.store}", partial(
            StoreProcessor, self.env.config, self.store, self.group, partitions=2, commit_interval=0.2))

    def stop(self) -> None:
        if self.unit is not None:
            self.unit.stop()
        if self.collector is not None:
            self.collector.close()

    def _canary(self, n: int) -> str:
        rid = next(f"canary-{n}-{i}" for i in range(1000) if partition_for(f"canary-{n}-{i}", 2) == 0)
        self.env.produce(commands_topic(self.store), [
            (rid.encode(), json.dumps({"op": "init", "request_id": rid, "total": 1}).encode(), []),
            (rid.encode(), json.dumps({"op": "complete", "request_id": rid, "job": 0}).encode(), [])])
        return rid

    def send(self, n: int, case: fr.CommandCase) -> None:
        marker = f"s{n}"
        records = case.records(marker)
        self.env.produce(commands_topic(self.store), records)
        own = f"fz-{marker}" if case.request_id == "own" else None
        self.cases[marker] = (repr(case), [r[2][-1][1].decode() for r in records], own)
        self.pending = (marker, self._canary(n), case)

    def _values(self) -> dict[str, Any]:
        assert self.collector is not None
        values: dict[str, Any] = {}
        for seen in self.collector.of(store_topic(self.store)):
            key = (seen.key or b"").decode("utf-8", "replace")
            values[key] = json.loads(seen.value) if seen.value is not None else seen.size
        return values

    def _dead(self) -> Counter[str]:
        assert self.collector is not None
        return Counter(s.marker for s in self.collector.of(self.dlq))

    def _accounted(self, marker: str, values: dict[str, Any], dead: Counter[str]) -> bool:
        _, markers, own = self.cases[marker]
        return (own is not None and own in values) or all(dead[m] >= 1 for m in markers)

    def _canary_done(self, rid: str) -> bool:
        value = self._values().get(rid)
        return isinstance(value, dict) and value.get("status") == "succeeded"

    def settle(self) -> list[str]:
        assert self.unit is not None
        marker, canary, case = self.pending
        _wait(lambda: self._canary_done(canary) and self._accounted(marker, self._values(), self._dead()),
              SETTLE_S, self.unit.trouble)
        problems = []
        trouble = self.unit.trouble()
        if trouble:
            problems.append(trouble)
        if not self._canary_done(canary):
            problems.append(f"the canary request {canary} behind it did not succeed")
        problems += self.check(expect_all=True)
        if not problems and case.spread:  # many commands for one request: a restarted processor must restore
            self.unit.stop()
            self.start(fresh=False)
            again = self._canary(10_000 + int(marker[1:]))
            _wait(lambda: self._canary_done(again), SETTLE_S, self.unit.trouble)
            trouble = self.unit.trouble()
            if trouble or not self._canary_done(again):
                problems.append(f"after a restart of the store processor: {trouble or 'a canary did not succeed'}")
        return problems

    def check(self, expect_all: bool) -> list[str]:
        values, dead = self._values(), self._dead()
        problems = []
        for marker, (_, markers, own) in self.cases.items():
            twice = [m for m in markers if dead[m] > 1]
            if twice:
                problems.append(f"command(s) {twice} dead-lettered more than once")
            if expect_all and not self._accounted(marker, values, dead):
                problems.append(f"command(s) of {marker} neither applied (no store value for {own}) nor "
                                f"all dead-lettered ({sum(dead[m] for m in markers)} of {len(markers)})")
        return problems


class ProcessorLane:
    """An exactly-once processor whose transform wants a JSON object (without `fail`) and writes one
    small output naming the input's marker."""

    name = "exactly-once processor"

    def __init__(self, env: Env) -> None:
        self.env = env
        self.unit: SupervisedUnit | None = None
        self.collector: Collector | None = None
        self.start()

    def start(self) -> None:
        run = uuid.uuid4().hex[:8]
        self.topic, self.group = f"fz-eos-{run}", f"fzg-eos-{run}"
        self.out, self.dlq = f"{self.topic}.out", dead_letter_topic(self.topic, self.group)
        self.cases: dict[str, str] = {}
        ensure_topics(self.env.config, [TopicSpec(t, 1) for t in (self.topic, self.out, self.dlq)])
        out = self.out

        def transform(msg: KafkaMessage) -> list[Output]:
            value = json.loads(msg.value())  # raises on None, bytes that are not JSON, too deep a nesting
            if not isinstance(value, dict) or value.get("fail"):
                raise ValueError("not an input this transform takes")
            marker = dict(msg.headers() or []).get(fr.MARKER, b"?").decode()
            return [Output(out, msg.key(), json.dumps({"fz": marker}).encode(), {fr.MARKER: marker})]

        self.unit = SupervisedUnit(f"processor {self.group}", partial(
            TransactionalProcessor, self.env.config, [self.topic], self.group, transform, commit_interval=0.2,
            transactional_id_prefix=f"fz-{run}"))
        self.collector = Collector(self.env.config, [self.out, self.dlq])

    def stop(self) -> None:
        if self.unit is not None:
            self.unit.stop()
        if self.collector is not None:
            self.collector.close()

    def send(self, n: int, case: fr.InputCase) -> None:
        marker, canary = f"e{n}", f"e{n}-canary"
        key, val, hdrs = case.record(marker)
        self.env.produce(self.topic, [(key, val, hdrs), (key, b'{"n": 1}', [(fr.MARKER, canary.encode())])])
        self.cases[marker], self.cases[canary] = repr(case), f"the canary behind {case!r}"
        self.pending = (marker, canary)

    def _counts(self) -> tuple[Counter[str], Counter[str]]:
        assert self.collector is not None
        outputs, dead = self.collector.of(self.out), self.collector.of(self.dlq)
        return Counter(s.marker for s in outputs), Counter(s.marker for s in dead)

    def settle(self) -> list[str]:
        assert self.unit is not None
        marker, canary = self.pending

        def settled() -> bool:
            outputs, dead = self._counts()
            return all(outputs[m] + dead[m] >= 1 for m in (marker, canary))

        _wait(settled, SETTLE_S, self.unit.trouble)
        trouble = self.unit.trouble()
        return ([trouble] if trouble else []) + self.check(expect_all=True)

    def check(self, expect_all: bool) -> list[str]:
        outputs, dead = self._counts()
        return [f"{'the canary' if m.endswith('-canary') else 'the input'} {m} gave {outputs[m]} output(s) and "
                f"{dead[m]} dead letter(s)" for m in self.cases
                if outputs[m] + dead[m] != 1 and (expect_all or outputs[m] + dead[m] > 1)]


@dataclass(frozen=True)
class ExampleCase:
    """One example: a record for the workers, a control record, a store case and a processor input."""

    worker: fr.RecordCase
    control: str
    command: fr.CommandCase
    input: fr.InputCase


def run_example(env: Env, case: ExampleCase) -> None:
    env.examples += 1
    n = env.examples
    print(f"fuzz example {n}: {case!r}", flush=True)
    workers, store, processor = env.lanes[:3], env.lanes[3], env.lanes[4]
    for lane in workers:
        lane.send(n, case.worker, case.control)
    store.send(n, case.command)
    processor.send(n, case.input)
    for lane, what in [*((w, case.worker) for w in workers), (store, case.command), (processor, case.input)]:
        problems = lane.settle()
        if problems:
            found = f"{lane.name}: {what!r}: " + "; ".join(problems)
            print("FAILED", found, flush=True)
            env.failures.append(found)
            lane.stop()
            lane.start()


@pytest.fixture(scope="module")
def fuzz_env(broker: Any) -> Iterator[Env]:
    env = Env({"bootstrap.servers": broker.bootstrap_servers})
    try:
        env.lanes = [WorkerLane(env, s) for s in ("message", "batch", "concurrent")]
        env.lanes += [StoreLane(env), ProcessorLane(env)]
        yield env
    finally:
        for lane in env.lanes:
            lane.stop()


R, C, I = fr.RecordCase, fr.CommandCase, fr.InputCase  # noqa: E741 - short names for the table below
NAMED = [
    # issue 17, 4: a 999,800-byte value that is not JSON (its dead letter would not fit); 1 MB into eos
    ExampleCase(R("request", "text", "1MB-not-json"), "none", C("init", total="10^13"), I("text", "1MB-not-json")),
    # issue 17, 5 and 2: an empty kw-request-id on a store-reporting worker's job; 67 commands of one request
    ExampleCase(R("request", "text", "json", ((h.REQUEST_ID, "empty"), (h.JOB_INDEX, "0"))), "at-soon",
                C(init="10^13", op="complete", job="0", spread=66, spread_to="10^13"), I("empty", "1MB-json")),
    # issue 17, 6: a retry-topic record whose kw-retry-at is not a number (kills a concurrent worker)
    ExampleCase(R("retry", "text", "json", ((h.RETRY_AT, "abc"),)), "letters-object",
                C(op="complete", job="20M", spread=66, spread_to="20M"), I("absent", "absent")),
    # issue 17, 1: a forged kw-original-topic naming the control topic, on a request that is dead-lettered
    ExampleCase(R("request", "text", "pause-by-admin-fails", ((h.ORIGINAL_TOPIC, "control-topic"),
                                                              (h.ORIGINAL_OFFSET, "7"))), "offset-huge",
                C(op="fail", job="int64-max", reason="1MB"), I("not-utf8", "not-utf8", ((h.ATTEMPT, "abc"),))),
    # a 1 MB JSON value the handler fails on: its retry (value + provenance) would not fit either
    ExampleCase(R("request", "not-utf8", "1MB-json-fails"), "1MB-not-json",
                C(op="init", total="400-digits"), I("10kB", "nested-5000")),
    # huge and empty kw- headers, empty key and value
    ExampleCase(R("request", "empty", "empty", ((h.REQUEST_ID, "huge"), (h.JOB_INDEX, "0"))), "id-1MB",
                C(request_id="empty", job="1"), I("text", "400-digit-int", ((h.REQUEST_ID, "huge"),))),
    ExampleCase(R("request", "absent", "fails", ((h.ATTEMPT, "empty"), (h.JOB_INDEX, "400-digits"))), "empty",
                C(raw="1MB-not-json"), I("text", "json", ((h.JOB_INDEX, "int64-max+1"),))),
    ExampleCase(R("retry", "not-utf8", "1MB-json", ((h.RETRY_AT, "int64-max+1"), (h.ATTEMPT, "abc"))),
                "partition-400-digits", C(request_id="huge", op="init", total="1"), I("text", "fails")),
]


assert all(c.worker.fits() and c.command.fits() and c.input.fits() for c in NAMED), "a named case is over 1 MB"


def _named(test: Any) -> Any:
    for case in reversed(NAMED):
        test = example(case=case)(test)
    return test


@settings(max_examples=EXAMPLES, deadline=None, database=None, derandomize=True,
          phases=[Phase.explicit, Phase.generate],  # no shrinking: each example changes the shared units
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                 HealthCheck.data_too_large, HealthCheck.filter_too_much])
@_named
@given(case=st.builds(ExampleCase, worker=fr.record_cases, control=st.sampled_from(fr.CONTROL),
                      command=fr.command_cases, input=fr.input_cases))
def test_one_record_of_any_kind_and_size_then_a_canary_in_front_of_every_unit(fuzz_env: Env,
                                                                            case: ExampleCase) -> None:
    run_example(fuzz_env, case)  # failures are collected: every unit goes on to the next example


def test_after_any_single_record_every_unit_is_up_and_every_record_handled_or_dead_lettered_once(
        fuzz_env: Env) -> None:
    assert fuzz_env.examples >= len(NAMED), "the fuzz examples did not run"
    time.sleep(2.0)  # a late duplicate would show now
    for lane in fuzz_env.lanes:
        assert lane.unit is not None
        late = ([lane.unit.trouble()] if lane.unit.trouble() else []) + lane.check(expect_all=True)
        fuzz_env.failures += [f"{lane.name} (at the end): {problem}" for problem in late]
    assert not fuzz_env.failures, (f"{len(fuzz_env.failures)} failure(s) in {fuzz_env.examples} example(s):\n"
                                   + "\n".join(fuzz_env.failures))
