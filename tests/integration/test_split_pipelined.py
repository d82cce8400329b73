"""A pipelined split against the real broker: jobs visible while it reads, init last, retries resume, kills
leave exact counts, a final failure ends the request `aborted`."""

from __future__ import annotations

import json
import random
import signal
import threading
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer

from kafka_workflows import headers as h
from kafka_workflows.kafka.admin import TopicSpec, ensure_topics
from kafka_workflows.sources.csv_source import CsvJobSource, MalformedCsvError
from kafka_workflows.split.jobs import JobsError, RequestAbortedError, produce_jobs
from kafka_workflows.store import ABORTED, PENDING, SUCCEEDED, StoreClient, StoreProcessor, commands_topic
from kafka_workflows.store.topics import ensure_store_topics
from kw_examples.contacts import SCHEMA
from tests.helpers.aggregation import spawn, split_csv, unique
from tests.helpers.kafka import read_all, wait_for

pytestmark = pytest.mark.integration


def _ops(config: dict[str, Any], store: str, request_id: str) -> list[dict[str, Any]]:
    return [json.loads(m.value()) for m in read_all(config, commands_topic(store)) if m.key() == request_id.encode()]


def _indices(config: dict[str, Any], topic: str, expected: int | None = None) -> Counter[int]:
    return Counter(int(h.decode(m.headers())[h.JOB_INDEX]) for m in read_all(config, topic, expected=expected))


def _contacts_csv(path: Path, rows: int, *, malformed_at: int | None = None) -> Path:
    """A messy contacts CSV: quoted fields with commas and newlines, a bad row every 37 (no email)."""
    rng = random.Random(21)
    lines = [b"email,first_name,last_name,company,notes"]
    for n in range(1, rows + 1):
        if n == malformed_at:
            lines.append(b"broken@example.com,Bad,\xff\xfe,Co,not UTF-8")
            continue
        email = "" if n % 37 == 0 else f"user{n}@example.com"
        notes = f'"said ""hi"", then\nleft {rng.randint(0, 99)}"' if n % 5 == 0 else "plain"
        lines.append(f'{email},First{n},Last{n},"Acme, Inc.",{notes}'.encode())
    path.write_bytes(b"\n".join(lines) + b"\n")
    return path


class Handler(threading.Thread):
    """The workers' side: reads the jobs topic read_committed and reports each job to the store,
    at least once (every 7th job twice, like a redelivery after a crash)."""

    def __init__(self, config: dict[str, Any], topic: str, store: str, request_id: str) -> None:
        super().__init__(daemon=True)
        self.config, self.topic, self.store, self.request_id = config, topic, store, request_id
        self.handled: Counter[int] = Counter()
        self.stopping = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        consumer = Consumer({**self.config, "group.id": f"handler-{uuid.uuid4().hex}", "auto.offset.reset": "earliest",
                             "enable.auto.commit": False, "isolation.level": "read_committed"})
        client = StoreClient(self.config, self.store)
        try:
            consumer.subscribe([self.topic])
            while not self.stopping.is_set():
                for msg in consumer.consume(200, 0.2):
                    if msg.error() is None:
                        job = int(h.decode(msg.headers())[h.JOB_INDEX])
                        for _ in range(2 if job % 7 == 0 else 1):
                            client.complete(self.request_id, job, flush=False)
                        self.handled[job] += 1
                client.flush()
        except BaseException as exc:  # noqa: BLE001 - reported to the test
            self.error = exc
        finally:
            consumer.close()
            client.close()


@pytest.fixture(scope="module")
def processor_store(broker: Any) -> Iterator[str]:
    """One store processor for the module's tests (each test uses its own requests)."""
    config = {"bootstrap.servers": broker.bootstrap_servers}
    store = unique("split-store")
    processor = StoreProcessor(config, store, commit_interval=0.2)
    ready = threading.Event()
    thread = threading.Thread(target=processor.run, kwargs={"ready": ready}, daemon=True)
    thread.start()
    try:
        assert ready.wait(60), "the store processor did not start"
        yield store
    finally:
        processor.stop()
        thread.join(30)


