"""kafka-workflows as an Airflow citizen, against the session's real `airflow standalone` and broker:
split, produce and await task instances link to their Kafka pages (operator extra links, read through
Airflow's REST API and followed in a real Chromium), and a finished request is an Asset event (recorded by
`await_assets` after the await ended in the triggerer) that starts the downstream DAG `contacts_imported`
once, also when its await task ran twice.

One small contacts import (1,000 rows, 10 jobs) runs to completion for the whole module. Its await
task is cleared while deferred (a second try, as a retry or an operator's clear would make), and then
the triggerer is killed (SIGKILL) and restarted while that try is deferred, before any job is imported.

Kafka in: records of topic refund-requests start runs of `refund_requested` (its `trigger:`), exactly
one per valid record, its record as conf, also when the triggerer is killed and restarted mid-stream.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import airflow_client.client as af
import pytest
from airflow_client.client.api.asset_api import AssetApi
from airflow_client.client.api.dag_run_api import DagRunApi
from airflow_client.client.api.extra_links_api import ExtraLinksApi
from airflow_client.client.api.task_instance_api import TaskInstanceApi
from airflow_client.client.api.x_com_api import XComApi
from airflow_client.client.exceptions import ServiceException
from airflow_client.client.models.clear_task_instances_body import ClearTaskInstancesBody
from airflow_client.client.models.clear_task_instances_body_task_ids_inner import ClearTaskInstancesBodyTaskIdsInner
from airflow_client.client.models.trigger_dag_run_post_body import TriggerDAGRunPostBody
from playwright.sync_api import Page, expect

from kw_examples import contacts
from stack.airflow import AirflowStandalone
from tests.e2e.test_contacts_import import Processes
from tests.e2e.test_ui_browser import _dag_known, browser, page, session  # noqa: F401  (fixtures)
from tests.helpers.kafka import wait_for

pytestmark = [pytest.mark.airflow, pytest.mark.integration]

IMPORT = "contacts_import"
UI = "/kafka-workflows/ui/workflows"


@pytest.fixture(scope="module")
def client(standalone: AirflowStandalone) -> Iterator[af.ApiClient]:
    with af.ApiClient(af.Configuration(host=standalone.url, access_token=standalone.token())) as api:
        yield api


def _state(value: Any) -> str | None:
    return None if value is None else str(getattr(value, "value", value))


def run_state(client: af.ApiClient, dag_id: str, run_id: str) -> str | None:
    return _state(DagRunApi(client).get_dag_run(dag_id, run_id).state)


@pytest.fixture(scope="module")
def finished_import(standalone: AirflowStandalone, client: af.ApiClient,
                    tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The run id of one contacts import that ran to success (a store processor and a worker of its own)."""
    from airflow_client.client.api.dag_api import DAGApi

    logs = tmp_path_factory.mktemp("airflow-native")
    generated = contacts.write_csv(standalone.home / "imports" / f"native-{logs.name}.csv", 1_000, bad_every=0,
                                   missing_every=0)
    # Its worker imports into a database of its own: the session standalone's is test_contacts_import's,
    # which counts every contact there.
    running = Processes({**standalone.env(), "KW_EXAMPLES_DB": str(logs / "examples.sqlite")}, logs)
    try:
        running.start("store-processor", "store-processor", "--store", contacts.STORE)
        wait_for(lambda: _dag_known(DAGApi(client), IMPORT), 180, "contacts_import to be parsed", 2)
        run = DagRunApi(client).trigger_dag_run(IMPORT, TriggerDAGRunPostBody(
            logical_date=None, conf={"source": str(generated.path), "rows_per_job": 100}))
        tis = TaskInstanceApi(client)

        def await_deferred(try_number: int) -> bool:
            assert run_state(client, IMPORT, run.dag_run_id) != "failed", "the import failed before await deferred"
            try:
                ti = tis.get_task_instance(IMPORT, run.dag_run_id, "await")
            except af.exceptions.NotFoundException:
                return False
            return _state(ti.state) == "deferred" and ti.try_number >= try_number

        wait_for(lambda: await_deferred(1), 300, "await to defer", 1, alive=standalone.ensure_running)
        tis.post_clear_task_instances(IMPORT, ClearTaskInstancesBody(
            dag_run_id=run.dag_run_id, task_ids=[ClearTaskInstancesBodyTaskIdsInner("await")], dry_run=False,
            only_failed=False, include_downstream=False, include_upstream=False))
        wait_for(lambda: await_deferred(2), 300, "await's second try to defer", 1, alive=standalone.ensure_running)
        # The triggerer dies while the await is deferred; the restarted one takes its trigger over.
        standalone.restart_triggerer()
        running.start("worker", "worker", "--topic", contacts.JOBS_TOPIC, "--group", contacts.WORKER_GROUP,
                      "--handler", "kw_examples.contacts.import_jobs", "--store", contacts.STORE)
        wait_for(lambda: run_state(client, IMPORT, run.dag_run_id) in ("success", "failed"), 300,
                 "the contacts import to finish", 1, alive=standalone.ensure_running)
        assert run_state(client, IMPORT, run.dag_run_id) == "success"
        running.check_alive()
        yield run.dag_run_id
    finally:
        running.stop()


