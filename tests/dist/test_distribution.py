"""kafka-workflows installs like a provider: the built wheel in fresh venvs, at its declared floors.

- The core alone (the worker image): no Airflow, its dependencies at the floors pyproject declares,
  and a worker from that venv handles messages on the real broker.
- `kafka-workflows[airflow]` at the floors of the `airflow` extra: `airflow providers list`,
  `airflow plugins` and `airflow config list` show it, and the example DAGs parse from `dags/` alone.
  Transitive dependencies are resolved as of FLOOR_DATE (Airflow's own floor release): what an image
  built then would hold.
- The Astro layout of this repo (plugins/ folder and the editable install's entry point together)
  loads the plugin once.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import tomllib
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from confluent_kafka import Producer
from packaging.utils import canonicalize_name
from packaging.version import Version

from kafka_workflows_airflow.get_provider_info import CONFIG
from stack.broker import Broker
from stack.wait import wait_for
from stack import reaper

REPO = Path(__file__).resolve().parents[2]
UV = str(Path(sys.executable).parent / "uv")
FLOOR_DATE = "2026-05-01"  # after apache-airflow 3.2.0, the floor of the airflow extra
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]


def floors(requirements: list[str]) -> list[str]:
    """`name>=X` -> `name==X`: the lowest versions a requirement list allows."""
    pins = []
    for requirement in requirements:
        match = re.match(r"^([A-Za-z0-9_.-]+)(\[[^\]]*\])?>=([0-9][^,;]*)", requirement)
        assert match, f"{requirement!r} declares no floor"
        pins.append(f"{match[1]}=={match[3]}")
    return pins


def run(args: list[str], env: dict[str, str] | None = None, timeout: float = 300, cwd: Path | None = None) -> str:
    done = subprocess.run(args, capture_output=True, text=True, timeout=timeout, env=env, check=False, cwd=cwd)
    output = f"{done.stdout[-3000:]}{done.stderr[-3000:]}"
    assert done.returncode == 0, f"{' '.join(args)} exited {done.returncode}:\n{output}"
    return done.stdout


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    run([UV, "build", "-q", "--wheel", "--out-dir", str(out), str(REPO)])
    (built,) = out.glob("kafka_workflows-*.whl")
    return built


def venv(where: Path, wheel: Path, pins: list[str], extra: str = "", exclude_newer: str | None = None) -> Path:
    run([UV, "venv", "-q", "-p", sys.executable, str(where)])
    constraints = where / "floors.txt"
    constraints.write_text("\n".join(pins) + "\n")
    env = {**os.environ, "VIRTUAL_ENV": str(where)}
    run([UV, "pip", "install", "-q", "-c", str(constraints), *(["--exclude-newer", exclude_newer] if exclude_newer
                                                               else []), f"{wheel}{extra}"], env=env, timeout=600)
    return where / "bin"


@pytest.fixture(scope="module")
def airflow_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    home = tmp_path_factory.mktemp("airflow-home")
    yield {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "PYTHONPATH", "VIRTUAL_ENV"))} | {
        "AIRFLOW_HOME": str(home), "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(tmp_path_factory.mktemp("no-plugins"))}


@pytest.mark.integration
def test_the_core_installs_alone_at_its_floors_and_its_worker_handles_messages(
        wheel: Path, broker: Broker, tmp_path: Path) -> None:
    pins = floors(PYPROJECT["dependencies"])
    bin_ = venv(tmp_path / "core", wheel, pins)
    installed = run([str(bin_ / "python"), "-c", "import importlib.metadata as m, json; print(json.dumps("
                     "{d.metadata['Name'].lower(): d.version for d in m.distributions()}))"])
    versions = {canonicalize_name(name): v for name, v in json.loads(installed).items()}
    assert "apache-airflow" not in versions and "apache-airflow-core" not in versions
    for pin in pins:
        name, version = pin.split("==")
        assert Version(versions[canonicalize_name(name)]) == Version(version), (pin, versions)

    handler_dir = tmp_path / "handlers"
    handler_dir.mkdir()
    seen = tmp_path / "seen.txt"
    (handler_dir / "floor_handler.py").write_text(
        "from kafka_workflows import Message\n\n"
        "def record(message: Message) -> None:\n"
        f"    with open({str(seen)!r}, 'a') as f:\n"
        "        f.write(str(message.value['n']) + '\\n')\n")
    topic, group = f"floor-{uuid.uuid4().hex[:8]}", f"floor-{uuid.uuid4().hex[:8]}"
    env = {**os.environ, "PYTHONPATH": str(handler_dir), "KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap_servers}
    with open(tmp_path / "worker.log", "wb") as log:
        worker = reaper.popen([str(bin_ / "kafka-workflows"), "worker", "--topic", topic, "--group", group,
                               "--handler", "floor_handler.record", "--partitions", "2"],
                              env=env, stdout=log, stderr=subprocess.STDOUT, cwd=tmp_path)
    try:
        producer = Producer({"bootstrap.servers": broker.bootstrap_servers})
        time.sleep(1)
        for n in range(5):
            producer.produce(topic, json.dumps({"n": n}).encode(), key=f"k{n}".encode())
        assert producer.flush(30) == 0
        wait_for(lambda: seen.exists() and len(seen.read_text().split()) >= 5, 120,
                 f"the floor venv's worker to handle 5 messages (log: {tmp_path / 'worker.log'})", 0.5)
        assert sorted(int(n) for n in seen.read_text().split()) == [0, 1, 2, 3, 4]
    finally:
        worker.terminate()
        worker.wait(60)


@pytest.mark.airflow
def test_airflow_at_the_floors_lists_the_provider_its_plugin_and_its_config_and_parses_the_dags(
        wheel: Path, airflow_env: dict[str, str], tmp_path: Path) -> None:
    bin_ = venv(tmp_path / "airflow", wheel, floors(PYPROJECT["optional-dependencies"]["airflow"]),
                extra="[airflow]", exclude_newer=FLOOR_DATE)
    airflow = str(bin_ / "airflow")
    version = run([airflow, "version"], env=airflow_env).strip().splitlines()[-1]
    assert Version(version) == Version(floors(PYPROJECT["optional-dependencies"]["airflow"])[0].split("==")[1])

    providers = json.loads(run([airflow, "providers", "list", "-o", "json"], env=airflow_env))
    ours = [p for p in providers if p["package_name"] == "kafka-workflows"]
    assert len(ours) == 1 and ours[0]["version"] == PYPROJECT["version"], providers
    links = json.loads(run([airflow, "providers", "links", "-o", "json"], env=airflow_env))
    assert {link["extra_link_class_name"] for link in links} >= {  # the provider info's extra-links
        f"kafka_workflows_airflow.links.{name}" for name in ("KafkaProgressLink", "KafkaGroupLink", "DeadLettersLink")}

    plugins = json.loads(run([airflow, "plugins", "-o", "json"], env=airflow_env))
    assert [p["name"] for p in plugins if p["name"] == "kafka_workflows"] == ["kafka_workflows"], plugins

    listed = run([airflow, "config", "list", "--section", "kafka_workflows", "--include-descriptions"],
                 env=airflow_env)
    for option, spec in CONFIG["kafka_workflows"]["options"].items():
        assert re.search(rf"^(# )?{option} = ", listed, re.M), (option, listed)
        assert spec["description"].split(".")[0][:60] in listed.replace("\n# ", " "), option

    # Every warning is an error but the one a spec refused at these floors gives: Kafka in (`trigger:`) needs
    # Airflow 3.3, so refund_requested is a stand-in there, saying so; every other workflow builds.
    parsed = run([str(bin_ / "python"), "-W", "error::UserWarning", "-c",
                  "import json, warnings; from kafka_workflows_airflow.factory import InvalidWorkflowSpec; "
                  "warnings.filterwarnings('ignore', category=InvalidWorkflowSpec); "
                  "from airflow.models.dagbag import DagBag; "
                  f"b = DagBag(dag_folder={str(REPO / 'dags')!r}, include_examples=False); "
                  "print(json.dumps({'dags': sorted(b.dag_ids), 'errors': {k: v[:300] for k, v in "
                  "b.import_errors.items()}, 'invalid': {d: b.dags[d].description for d in b.dag_ids "
                  "if 'invalid-spec' in b.dags[d].tags}}))"], env=airflow_env)
    result = json.loads(parsed.strip().splitlines()[-1])
    assert Version(version) < Version("3.3"), "at a 3.3 floor refund_requested builds: expect refund_requested.kafka_in"
    assert result["dags"] == ["checkout", "contacts_import", "contacts_imported", "refund_requested",
                              "subscription_renewals", "subscription_renewals_incident"], result
    assert result["errors"] == {}, result
    assert list(result["invalid"]) == ["refund_requested"], result
    assert "needs Airflow 3.3+" in result["invalid"]["refund_requested"], result


@pytest.mark.airflow
def test_the_astro_layout_with_the_editable_install_loads_the_plugin_once(airflow_env: dict[str, str],
                                                                         tmp_path: Path) -> None:
    env = {**airflow_env, "AIRFLOW__CORE__PLUGINS_FOLDER": str(REPO / "plugins"),
           "PYTHONPATH": os.pathsep.join(str(REPO / p) for p in ("plugins", "include"))}
    probe = ("import json; from airflow import plugins_manager as pm; plugins, errors = pm._get_plugins(); "
             "print(json.dumps({'names': [p.name for p in plugins], 'errors': errors}))")
    # Not from the repo's root: `pip install -e .` leaves an egg-info there that a `python -c` would see as a
    # second distribution (Airflow's own processes start from console scripts, which never put cwd on sys.path).
    seen = json.loads(run([sys.executable, "-c", probe], env=env, cwd=tmp_path).strip().splitlines()[-1])
    assert seen["names"].count("kafka_workflows") == 1, seen
    assert not seen["errors"], seen
