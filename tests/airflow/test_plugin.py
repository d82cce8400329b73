"""The plugin builds its FastAPI app only in Airflow's API server, and importing it opens no Kafka client.

Every Airflow process loads plugins (scheduler, DAG processor, triggerer, task workers); only the API
server serves the app. Each case runs in a fresh interpreter with the argv of that process.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

PROBE = """
import json, os, sys
sys.argv = json.loads(os.environ["PROBE_ARGV"])
from kafka_workflows_airflow.plugin import KafkaWorkflowsPlugin as plugin

def librdkafka_threads():
    names = []
    for task in os.listdir("/proc/self/task"):
        with open(f"/proc/self/task/{task}/comm") as comm:
            names.append(comm.read().strip())
    return [n for n in names if n.startswith("rdk:")]

print(json.dumps({"apps": [app["url_prefix"] for app in plugin.fastapi_apps],
                  "views": [view["url_route"] for view in plugin.external_views],
                  "app_built": "kafka_workflows_airflow.api.app" in sys.modules,
                  "kafka_clients": librdkafka_threads()}))
"""


def probe(argv: list[str]) -> dict[str, object]:
    env = {**os.environ, "PROBE_ARGV": json.dumps(argv),
           "PYTHONPATH": os.pathsep.join(str(REPO / p) for p in ("plugins", "include"))}
    done = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, timeout=120,
                          check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("command", ["scheduler", "dag-processor", "triggerer", "celery", "tasks"])
def test_outside_the_api_server_the_plugin_builds_no_app_and_opens_no_kafka_client(command: str) -> None:
    seen = probe(["airflow", command])
    assert seen["apps"] == [] and seen["app_built"] is False, seen
    assert seen["kafka_clients"] == [], seen
    assert "kafka-workflows" in seen["views"]  # the navigation entries are data, registered everywhere


def test_in_the_api_server_the_app_is_mounted_and_still_opens_no_kafka_client_until_a_request() -> None:
    seen = probe(["airflow", "api-server"])
    assert seen["apps"] == ["/kafka-workflows"] and seen["app_built"] is True, seen
    assert seen["kafka_clients"] == [], seen