def expected_links(dag_id: str, run_id: str, group: str) -> dict[str, str]:
    return {"Kafka progress": f"{UI}/{dag_id}/runs/{quote(run_id, safe='')}",
            "Kafka group": f"{UI}/{dag_id}/groups/{group}",
            "Dead letters": f"{UI}/{dag_id}/dead-letters"}


def test_split_and_await_task_instances_link_to_the_run_progress_the_group_and_the_dead_letters(
        client: af.ApiClient, finished_import: str) -> None:
    for task in ("split", "await"):
        links = ExtraLinksApi(client).get_extra_links(IMPORT, finished_import, task).extra_links
        assert links == expected_links(IMPORT, finished_import, contacts.WORKER_GROUP), (task, links)
    assert ExtraLinksApi(client).get_extra_links(IMPORT, finished_import, "notify").extra_links == {}


def test_a_produce_task_instance_links_to_its_workers_group(standalone: AirflowStandalone,
                                                             client: af.ApiClient) -> None:
    dag_id, task = "subscription_renewals", "produce_renewal_requests"
    run = DagRunApi(client).trigger_dag_run(dag_id, TriggerDAGRunPostBody(logical_date=None,
                                                                         conf={"day": "2026-01-01"}))

    def produced() -> bool:
        try:
            state = _state(TaskInstanceApi(client).get_task_instance(dag_id, run.dag_run_id, task).state)
        except af.exceptions.NotFoundException:
            return False
        assert state not in ("failed", "upstream_failed"), state
        return state == "success"

    wait_for(produced, 240, "the produce task to succeed", 1, alive=standalone.ensure_running)
    links = ExtraLinksApi(client).get_extra_links(dag_id, run.dag_run_id, task).extra_links
    assert links == expected_links(dag_id, run.dag_run_id, "renewals")


def test_the_await_task_page_shows_the_links_and_kafka_progress_opens_the_runs_progress(
        page: Page, standalone: AirflowStandalone, finished_import: str) -> None:  # noqa: F811
    page.goto(f"{standalone.url}/dags/{IMPORT}/runs/{finished_import}/tasks/await/details")
    for name, href in expected_links(IMPORT, finished_import, contacts.WORKER_GROUP).items():
        expect(page.get_by_role("link", name=name, exact=True)).to_have_attribute("href", href)
    page.get_by_role("link", name="Kafka progress", exact=True).click()
    page.wait_for_url(f"**{UI}/{IMPORT}/runs/**")
    expect(page.locator("#kw-status")).to_have_attribute("data-status", "succeeded")
    expect(page.locator("#kw-status")).to_have_attribute("data-percent", "100")
    page.go_back()
    page.get_by_role("link", name="Kafka group", exact=True).click()
    page.wait_for_url(f"**{UI}/{IMPORT}/groups/{contacts.WORKER_GROUP}")
    expect(page.locator("#kw-partitions")).to_be_visible()


# -- assets out ---------------------------------------------------------------------------------------------

ASSET = "kafka-workflows://contacts/imported"
DOWNSTREAM = "contacts_imported"


