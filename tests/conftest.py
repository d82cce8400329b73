"""Shared fixtures: one real Kafka broker per test session, on a free loopback port, a
3-node KRaft cluster (`cluster`) for the tests that take brokers away, a real PostgreSQL
server (`postgres`; `examples_postgres`: a fresh database as an Airflow connection URI), and a real
schema registry (`schema_registry`: Apicurio Registry, Confluent-compatible API).

A missing Java/Maven/broker/Postgres makes these fixtures fail loudly: there is no skip.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
STATE = REPO / ".state" / "tests"
STATE.mkdir(parents=True, exist_ok=True)

# Airflow reads its home at import time: point it at a throwaway folder before anything imports it.
os.environ.setdefault("AIRFLOW_HOME", tempfile.mkdtemp(prefix="airflow-home-", dir=STATE))
os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
os.environ.setdefault("AIRFLOW__CORE__DAGS_FOLDER", str(REPO / "dags"))
os.environ.setdefault("AIRFLOW__CORE__PLUGINS_FOLDER", str(REPO / "plugins"))
# dag.test() runs DAGs from bundles: the product's dags/ plus the DAGs the tests declare.
os.environ.setdefault("AIRFLOW__DAG_PROCESSOR__DAG_BUNDLE_CONFIG_LIST", json.dumps([
    {"name": name, "classpath": "airflow.dag_processing.bundles.local.LocalDagBundle", "kwargs": {"path": str(path)}}
    for name, path in (("dags-folder", REPO / "dags"), ("test-dags", REPO / "tests" / "airflow" / "dags"))
]))

from kafka_workflows.store.follower import stop_readers  # noqa: E402
from stack.broker import Broker, free_port  # noqa: E402
from stack.cluster import Cluster  # noqa: E402
from stack.postgres import Postgres, scratch_server  # noqa: E402
from stack.registry import SchemaRegistry  # noqa: E402
from tests.helpers.webhook import WebhookReceiver  # noqa: E402

# The session's airflow standalone, shared by tests/e2e and tests/security.
pytest_plugins = ["tests.helpers.standalone", "tests.helpers.early_release", "tests.helpers.spans"]


def _terminated(signum: int, _frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def pytest_configure(config: pytest.Config) -> None:
    """SIGTERM ends the run the way Ctrl-C does: pytest stops, the session's fixtures stop what they
    started (and stack/reaper.py whatever they could not)."""
    signal.signal(signal.SIGTERM, _terminated)


# `./dev test` runs two pytest-xdist workers with --dist loadgroup. The tests of one lane share costly
# session fixtures (the standalone, the 3-node cluster and the standalone on it), so they run in one
# worker, which starts each once; every other test goes to whichever worker is free. The lane is
# collected first, so the worker that takes it starts at once and the other fills in around it.
LANES = {"e2e": "stack", "security": "stack", "cluster": "stack"}


@pytest.hookimpl(tryfirst=True)  # before xdist's own hook, which turns the marks into the groups it schedules
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if not os.environ.get("PYTEST_XDIST_WORKER"):
        return
    laned: list[pytest.Item] = []
    for item in items:
        parts = item.path.relative_to(REPO / "tests").parts
        lane = LANES.get(parts[0]) if len(parts) > 1 else None
        if lane is not None:
            item.add_marker(pytest.mark.xdist_group(lane))
            laned.append(item)
    in_lane = set(laned)
    items[:] = [*laned, *(item for item in items if item not in in_lane)]


@pytest.hookimpl(trylast=True)
def pytest_runtest_teardown(item: pytest.Item) -> None:
    # dag.test() runs Airflow's task runner in this process, which sets its own SIGTERM handler
    # (task_runner.run: on_kill of the task) and leaves it: a SIGTERM would then be swallowed.
    if signal.getsignal(signal.SIGTERM) is not _terminated:
        signal.signal(signal.SIGTERM, _terminated)


@pytest.fixture(scope="session")
def broker() -> Iterator[Broker]:
    # Not under pytest's basetemp: pytest prunes old basetemps, including a concurrent session's.
    data = Path(tempfile.mkdtemp(prefix="kafka-", dir=STATE))
    instance = Broker(data, port=free_port()).start()
    yield instance
    stop_readers()  # shared store readers linger 60 s by design; not past their broker
    instance.stop()
    shutil.rmtree(data, ignore_errors=True)


@pytest.fixture(scope="session")
def cluster() -> Iterator[Cluster]:
    """Three combined broker+controller nodes on loopback: RF 3, min.insync.replicas 2."""
    data = Path(tempfile.mkdtemp(prefix="kafka-cluster-", dir=STATE))
    instance = Cluster(data, size=3).start()
    yield instance
    stop_readers()
    instance.stop()
    shutil.rmtree(data, ignore_errors=True)


@pytest.fixture(scope="session")
def schema_registry() -> Iterator[SchemaRegistry]:
    """A real Apicurio Registry (Confluent-compatible API, global compatibility BACKWARD), in memory."""
    data = Path(tempfile.mkdtemp(prefix="registry-", dir=STATE))
    instance = SchemaRegistry(data, port=free_port()).start()
    yield instance
    instance.stop()
    shutil.rmtree(data, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres() -> Iterator[Postgres]:
    with scratch_server("kw-tests-postgres-") as server:
        yield server


@pytest.fixture
def own_postgres() -> Iterator[Postgres]:
    """A server of the test's own, for a test that stops or kills it: the session's server also holds
    the standalones' Airflow metadata, and Airflow's scheduler and triggerer exit when that goes away."""
    with scratch_server("kw-own-postgres-") as server:
        yield server


@pytest.fixture
def examples_postgres(postgres: Postgres) -> str:
    """A fresh database on the session's server, named as AIRFLOW_CONN_KW_EXAMPLES_DB takes it."""
    return postgres.fresh_database("kw")


@pytest.fixture
def cluster_config(cluster: Cluster) -> dict[str, str]:
    return {"bootstrap.servers": cluster.bootstrap_servers}


@pytest.fixture
def kafka_config(broker: Broker) -> dict[str, str]:
    return {"bootstrap.servers": broker.bootstrap_servers}


@pytest.fixture
def topic() -> str:
    return f"t-{uuid.uuid4().hex[:10]}"


@pytest.fixture
def group() -> str:
    return f"g-{uuid.uuid4().hex[:10]}"


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    """A webhook endpoint on loopback that records (and verifies) what it receives."""
    server = WebhookReceiver().start_in_thread()
    yield server
    server.stop()
