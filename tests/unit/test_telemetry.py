"""One registry per process: units rebuilt by their supervisor, and several units of one kind,
share the metric families and health entries instead of registering them again."""

from __future__ import annotations

from functools import partial

from kafka_workflows.eos import TransactionalProcessor
from kafka_workflows.observe import Telemetry, UnitHealth, broker_up
from kafka_workflows.store import StoreProcessor
from kafka_workflows.supervise import Supervised
from kafka_workflows.worker import Worker

CONFIG = {"bootstrap.servers": "127.0.0.1:9"}


def test_units_rebuilt_by_the_supervisor_share_the_process_registry_without_duplicates() -> None:
    telemetry = Telemetry()
    units = [
        Supervised("w", partial(Worker, CONFIG, ["t"], "g1", lambda m: None, telemetry=telemetry, concurrency=4)),
        Supervised("w2", partial(Worker, CONFIG, ["t"], "g2", lambda m: None, telemetry=telemetry)),
        Supervised("p", partial(TransactionalProcessor, CONFIG, ["t"], "p1", lambda m: (), telemetry=telemetry)),
        Supervised("s", partial(StoreProcessor, CONFIG, "s1", telemetry=telemetry)),
        Supervised("s2", partial(StoreProcessor, CONFIG, "s2", telemetry=telemetry)),
    ]
    first = [u.current for u in units]
    for unit in units:  # what the supervisor does after a failure: a fresh instance from the factory
        unit.current = unit.factory()
    assert all(a is not b for a, b in zip(first, (u.current for u in units), strict=True))
    assert units[0].current.health is first[0].health
    assert units[3].current.processor.health is first[3].processor.health
    assert sorted(telemetry.units) == ["processor p1", "store s1", "store s2", "worker g1", "worker g2"]
    units[0].current.metrics.concurrency_gauges()[0].set(3)
    assert telemetry.registry.get_sample_value("kw_worker_in_flight_messages", {"group": "g1"}) == 3
    assert telemetry.registry.get_sample_value("kw_store_requests", {"store": "s2", "status": "pending"}) == 0


def test_probe_states() -> None:
    now = [100.0]
    health = UnitHealth("u", clock=lambda: now[0])
    assert health.state(10)["alive"] and not health.state(10)["ready"]  # starting: alive, not joined
    health.joined = True
    health.on_stats({"brokers": {"b": {"source": "learned", "state": "UP"}}})
    assert health.state(10)["ready"]
    health.on_stats({"brokers": {"b": {"source": "learned", "state": "DOWN"},
                                 "i": {"source": "internal", "state": "UP"}}})
    assert health.state(10)["not_ready"] == ["no broker reachable"] and health.state(10)["alive"]
    now[0] += 11
    assert not health.state(10)["alive"]
    assert not broker_up({})