def test_a_finished_request_is_one_asset_event_that_starts_the_downstream_dag_once(
        client: af.ApiClient, finished_import: str) -> None:
    """Also when its await task ran twice and the triggerer was killed and restarted while it was deferred."""
    assert TaskInstanceApi(client).get_task_instance(IMPORT, finished_import, "await").try_number >= 2
    request_id = XComApi(client).get_xcom_entry(IMPORT, "split", finished_import, "request_id",
                                                deserialize=True).actual_instance.value
    events = AssetApi(client).get_asset_events(source_dag_id=IMPORT, source_run_id=finished_import).asset_events
    # `await` ends in the triggerer (end_from_trigger), which cannot record asset events: `await_assets` does.
    assert [(e.uri, e.source_task_id) for e in events] == [(ASSET, "await_assets")], events
    summary = {"request_id": request_id, "store": contacts.STORE, "status": "succeeded", "total": 10,
               "completed": 10, "failed": 0}
    assert events[0].extra == summary

    def downstream_runs() -> list[Any]:
        [event] = AssetApi(client).get_asset_events(source_dag_id=IMPORT, source_run_id=finished_import).asset_events
        return list(event.created_dagruns)

    [created] = wait_for(downstream_runs, 180, "the asset event to start contacts_imported", 1)
    assert created.dag_id == DOWNSTREAM
    wait_for(lambda: run_state(client, DOWNSTREAM, created.run_id) in ("success", "failed"), 180,
             "contacts_imported to finish", 1)
    assert run_state(client, DOWNSTREAM, created.run_id) == "success"
    seen = XComApi(client).get_xcom_entry(DOWNSTREAM, "summarize", created.run_id, "return_value",
                                          deserialize=True).actual_instance.value
    assert [s for s in seen if s["request_id"] == request_id] == [summary]
    # No other downstream run saw this request.
    others = [r.dag_run_id for r in DagRunApi(client).get_dag_runs(DOWNSTREAM, limit=100).dag_runs
              if r.dag_run_id != created.run_id and run_state(client, DOWNSTREAM, r.dag_run_id) == "success"]
    for run_id in others:
        value = XComApi(client).get_xcom_entry(DOWNSTREAM, "summarize", run_id, "return_value",
                                               deserialize=True).actual_instance.value
        assert request_id not in [s.get("request_id") for s in value], run_id


# -- Kafka in -------------------------------------------------------------------------------------------------

REFUNDS = "refund_requested"
REFUND_TOPIC = "refund-requests"


def _refund_runs(client: af.ApiClient) -> dict[str, dict[str, Any]]:
    runs = DagRunApi(client).get_dag_runs(REFUNDS, limit=1000).dag_runs
    return {r.dag_run_id: dict(r.conf or {}) for r in runs}


def _produce(config: dict[str, Any], confs: list[dict[str, Any]] | list[bytes],
             partition: int | None = None) -> dict[str, Any]:
    """Produce records (in order, to one partition when given): the run id each may start -> its value
    (the conf, for a dict)."""
    import json

    from confluent_kafka import Producer

    from kafka_workflows.kafka_in import run_id

    producer = Producer({**config, "enable.idempotence": True})
    delivered: dict[str, Any] = {}

    def on_delivery(err: Any, msg: Any) -> None:
        assert err is None, err
        delivered[run_id(msg.topic(), msg.partition(), msg.offset())] = msg.value()

    for index, conf in enumerate(confs):
        kwargs = {"partition": partition} if partition is not None else {"key": f"k{index}".encode()}
        producer.produce(REFUND_TOPIC, conf if isinstance(conf, bytes) else json.dumps(conf).encode(),
                         on_delivery=on_delivery, **kwargs)
    assert producer.flush(30) == 0
    return {rid: value if isinstance(confs[0], bytes) else json.loads(value) for rid, value in delivered.items()}


