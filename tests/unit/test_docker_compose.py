"""docker-compose.yml cannot run here (no Docker engine): check it is whole and points at real files."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
AIRFLOW_COMPONENTS = {"airflow-init", "airflow-apiserver", "airflow-scheduler", "airflow-dag-processor",
                      "airflow-triggerer", "airflow-worker"}
KAFKA_NODES = ("kafka-1", "kafka-2", "kafka-3")


def _compose() -> dict[str, Any]:
    return yaml.safe_load((REPO / "docker-compose.yml").read_text())


def test_compose_defines_the_whole_stack() -> None:
    services = _compose()["services"]
    assert {*KAFKA_NODES, "postgres", "redis", "worker", *AIRFLOW_COMPONENTS} <= set(services)
    assert services["postgres"]["image"].startswith("postgres:")
    for name in AIRFLOW_COMPONENTS:
        assert "airflow.Dockerfile" in services[name]["build"]["dockerfile"]
    base = (REPO / "docker" / "airflow.Dockerfile").read_text()
    assert base.startswith("# ") and "FROM apache/airflow:3." in base


def test_kafka_is_a_three_node_kraft_cluster_that_loses_one_node_safely() -> None:
    services = _compose()["services"]
    envs = [services[name]["environment"] for name in KAFKA_NODES]
    voters = {f"{i}@{name}:9093" for i, name in enumerate(KAFKA_NODES, start=1)}
    for i, (name, env) in enumerate(zip(KAFKA_NODES, envs, strict=True), start=1):
        assert services[name]["image"].startswith("apache/kafka:4.")
        assert env["KAFKA_PROCESS_ROLES"] == "broker,controller"
        assert env["KAFKA_NODE_ID"] == i
        assert env["KAFKA_ADVERTISED_LISTENERS"] == f"PLAINTEXT://{name}:9092"
        assert set(env["KAFKA_CONTROLLER_QUORUM_VOTERS"].split(",")) == voters
        assert (env["KAFKA_DEFAULT_REPLICATION_FACTOR"], env["KAFKA_MIN_INSYNC_REPLICAS"]) == (3, 2)
        assert env["KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR"] == 3
        assert env["KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR"] == 3
        assert env["KAFKA_TRANSACTION_STATE_LOG_MIN_ISR"] == 2
    assert len({env["CLUSTER_ID"] for env in envs}) == 1, "one cluster id on every node"
    bootstrap = {f"{name}:9092" for name in KAFKA_NODES}
    assert set(services["worker"]["environment"]["KAFKA_BOOTSTRAP_SERVERS"].split(",")) == bootstrap
    airflow_kafka = json.loads(services["airflow-scheduler"]["environment"]["AIRFLOW_CONN_KAFKA_DEFAULT"])
    assert set(airflow_kafka["extra"]["bootstrap.servers"].split(",")) == bootstrap


def test_airflow_runs_tasks_on_celery_workers() -> None:
    services = _compose()["services"]
    env = services["airflow-scheduler"]["environment"]
    assert env["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"
    assert env["AIRFLOW__CELERY__BROKER_URL"].startswith("redis://redis:")
    assert services["airflow-worker"]["command"] == ["celery", "worker"]


def test_every_dependency_is_a_defined_service() -> None:
    services = _compose()["services"]
    for name, service in services.items():
        for dependency in service.get("depends_on", {}):
            assert dependency in services, f"{name} depends on undefined service {dependency}"


def test_build_contexts_dockerfiles_and_mounts_exist() -> None:
    compose = _compose()
    named_volumes = set(compose.get("volumes", {}))
    for name, service in compose["services"].items():
        build = service.get("build")
        if build:
            context = REPO / build["context"]
            assert context.is_dir(), f"{name}: build context {context} missing"
            assert (context / build.get("dockerfile", "Dockerfile")).is_file(), f"{name}: Dockerfile missing"
        for volume in service.get("volumes", []):
            source = volume.split(":", 1)[0]
            if source.startswith("."):
                assert (REPO / source).exists(), f"{name}: mounted path {source} missing"
            else:
                assert source in named_volumes, f"{name}: volume {source} not declared"


def test_the_worker_runs_the_same_specs_airflow_reads() -> None:
    worker = _compose()["services"]["worker"]
    assert worker["command"][:2] == ["worker", "/workflows"]
    assert "./dags/workflows:/workflows:ro" in worker["volumes"]


def test_the_worker_serves_metrics_and_is_probed_on_its_liveness_endpoint() -> None:
    worker = _compose()["services"]["worker"]
    command = worker["command"]
    port = command[command.index("--metrics-port") + 1]
    assert command[command.index("--metrics-addr") + 1] == "0.0.0.0" and port in worker["expose"]
    probe = " ".join(worker["healthcheck"]["test"])
    assert f"127.0.0.1:{port}/healthz" in probe


def test_worker_image_holds_the_kafka_side_only() -> None:
    dockerfile = (REPO / "docker" / "worker.Dockerfile").read_text()
    assert "COPY include ./include" in dockerfile
    assert "airflow" not in dockerfile.split("COPY", 1)[1].lower(), "the worker image must not install Airflow"
    importing_airflow = [str(path.relative_to(REPO)) for path in (REPO / "include").rglob("*.py")
                         if re.search(r"^\s*(from|import)\s+airflow", path.read_text(), re.MULTILINE)]
    assert importing_airflow == [], "include/ is the worker image and must not import Airflow"


def test_every_long_running_service_restarts_when_it_dies() -> None:
    services = yaml.safe_load((REPO / "docker-compose.yml").read_text())["services"]
    policies = {name: service.get("restart") for name, service in services.items()}
    assert policies.pop("airflow-init") == "no"  # a one-off migration
    assert policies.pop("schema-registry-config") == "no"  # a one-off: the registry's compatibility rule
    assert set(policies.values()) == {"unless-stopped"}, policies


def test_every_worker_replica_and_airflow_task_share_one_postgres_for_the_examples() -> None:
    from kw_examples.db import CONN_VAR, database_url

    services = _compose()["services"]
    users = ["worker", *sorted(AIRFLOW_COMPONENTS)]
    named = {services[name]["environment"].get(CONN_VAR) for name in users}
    assert len(named) == 1 and None not in named, f"{CONN_VAR} differs between {users}"
    assert not any("KW_EXAMPLES_DB" in services[name]["environment"] for name in users), "no SQLite file in compose"
    url = database_url({CONN_VAR: named.pop()})
    assert (url.drivername, url.host, url.port) == ("postgresql+psycopg", "postgres", 5432)
    assert "postgres" in services["worker"]["depends_on"]
    mounted = [v for v in services["postgres"]["volumes"] if v.endswith(":/docker-entrypoint-initdb.d:ro")]
    [init] = [REPO / v.split(":", 1)[0] for v in mounted]
    assert f"CREATE DATABASE {url.database} " in "\n".join(p.read_text() for p in init.glob("*.sql"))
