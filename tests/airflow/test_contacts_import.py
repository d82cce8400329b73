"""The contacts import (events aggregation) with dag.test(), the real broker, a worker and a store processor.

Each test has its own jobs topic, store and worker group (the test DAG takes them from the run's
conf); the worker and the store processor run on threads of this process.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pendulum
import pytest
from confluent_kafka.admin import AdminClient
from sqlalchemy import select

from kafka_workflows.retry.policy import BlockingRetry, RetryPolicy
from kafka_workflows.store import StoreClient, StoreProcessor, commands_topic, store_topic
from kafka_workflows.worker import Worker
from kafka_workflows_airflow.notifiers import DELIVERY_HEADER
from kafka_workflows_airflow.sensors.completion import AwaitCompletionSensor
from kafka_workflows_airflow.triggers.completion import (
    CLASSPATH,
    StoreCompletionTrigger,
    acquire_reader,
    active_readers,
    release_reader,
    stop_readers,
)
from kw_examples import contacts
from tests.airflow.dags.contacts_test_dags import await_only_test, contacts_import_test, split_only_test
from tests.helpers.aggregation import unique
from tests.helpers.contacts import REJECTED_COMPANY
from tests.helpers.kafka import read_all, wait_for
from tests.helpers.webhook import WebhookReceiver

pytestmark = [pytest.mark.airflow, pytest.mark.integration]
SECRET = "kw-test-secret-" + uuid.uuid4().hex[:6]
DAY = pendulum.datetime(2026, 11, 27, tz="UTC")


# -- fixtures ------------------------------------------------------------------------------
@pytest.fixture(autouse=True, scope="module")
def _no_reader_outlives_the_module() -> Iterator[None]:
    yield
    stop_readers()  # lingering shared readers would outlive the session's broker


@pytest.fixture
def names() -> dict[str, str]:
    return {"store": unique("contacts"), "topic": unique("contacts-jobs"), "group": unique("importers")}


@pytest.fixture
def webhook(monkeypatch: pytest.MonkeyPatch, _allowed_sources: None) -> Iterator[WebhookReceiver]:
    monkeypatch.setenv("AIRFLOW_CONN_KW_WEBHOOK", json.dumps({"conn_type": "http", "password": SECRET}))
    server = WebhookReceiver().start_in_thread().allow(monkeypatch)
    yield server
    server.stop()


class Pipeline:
    """The store processor and a worker (with --store) of one test, on threads."""

    def __init__(self, config: dict[str, Any], names: dict[str, str]) -> None:
        self.config, self.names = config, names
        self.threads: list[tuple[Any, threading.Thread]] = []

    def _start(self, runner: Any) -> None:
        ready = threading.Event()
        thread = threading.Thread(target=runner.run, kwargs={"ready": ready}, daemon=True)
        thread.start()
        assert ready.wait(60), f"{type(runner).__name__} did not start"
        self.threads.append((runner, thread))

    def start(self, handler: str = "kw_examples.contacts.import_jobs") -> Pipeline:
        processor = StoreProcessor(self.config, self.names["store"], commit_interval=0.2)
        self._start(processor)
        wait_for(lambda: processor.processor.stats.assigned, 60, "store partitions assigned")
        policy = RetryPolicy(blocking=BlockingRetry(initial=0.2, max=0.5))
        self.worker = Worker(self.config, [self.names["topic"]], self.names["group"], handler,
                             store=self.names["store"], policy=policy)
        self._start(self.worker)
        return self

    def stop(self) -> None:
        for runner, thread in reversed(self.threads):
            runner.stop()
            thread.join(30)
            assert not thread.is_alive(), f"{type(runner).__name__} did not stop"


@pytest.fixture
def pipeline(kafka_config: dict[str, Any], names: dict[str, str], examples_db: Path) -> Iterator[Pipeline]:
    running = Pipeline(kafka_config, names)
    yield running
    running.stop()


def _conf(names: dict[str, str], **values: Any) -> dict[str, Any]:
    """A full conf: in-process dag.test() runs share Param objects, so an omitted param keeps the last run's value."""
    return {"rows_per_job": 2, "on_bad_rows": "skip", "callback_url": None, "notify_email": None, **names, **values}


def _logical_date() -> datetime:
    return DAY + timedelta(minutes=uuid.uuid4().int % 100_000)