def test_chunks_are_visible_while_the_split_reads_and_a_retry_produces_only_the_rest(
        kafka_config: dict[str, Any]) -> None:
    topic, store, request_id = unique("jobs"), unique("store"), unique("req")
    tid = f"kw-jobs.{request_id}"
    release = threading.Event()
    ensure_topics(kafka_config, [TopicSpec(topic, 3)])  # read below while the split runs
    ensure_store_topics(kafka_config, store, 3)

    def first_attempt() -> Iterator[tuple[str, dict[str, int]]]:
        yield from ((f"job-{n}", {"n": n}) for n in range(12))
        release.wait(60)
        raise OSError("connection reset while reading the source")  # not final: a retry goes on

    failures: list[BaseException] = []

    def run() -> None:
        try:
            produce_jobs(kafka_config, tid, topic, request_id, first_attempt(), store, chunk_jobs=5, chunk_seconds=60,
                         rows_read=lambda: 0)
        except BaseException as exc:  # noqa: BLE001 - checked below
            failures.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        # Two chunks of five are committed and readable while the split is still reading; no init yet.
        assert _indices(kafka_config, topic, expected=10) == Counter(range(10))
        ops = _ops(kafka_config, store, request_id)
        assert [(o["op"], o.get("jobs")) for o in ops] == [("progress", 5), ("progress", 10)]
        assert StoreClient(kafka_config, store).registered(request_id) is None
    finally:
        release.set()
        thread.join(60)
    assert len(failures) == 1 and isinstance(failures[0], OSError)

    def jobs(count: int) -> Iterator[tuple[str, dict[str, int]]]:
        return ((f"job-{n}", {"n": n}) for n in range(count))

    # A source that changed under the retry is refused at the resume point, before anything is produced.
    with pytest.raises(JobsError, match="the source changed between attempts"):
        produce_jobs(kafka_config, tid, topic, request_id, jobs(20), store, chunk_jobs=5, rows_read=lambda: 7)

    retry = produce_jobs(kafka_config, tid, topic, request_id, jobs(20), store, chunk_jobs=5, chunk_seconds=60,
                         rows_read=lambda: 0)
    # Two chunks, then the seal: the iterator's end is known only after the second chunk committed.
    assert (retry.skipped, retry.produced, retry.total, retry.transactions) == (10, 10, 20, 3)
    assert _indices(kafka_config, topic, expected=20) == Counter(range(20))  # each job exactly once
    ops = _ops(kafka_config, store, request_id)
    assert [(o["op"], o.get("jobs"), o.get("total")) for o in ops] == [
        ("progress", 5, None), ("progress", 10, None), ("progress", 15, None), ("progress", 20, None),
        ("progress", 20, None), ("init", None, 20)]  # the total only in the last transaction, after every chunk
    again = produce_jobs(kafka_config, tid, topic, request_id, jobs(20), store, chunk_jobs=5)
    assert (again.already_registered, again.produced) == (True, 0)