def test_kafka_records_start_exactly_one_run_each_with_the_record_as_conf_across_a_triggerer_kill(
        standalone: AirflowStandalone, client: af.ApiClient, kafka_config: dict[str, Any]) -> None:
    import json

    from airflow_client.client.api.dag_api import DAGApi

    from kafka_workflows.kafka.admin import TopicSpec, ensure_topics

    ensure_topics(kafka_config, [TopicSpec(REFUND_TOPIC, 3)])
    for dag_id in (REFUNDS, f"{REFUNDS}.kafka_in"):
        wait_for(lambda d=dag_id: _dag_known(DAGApi(client), d), 180, f"{dag_id} to be parsed", 2)
    expected: dict[str, dict[str, Any]] = {}

    def refund(n: int) -> dict[str, Any]:
        return {"type": "refund.requested", "order_id": f"o-{n}", "amount": n + 0.5, "reason": None}

    # Records that start nothing, ahead of valid ones in the same partition: none may stop the trigger.
    passed_over = [json.dumps({"type": "refund.approved", "order_id": "x", "amount": 1}).encode()]
    refused = [b"{not json", b"[1, 2]", b"\"a string\"", json.dumps({"type": "refund.requested"}).encode(),
               json.dumps({"type": "refund.requested", "order_id": "o", "amount": -1}).encode(),
               json.dumps({"type": "refund.requested", "order_id": "o", "amount": 1,
                           "pad": "x" * 70_000}).encode()]
    first = [refund(n) for n in range(4)]
    _produce(kafka_config, [*passed_over, *refused], partition=0)
    expected.update(_produce(kafka_config, first[:2], partition=0))
    expected.update(_produce(kafka_config, first[2:]))
    wait_for(lambda: len(_refund_runs(client)) >= len(expected), 300, f"{len(expected)} refund runs", 1,
             alive=standalone.ensure_running)
    assert _refund_runs(client) == expected
    assert sorted(c["order_id"] for c in expected.values()) == sorted(f"o-{n}" for n in range(len(expected)))

    # Mid-stream: records produced, the triggerer killed as soon as the first of them is an asset event
    # (the others being read, recorded or committed), more records produced while it is down.
    [asset] = AssetApi(client).get_assets(uri_pattern=f"kafka-workflows://{REFUNDS}/in").assets

    def recorded() -> int:
        return len(AssetApi(client).get_asset_events(asset_id=asset.id, limit=1000).asset_events)

    def recorded_while_runs_start() -> int | None:
        # Airflow 3.3's GET /assets/events answers 500 while a run an event created is queued, not started
        # (AssetEventResponse: created_dagruns[].start_date must be a datetime, it is None): ask again.
        try:
            return recorded()
        except ServiceException:
            return None

    before = recorded()
    second = [refund(n) for n in range(4, 14)]
    expected.update(_produce(kafka_config, second[:6]))
    wait_for(lambda: (recorded_while_runs_start() or before) > before, 120, "an asset event of the second batch",
             0.05)
    standalone.restart_triggerer()
    expected.update(_produce(kafka_config, second[6:]))
    wait_for(lambda: len(_refund_runs(client)) >= len(expected), 300, f"{len(expected)} refund runs", 1,
             alive=standalone.ensure_running)

    # Settled: every asset event the trigger recorded (a record read again after the kill may have two)
    # was read by a dispatch that finished.

    def settled() -> list[Any]:
        runs = DagRunApi(client).get_dag_runs(f"{REFUNDS}.kafka_in", limit=1000).dag_runs
        if not runs or not all(_state(r.state) in ("success", "failed") for r in runs):
            return []
        read = max(TaskInstanceApi(client).get_task_instance(f"{REFUNDS}.kafka_in", r.dag_run_id,
                                                             "runs_to_start").start_date for r in runs)
        events = AssetApi(client).get_asset_events(asset_id=asset.id, limit=1000).asset_events
        return events if all(e.created_dagruns or e.timestamp < read for e in events) else []

    events = wait_for(settled, 300, "the kafka_in dispatches to settle", 1, alive=standalone.ensure_running)
    assert _refund_runs(client) == expected
    assert sorted(c["order_id"] for c in expected.values()) == sorted(f"o-{n}" for n in range(len(expected)))
    assert {e.extra["payload"]["run_id"] for e in events} == set(expected)
    print(f"{len(expected)} records, {len(events)} asset events (a record read again after the kill has two)")
    dispatches = DagRunApi(client).get_dag_runs(f"{REFUNDS}.kafka_in", limit=1000).dag_runs
    assert {_state(r.state) for r in dispatches} == {"success"}
