"""The example specs run end to end: the DAG from the YAML, the worker side from the same YAML."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import pendulum
import pytest

from kafka_workflows.runner import build_units, prepare_processor_topics, select_specs
from tests.helpers.kafka import read_all, wait_for

pytestmark = [pytest.mark.airflow, pytest.mark.integration]
WORKFLOWS = Path(__file__).resolve().parents[2] / "dags" / "workflows"


def _rows(db: Path, table: str) -> list[str]:
    try:
        with sqlite3.connect(db) as conn:
            return [r[0] for r in conn.execute(f"SELECT order_id FROM {table} ORDER BY order_id")]
    except sqlite3.OperationalError:
        return []


def test_checkout_spec_runs_end_to_end(airflow_db: None, kafka_connection: str, registry_connection: str,
                                      examples_db: Path) -> None:
    """The shipped checkout, Avro end to end through the schema registry (issue 19)."""
    from dags.workflows import dag_checkout

    config = {"bootstrap.servers": kafka_connection}
    specs = select_specs(WORKFLOWS, ["checkout"])
    prepare_processor_topics(config, specs)
    units = build_units(config, specs)
    assert sorted(u.name for u in units) == ["checkout", "delivery", "inventory", "invoices"]
    threads = [threading.Thread(target=u.runnable.run, daemon=True) for u in units]
    for thread in threads:
        thread.start()
    try:
        run = dag_checkout.test(logical_date=pendulum.datetime(2026, 11, 27, tz="UTC"), run_conf={"orders": 25})
        assert run.state == "success"
        prefix = run.run_id.replace(":", "-").replace("+", "-")
        expected = [f"{prefix}-{n:05d}" for n in range(25)]
        for table in ("deliveries", "inventory_updates", "invoices"):
            wait_for(lambda table=table: _rows(examples_db, table) == expected, 60, f"{table} to hold the orders")
        # Both topics hold the registry's wire format (magic byte 0 and a schema id), never JSON.
        for topic in ("order-purchase-completed", "order-checkout-completed"):
            values = [m.value() for m in read_all(config, topic)]
            assert values and all(v[:1] == b"\x00" for v in values), topic
    finally:
        for unit in units:
            unit.runnable.stop()
        for thread in threads:
            thread.join(30)