def test_a_split_killed_mid_file_and_retried_leaves_exact_counts(kafka_config: dict[str, Any], processor_store: str,
                                                                  tmp_path: Path) -> None:
    store, topic, request_id = processor_store, unique("jobs"), unique("req")
    tid = f"kw-jobs.{request_id}"
    path = _contacts_csv(tmp_path / "contacts.csv", 400)
    with CsvJobSource(path, SCHEMA, rows_per_job=2) as source:
        total = sum(1 for _ in source.jobs())
    assert total == 195  # 400 rows, 10 of them bad, 2 rows a job
    ensure_topics(kafka_config, [TopicSpec(topic, 3)])
    ensure_store_topics(kafka_config, store, 3)
    handler = Handler(kafka_config, topic, store, request_id)
    handler.start()
    client = StoreClient(kafka_config, store)
    attempt = spawn(kafka_config, "split-csv", "--transactional-id", tid, "--topic", topic, "--request", request_id,
                    "--store", store, "--file", str(path), "--chunk-jobs", "5", "--sleep", "0.05",
                    log=tmp_path / "attempt.log")
    try:
        try:
            # SIGKILL once a few chunks were committed and handled, long before the 195th job (~10 s).
            wait_for(lambda: attempt.poll() is not None or sum(handler.handled.values()) >= 30, 90,
                     "30 committed jobs handled")
            assert attempt.poll() is None, f"the split ended early; see {tmp_path / 'attempt.log'}"
            attempt.send_signal(signal.SIGKILL)
            attempt.wait(10)
        finally:
            if attempt.poll() is None:
                attempt.kill()

        # Every committed job is handled and counted, yet the request stays pending: no total was sealed.
        def settled() -> dict[str, Any] | None:
            value = client.get(request_id)
            split = (value or {}).get("split") or {}
            return value if value and split.get("jobs") and value["completed"] == split["jobs"] \
                and len(handler.handled) == split["jobs"] else None

        before = wait_for(settled, 60, "the committed chunks handled and counted", interval=0.3)
        committed = before["split"]["jobs"]
        assert 30 <= committed < total and committed % 5 == 0
        assert (before["status"], before["total"]) == (PENDING, None)
        assert before["split"]["rows"] >= 2 * committed  # the rows read are shown while the split runs

        retry = split_csv(kafka_config, tid, topic, request_id, store, str(path))
        assert (retry.skipped, retry.produced, retry.total) == (committed, total - committed, total)
        final = client.wait(request_id, timeout=120)
        assert final is not None, "the request did not finish after the retry sealed its total"
        assert (final["status"], final["total"], final["completed"], final["failed"], final["rejected"]) == (
            SUCCEEDED, total, total, 0, 0)
        assert final["duplicates"] > 0  # reported twice, counted once
        assert final["split"] == {"jobs": total, "rows": 400}
        assert _indices(kafka_config, topic, expected=total) == Counter(range(total))  # no job produced twice
        wait_for(lambda: len(handler.handled) == total, 60, "every job handled")
        assert set(handler.handled) == set(range(total))
    finally:
        handler.stopping.set()
        handler.join(30)
        client.close()
    assert handler.error is None


def test_a_final_failure_after_committed_chunks_ends_the_request_aborted(
        kafka_config: dict[str, Any], processor_store: str, tmp_path: Path) -> None:
    store, topic, request_id = processor_store, unique("jobs"), unique("req")
    tid = f"kw-jobs.{request_id}"
    path = _contacts_csv(tmp_path / "contacts.csv", 60, malformed_at=45)
    with pytest.raises(MalformedCsvError, match="line 54 is not UTF-8"):
        split_csv(kafka_config, tid, topic, request_id, store, str(path))
    committed = _indices(kafka_config, topic)
    assert committed == Counter(range(20))  # four chunks of five jobs (two rows each) before line 54 (row 45)

    client = StoreClient(kafka_config, store)
    try:
        value = client.wait(request_id, timeout=60)  # terminal without any job reported
        assert value is not None and value["status"] == ABORTED and value["total"] is None
        assert "MalformedCsvError" in value["error"] and "jobs 0..19" in value["error"]
        assert "\\xff" not in value["error"] and "broken@" not in value["error"]  # names the line, not the content
        assert client.split_state(request_id).aborted is not None
    finally:
        client.close()
    # A retry (a cleared task) cannot revive it: it says so and produces nothing.
    with pytest.raises(RequestAbortedError, match="was aborted by an earlier attempt"):
        split_csv(kafka_config, tid, topic, request_id, store, str(path))
    assert _indices(kafka_config, topic) == committed
