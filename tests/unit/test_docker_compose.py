"""docker-compose.yml cannot run here (no Docker engine): check it is whole and points at real files."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
AIRFLOW_COMPONENTS = {"airflow-init", "airflow-apiserver", "airflow-scheduler", "airflow-dag-processor",
                      "airflow-triggerer"}


def _compose() -> dict[str, Any]:
    return yaml.safe_load((REPO / "docker-compose.yml").read_text())


def test_compose_defines_the_whole_stack() -> None:
    services = _compose()["services"]
    assert {"kafka", "postgres", "worker", *AIRFLOW_COMPONENTS} <= set(services)
    assert services["kafka"]["image"].startswith("apache/kafka:4.")
    assert services["kafka"]["environment"]["KAFKA_PROCESS_ROLES"] == "broker,controller"
    assert services["postgres"]["image"].startswith("postgres:")
    for name in AIRFLOW_COMPONENTS:
        assert "airflow.Dockerfile" in services[name]["build"]["dockerfile"]
    base = (REPO / "docker" / "airflow.Dockerfile").read_text()
    assert base.startswith("# ") and "FROM apache/airflow:3." in base


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
    assert worker["command"] == ["worker", "/workflows"]
    assert "./dags/workflows:/workflows:ro" in worker["volumes"]


def test_worker_image_holds_the_kafka_side_only() -> None:
    dockerfile = (REPO / "docker" / "worker.Dockerfile").read_text()
    assert "COPY include ./include" in dockerfile
    assert "airflow" not in dockerfile.split("COPY", 1)[1].lower(), "the worker image must not install Airflow"
    importing_airflow = [str(path.relative_to(REPO)) for path in (REPO / "include").rglob("*.py")
                         if re.search(r"^\s*(from|import)\s+airflow", path.read_text(), re.MULTILINE)]
    assert importing_airflow == [], "include/ is the worker image and must not import Airflow"