def _xcom(dag_id: str, run_id: str, task_id: str, key: str = "return_value") -> Any:
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    with create_session() as session:
        row = session.scalar(select(XComModel).where(
            XComModel.dag_id == dag_id, XComModel.run_id == run_id, XComModel.task_id == task_id,
            XComModel.key == key))
        if row is None:
            return None
        value = row.value
    if isinstance(value, str):  # stored as JSON text, or (a plain string) as the text itself
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


def _states(run: Any) -> dict[str, str]:
    from airflow.utils.session import create_session

    with create_session() as session:
        return {ti.task_id: str(ti.state) for ti in run.get_task_instances(session=session)}


def _topics(config: dict[str, Any]) -> set[str]:
    return set(AdminClient(config).list_topics(timeout=10).topics)


def _committed_messages(config: dict[str, Any], topic: str) -> int:
    return len(read_all(config, topic, timeout=10)) if topic in _topics(config) else 0


# -- the happy path and the notification -----------------------------------------------------
def test_a_csv_is_imported_by_the_workers_and_notified_once_signed(
        airflow_db: None, kafka_connection: str, kafka_config: dict[str, Any], names: dict[str, str],
        pipeline: Pipeline, webhook: WebhookReceiver, tmp_path: Path) -> None:
    generated = contacts.write_csv(tmp_path / "contacts.csv", 1500)
    pipeline.start()
    url = webhook.serve_file(generated.path)  # through HTTP, as a user's storage would serve it
    started = time.monotonic()
    run = contacts_import_test.test(logical_date=_logical_date(), run_conf=_conf(
        names, source=url, rows_per_job=100, callback_url=f"{webhook.url}/hooks/import"))
    assert run.state == "success", _states(run)
    duration = time.monotonic() - started

    request_id = f"contacts_import_test.split.{run.run_id}"
    jobs = -(-len(generated.valid) // 100)
    split = _xcom(run.dag_id, run.run_id, "split")
    assert split == {"request_id": request_id, "store": names["store"], "topic": names["topic"],
                     "total_jobs": jobs, "rows": 1500, "valid_rows": len(generated.valid),
                     "bad_rows": generated.bad, "bad_examples": split["bad_examples"], "already_registered": False,
                     "source": url}
    assert len(split["bad_examples"]) == 10 and split["bad_examples"][0]["row"] == generated.bad_rows[0]
    assert _xcom(run.dag_id, run.run_id, "split", "request_id") == request_id, "each entry has its own key too"

    assert {c["email"]: {k: c[k] for k in contacts.FIELDS} for c in contacts.contacts()} == generated.valid
    assert {c["request_id"] for c in contacts.contacts()} == {request_id}

    time.sleep(1)  # a duplicate delivery would show now
    [delivery] = webhook.accepted("/hooks/import")
    assert delivery.signed_with(SECRET), delivery.headers
    assert not delivery.signed_with("another secret")
    assert delivery.header(DELIVERY_HEADER) == request_id
    body = delivery.json
    assert {k: body[k] for k in ("request_id", "status", "total", "completed", "failed", "failed_jobs", "rows",
                                 "valid_rows", "bad_rows", "dag_id", "run_id")} == {
        "request_id": request_id, "status": "succeeded", "total": jobs, "completed": jobs, "failed": 0,
        "failed_jobs": [], "rows": 1500, "valid_rows": len(generated.valid), "bad_rows": generated.bad,
        "dag_id": "contacts_import_test", "run_id": run.run_id}
    assert _xcom(run.dag_id, run.run_id, "await")["status"] == "succeeded"
    assert _xcom(run.dag_id, run.run_id, "notify")["request_id"] == request_id
    assert pipeline.worker.stats.handled == jobs, f"one handling per job (took {duration:.1f}s)"


def test_a_dead_lettered_job_ends_completed_with_failures_and_the_notification_names_it(
        airflow_db: None, kafka_connection: str, kafka_config: dict[str, Any], names: dict[str, str],
        pipeline: Pipeline, webhook: WebhookReceiver, tmp_path: Path) -> None:
    path = tmp_path / "some-rejected.csv"
    rows = [f"u{i}@example.com,U{i},\"{REJECTED_COMPANY if i == 5 else 'Acme, Inc.'}\"" for i in range(10)]
    path.write_text("email,first_name,company\r\n" + "\r\n".join(rows) + "\r\n", encoding="utf-8")
    pipeline.start(handler="tests.helpers.contacts.import_or_reject")
    run = contacts_import_test.test(logical_date=_logical_date(), run_conf=_conf(
        names, source=str(path), callback_url=f"{webhook.url}/hooks/import"))
    assert run.state == "success", _states(run)

    result = _xcom(run.dag_id, run.run_id, "await")
    assert (result["status"], result["total"], result["completed"], result["failed"]) == (
        "completed_with_failures", 5, 4, 1)
    [delivery] = webhook.accepted()
    assert delivery.signed_with(SECRET)
    body = delivery.json
    assert body["status"] == "completed_with_failures" and body["failed_jobs"] == [2]
    assert "NonRetryableError" in body["failure_reasons"]["2"] and REJECTED_COMPANY in body["failure_reasons"]["2"]
    dlq = read_all(kafka_config, f"{names['topic']}.{names['group']}.dlq", expected=1)
    assert [dict(m.headers())["kw-job-index"] for m in dlq] == [b"2"]
    assert sorted(c["email"] for c in contacts.contacts()) == sorted(
        f"u{i}@example.com" for i in range(10) if i not in (4, 5))


# -- bad input: a clear error and nothing produced -----------------------------------------
def test_a_conf_without_source_is_refused(airflow_db: None, kafka_connection: str, kafka_config: dict[str, Any],
                                          names: dict[str, str]) -> None:
    from airflow.sdk.exceptions import AirflowFailException, ParamValidationError

    with pytest.raises(ParamValidationError, match="source"):
        contacts_import_test.test(logical_date=_logical_date(), run_conf=_conf(names))
    run = split_only_test.test(logical_date=_logical_date(), run_conf=names)
    assert run.state == "failed"
    op = split_only_test.get_task("split")
    op.source = None
    with pytest.raises(AirflowFailException, match=r"split: no CSV `source` to split: trigger the DAG with a conf"):
        op._source()
    assert not {names["topic"], store_topic(names["store"]), commands_topic(names["store"])} & _topics(kafka_config)


@pytest.mark.parametrize("case", ["missing column", "no such file", "http 404", "empty file", "bad rows fail"])
def test_bad_input_fails_the_split_and_produces_nothing(
        case: str, airflow_db: None, kafka_connection: str, kafka_config: dict[str, Any], names: dict[str, str],
        webhook: WebhookReceiver, tmp_path: Path) -> None:
    path = tmp_path / "input.csv"
    conf = _conf(names, source=str(path))
    if case == "missing column":
        path.write_text("email,last_name\r\na@b.io,B\r\n")
    elif case == "http 404":
        conf["source"] = f"{webhook.url}/files/not-there.csv"
    elif case == "empty file":
        path.write_bytes(b"\xef\xbb\xbf")
    elif case == "bad rows fail":
        contacts.write_csv(path, 120)
        conf["on_bad_rows"] = "fail"
    run = contacts_import_test.test(logical_date=_logical_date(), run_conf=conf)
    assert run.state == "failed"
    states = _states(run)
    assert states["split"] == "failed" and states["notify"] != "success", states
    assert _xcom(run.dag_id, run.run_id, "split") is None
    if case == "bad rows fail":
        # The rows were streamed into a transaction that was then aborted: read_committed sees nothing.
        assert _committed_messages(kafka_config, names["topic"]) == 0
        assert _committed_messages(kafka_config, commands_topic(names["store"])) == 0
    else:  # refused before any topic or transaction existed
        assert not {names["topic"], commands_topic(names["store"])} & _topics(kafka_config)


# -- retries -------------------------------------------------------------------------------
def test_a_retried_split_whose_transaction_committed_produces_nothing(
        airflow_db: None, kafka_connection: str, kafka_config: dict[str, Any], names: dict[str, str],
        tmp_path: Path) -> None:
    generated = contacts.write_csv(tmp_path / "contacts.csv", 300)
    conf = _conf(names, source=str(generated.path), rows_per_job=50)
    when = _logical_date()
    first = contacts_import_test.test(logical_date=when, run_after=when, run_conf=conf,
                                      mark_success_pattern="await|await_assets|notify")
    assert first.state == "success"
    jobs = -(-len(generated.valid) // 50)
    assert _committed_messages(kafka_config, names["topic"]) == jobs
    first_xcom = _xcom(first.dag_id, first.run_id, "split")
    assert first_xcom["already_registered"] is False and first_xcom["total_jobs"] == jobs

    generated.path.unlink()  # a retry must not even need the source again
    again = contacts_import_test.test(logical_date=when, run_after=when, run_conf=conf,
                                      mark_success_pattern="await|await_assets|notify")
    assert again.state == "success" and again.run_id == first.run_id, "the same task instance, run again"
    second_xcom = _xcom(again.dag_id, again.run_id, "split")
    assert second_xcom == {**first_xcom, "already_registered": True}
    assert _committed_messages(kafka_config, names["topic"]) == jobs, "no job produced twice"
    commands = [json.loads(m.value()) for m in read_all(kafka_config, commands_topic(names["store"]))]
    inits = [c for c in commands if c["op"] == "init"]  # the rest is the pipelined split's progress
    assert len(inits) == 1 and inits[0]["total"] == jobs and commands[-1] == inits[0]
    assert {c["op"] for c in commands} == {"init", "progress"}


# -- the trigger and the sensor ------------------------------------------------------------
def test_the_trigger_serializes_its_importable_classpath() -> None:
    from airflow.sdk._shared.module_loading import import_string

    trigger = StoreCompletionTrigger(request_id="r1", store="s1", deadline=12.5)
    classpath, kwargs = trigger.serialize()
    assert classpath == CLASSPATH == "kafka_workflows_airflow.triggers.completion.StoreCompletionTrigger"
    rebuilt = import_string(classpath)(**kwargs)
    assert rebuilt.serialize() == (classpath, kwargs)
    assert kwargs == {"request_id": "r1", "store": "s1", "kafka_config_id": "kafka_default", "deadline": 12.5,
                      "progress_log_interval": 30.0, "linger": 60.0, "end_from_trigger": False,
                      "fail_on_job_failures": False, "traceparent": None, "tracestate": None, "started": None}


class _StoreOnThread:
    def __init__(self, config: dict[str, Any], store: str) -> None:
        self.processor = StoreProcessor(config, store, commit_interval=0.2)
        ready = threading.Event()
        self.thread = threading.Thread(target=self.processor.run, kwargs={"ready": ready}, daemon=True)
        self.thread.start()
        assert ready.wait(60)
        wait_for(lambda: self.processor.processor.stats.assigned, 60, "store partitions assigned")

    def stop(self) -> None:
        self.processor.stop()
        self.thread.join(30)


def _run_triggers(*triggers: StoreCompletionTrigger, during: Callable[[], None] | None = None
                  ) -> list[dict[str, Any]]:
    async def first_event(trigger: StoreCompletionTrigger) -> dict[str, Any]:
        async for event in trigger.run():
            return event.payload  # type: ignore[no-any-return]
        raise AssertionError("no event")

    async def main() -> list[dict[str, Any]]:
        tasks = [asyncio.create_task(first_event(t)) for t in triggers]
        if during is not None:
            await asyncio.to_thread(during)
        return list(await asyncio.gather(*tasks))

    return asyncio.run(main())


def test_triggers_of_one_store_share_one_reader_and_wake_on_completion(
        airflow_db: None, kafka_connection: str, kafka_config: dict[str, Any], names: dict[str, str]) -> None:
    store = names["store"]
    processor = _StoreOnThread(kafka_config, store)
    client = StoreClient(kafka_config, store)
    try:
        client.init("done-before", 1)
        client.complete("done-before", 0)
        wait_for(lambda: (client.get("done-before") or {}).get("status") == "succeeded", 30, "first request done")
        for rid in ("a", "b"):
            client.init(rid, 3)
        deadline = time.time() + 60
        triggers = [StoreCompletionTrigger(request_id=rid, store=store, deadline=deadline, linger=1.0)
                    for rid in ("a", "b", "done-before")]
        shared: list[tuple[int, int]] = []

        def complete_while_waiting() -> None:
            wait_for(lambda: any(r.store == store and r.refs == 2 for r in active_readers()), 30,
                     "both waiting triggers on one reader")
            shared.extend((len([r for r in active_readers() if r.store == store]), r.refs)
                          for r in active_readers() if r.store == store)
            for job in range(3):
                client.complete("a", job)
            client.complete("b", 0)
            client.fail("b", 1, "bad row")
            client.complete("b", 1)  # the first outcome wins
            client.complete("b", 2)

        a, b, before = _run_triggers(*triggers, during=complete_while_waiting)
    finally:
        processor.stop()
    assert shared == [(1, 2)], "one reader for the store, two waiters on it"
    assert (a["status"], a["value"]["status"], a["value"]["completed"]) == ("done", "succeeded", 3)
    assert (b["value"]["status"], b["value"]["completed"], b["value"]["failed"]) == ("completed_with_failures", 2, 1)
    assert b["value"]["failure_reasons"] == {"1": "bad row"} and b["value"]["failed_jobs"] == [[1, 1]]
    assert before["value"]["status"] == "succeeded" and before["value"]["request_id"] == "done-before"
    sensor = AwaitCompletionSensor(task_id="await", request_id="b", store=store)
    assert sensor.execute_complete({}, b) == b["value"]  # type: ignore[arg-type]
    wait_for(lambda: not [r for r in active_readers() if r.store == store], 15, "the idle reader to stop")


def test_a_timeout_reports_the_progress_reached(
        airflow_db: None, kafka_connection: str, kafka_config: dict[str, Any], names: dict[str, str]) -> None:
    from airflow.sdk.exceptions import AirflowSensorTimeout

    store = names["store"]
    processor = _StoreOnThread(kafka_config, store)
    client = StoreClient(kafka_config, store)
    try:
        client.init("slow", 200)
        for job in range(150):
            client.complete("slow", job, flush=False)
        for job in range(150, 153):
            client.fail("slow", job, "boom", flush=False)
        client.flush()
        wait_for(lambda: (client.get("slow") or {}).get("completed") == 150, 30, "progress applied")
        [event] = _run_triggers(StoreCompletionTrigger(request_id="slow", store=store, deadline=time.time() + 2))
        assert event["status"] == "timeout"
        assert {k: event["progress"][k] for k in ("status", "total", "completed", "failed")} == {
            "status": "running", "total": 200, "completed": 150, "failed": 3}
        sensor = AwaitCompletionSensor(task_id="await", request_id="slow", store=store, timeout=2)
        with pytest.raises(AirflowSensorTimeout, match=r"request slow did not finish within 2s: completed 150/200, "
                                                       r"failed 3"):
            sensor.execute_complete({}, event)  # type: ignore[arg-type]

        # Through a DAG run: the deferred sensor times out and the task fails.
        run = await_only_test.test(logical_date=_logical_date(), run_conf={"request_id": "slow", "store": store})
        assert run.state == "failed" and _states(run)["await"] == "failed"
    finally:
        processor.stop()


def test_a_reader_for_a_missing_store_topic_waits_and_times_out_with_a_diagnosis(
        airflow_db: None, kafka_connection: str, names: dict[str, str]) -> None:
    [event] = _run_triggers(StoreCompletionTrigger(request_id="r", store=names["store"], deadline=time.time() + 2,
                                                   linger=0.5))
    assert event["status"] == "timeout" and event["progress"] is None
    assert "still reading its history" in event["reader"]
    sensor = AwaitCompletionSensor(task_id="await", request_id="r", store=names["store"], timeout=2)
    from airflow.sdk.exceptions import AirflowSensorTimeout

    with pytest.raises(AirflowSensorTimeout, match=r"the store has no value for it .* is `kafka-workflows "
                                                   r"store-processor --store"):
        sensor.execute_complete({}, event)  # type: ignore[arg-type]


def test_acquire_and_release_count_references(kafka_config: dict[str, Any], names: dict[str, str]) -> None:
    one = acquire_reader(kafka_config, names["store"], linger=0.2)
    two = acquire_reader(dict(kafka_config), names["store"], linger=0.2)
    assert one is two and one.refs == 2
    release_reader(one)
    assert one.refs == 1 and one in active_readers()
    release_reader(two)
    wait_for(lambda: one not in active_readers(), 10, "the idle reader to retire")
    three = acquire_reader(kafka_config, names["store"], linger=0.2)
    assert three is not one, "a retired reader is replaced, not revived"
    release_reader(three)


def test_a_reader_that_cannot_start_fails_the_wait_with_its_error(
        airflow_db: None, names: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    from airflow.sdk.exceptions import AirflowException

    monkeypatch.setenv("AIRFLOW_CONN_KAFKA_BROKEN", json.dumps(
        {"conn_type": "kafka", "extra": {"bootstrap.servers": "127.0.0.1:1", "no.such.property": "1"}}))
    [event] = _run_triggers(StoreCompletionTrigger(request_id="r", store=names["store"], kafka_config_id="kafka_broken",
                                                   deadline=time.time() + 30))
    assert event["status"] == "error" and "no.such.property" in event["message"]
    sensor = AwaitCompletionSensor(task_id="await", request_id="r", store=names["store"])
    with pytest.raises(AirflowException, match=r"waiting for request r of store .* failed: reading store .* "
                                               r"failed: .*No such configuration property"):
        sensor.execute_complete({}, event)  # type: ignore[arg-type]
