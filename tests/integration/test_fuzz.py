"""Fuzz: thousands of malformed records, interleaved with good ones, into every topic we read.

Hypothesis draws batches of records: random header names and values (the kw- ones among them,
with non-integers where integers belong), keys that are not UTF-8, values that are not JSON or are
JSON of the wrong shape. Each batch goes, between good records, into a worker's request and retry
topics, a store's commands topic, an exactly-once processor's input and the control topic, all
read by processes that keep running across the batches. The last test then checks that every
process is still up, every good record was handled exactly as without the fuzz, every bad one is
in a dead-letter topic (its key kept byte for byte), and every control record of the wrong shape
was ignored and counted.
"""

from __future__ import annotations

import json
import threading
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from confluent_kafka import Message as KafkaMessage
from confluent_kafka import Producer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kafka_workflows import headers as h
from kafka_workflows.eos import Output, TransactionalProcessor
from kafka_workflows.kafka.admin import TopicSpec, ensure_topics
from kafka_workflows.ops.control import CONTROL_TOPIC, send_command
from kafka_workflows.retry.policy import NonBlockingRetry, RetryPolicy
from kafka_workflows.retry.topics import dead_letter_topic, retry_topic
from kafka_workflows.store import StoreClient, StoreProcessor, commands_topic, ensure_store_topics
from kafka_workflows.worker import Worker
from tests.helpers.kafka import read_all, start_in_thread, stop_thread, wait_for

pytestmark = pytest.mark.integration

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
