"""Attacks through a DAG run's conf, against the real standalone stack, through the REST API (official client).

Whoever may trigger `contacts_import` chooses its `source` and `callback_url`. Each attack below is
one run of the product's DAG; all of them are triggered at once and then watched together (the
stack is shared with tests/e2e, one per session). For each: the step fails, its log fetched through
the REST API names the rule that refused and never the content, and nothing reached Kafka: the jobs
topic and the store's commands topic hold no record of the run's request (read to their end,
uncommitted records included). Servers nobody allowed record whether anyone contacted them.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import airflow_client.client as af
import pytest
from airflow_client.client.api.dag_api import DAGApi
from airflow_client.client.api.dag_run_api import DagRunApi
from airflow_client.client.api.task_instance_api import TaskInstanceApi
from airflow_client.client.models.trigger_dag_run_post_body import TriggerDAGRunPostBody
from confluent_kafka.admin import AdminClient

from kafka_workflows.store import commands_topic
from kw_examples import contacts
from stack import reaper
from stack.airflow import AirflowStandalone
from stack.broker import Broker
from tests.helpers.kafka import read_all, wait_for
from tests.helpers.standalone import METADATA_ROOT
from tests.helpers.webhook import WebhookReceiver

pytestmark = [pytest.mark.airflow, pytest.mark.integration]
DAG_ID = "contacts_import"
TOLD = "never-tell-anyone-3f9a"  # content of the files an attacker points at


@dataclass
class Attack:
    name: str
    conf: dict[str, Any]
    task: str  # the task that must refuse
    expected: list[str]  # fragments the refusal names (the rule)
    secrets: list[str]  # text that must never appear in the log
    produces: bool = False  # the request itself is legitimate (the callback attacks): its init is expected
    run_id: str = ""
    state: str | None = None
    task_state: str | None = None
    log: str = field(default="", repr=False)


@pytest.fixture(scope="module")
def stranger() -> Iterator[WebhookReceiver]:
    """A loopback server nobody allowed (127.0.0.2; only 127.0.0.1/32 is), recording any contact."""
    server = WebhookReceiver("127.0.0.2").start_in_thread()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def store_processor(standalone: AirflowStandalone, tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Counts the (empty) requests of the callback attacks, so their await ends and notify runs."""
    log = tmp_path_factory.mktemp("security") / "store-processor.log"
    with open(log, "wb") as out:
        proc = reaper.popen([sys.executable, "-m", "kafka_workflows.cli", "store-processor", "--store",
                             contacts.STORE], env=standalone.env(), stdout=out, stderr=subprocess.STDOUT)
    yield
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(60)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _attacks(home: Path, outside: Path, stranger: WebhookReceiver, receiver: WebhookReceiver) -> list[Attack]:
    imports = home / "imports"
    jwt_secret = (home / ".jwt-secret").read_text().strip()
    (imports / "link-to-secret.csv").symlink_to(home / ".jwt-secret")
    with open(imports / "one-gigabyte-line.csv", "wb") as f:  # sparse: 1 GB of NUL bytes, no line break
        f.truncate(1024 * 1024 * 1024)
    header_only = imports / "header-only.csv"
    header_only.write_text("email,first_name\n")
    refused_root = "refused: it is not under an allowed root ([kafka_workflows] allowed_sources"
    return [
        Attack("local file outside the allowed roots", {"source": str(outside)}, "split", [refused_root], [TOLD]),
        Attack("Airflow's JWT secret file", {"source": str(home / ".jwt-secret")}, "split", [refused_root],
               [jwt_secret]),
        Attack("the secret through '..'", {"source": f"file://{imports}/../.jwt-secret"}, "split",
               ["a '..' or '.' path segment is not allowed (path traversal)"], [jwt_secret]),
        Attack("the secret through a symlink in the root", {"source": str(imports / "link-to-secret.csv")}, "split",
               ["resolves (through a symbolic link) to a place outside the allowed roots"], [jwt_secret]),
        Attack("loopback HTTP server as source", {"source": f"{stranger.url}/files/contacts.csv"}, "split",
               ["is not under an allowed URL ([kafka_workflows] allowed_sources"], []),
        Attack("redirect to the metadata address", {
            "source": f"{receiver.url}/files/redirect?to={METADATA_ROOT}meta-data/iam/security-credentials/"},
            "split", ["redirected (HTTP 302) to a URL that is refused", "169.254.169.254 resolves to a link-local "
                      "(cloud metadata services live there) address"], ["security-credentials"]),
        Attack("redirect to a loopback server", {
            "source": f"{receiver.url}/files/redirect?to={stranger.url}/files/contacts.csv"},
            "split", ["redirected (HTTP 302) to a URL that is refused"], []),
        Attack("a 1 GB single line", {"source": str(imports / "one-gigabyte-line.csv")}, "split",
               ["the line at line 1 is longer than 1048576 bytes (limit max_line_bytes)"], ["\\u0000"]),
        Attack("loopback HTTP server as callback_url", {"source": str(header_only),
                                                        "callback_url": f"{stranger.url}/hook"}, "notify",
               ["webhook refused:", "is not under an allowed URL ([kafka_workflows] allowed_callbacks"], [],
               produces=True),
    ]


def _trigger(runs: DagRunApi, attack: Attack) -> str:
    body = TriggerDAGRunPostBody(logical_date=None, conf=attack.conf, note=f"security: {attack.name}")
    return str(runs.trigger_dag_run(DAG_ID, body).dag_run_id)


NAMES = ["local file outside the allowed roots", "Airflow's JWT secret file", "the secret through '..'",
         "the secret through a symlink in the root", "loopback HTTP server as source",
         "redirect to the metadata address", "redirect to a loopback server", "a 1 GB single line",
         "loopback HTTP server as callback_url"]


def _state(value: Any) -> str | None:
    return None if value is None else str(getattr(value, "value", value))


def _request_records(config: dict[str, Any], topic: str, request_id: str) -> list[Any]:
    """Every record of `topic` keyed by the request (or one of its jobs), committed or not."""
    if topic not in AdminClient(config).list_topics(timeout=10).topics:
        return []
    return [m for m in read_all(config, topic, isolation="read_uncommitted")
            if (m.key() or b"").decode(errors="replace").startswith(request_id)]


@pytest.fixture(scope="module")
def attacks(standalone: AirflowStandalone, stack_receiver: WebhookReceiver, stranger: WebhookReceiver,
            store_processor: None, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Attack]:
    """Every attack triggered up front (the stack runs them side by side), watched to its end, its log fetched."""
    outside = tmp_path_factory.mktemp("outside") / "outside.csv"
    outside.write_text(f"email,first_name\n{TOLD}@example.com,{TOLD}\n")
    attacks = _attacks(standalone.home, outside, stranger, stack_receiver)
    with af.ApiClient(af.Configuration(host=standalone.url, access_token=standalone.token())) as api:
        dags, runs, tis = DAGApi(api), DagRunApi(api), TaskInstanceApi(api)

        def parsed() -> bool:
            try:
                return dags.get_dag(DAG_ID).dag_id == DAG_ID
            except af.ApiException:
                return False

        wait_for(parsed, 180, "the DAG processor to parse contacts_import", 2)
        for attack in attacks:
            attack.run_id = _trigger(runs, attack)

        def all_finished() -> bool:
            for attack in attacks:
                if attack.state is None:
                    state = _state(runs.get_dag_run(DAG_ID, attack.run_id).state)
                    attack.state = state if state in ("success", "failed") else None
            return all(a.state for a in attacks)

        wait_for(all_finished, 240, "every attack's DAG run to finish", 2, alive=standalone.ensure_running)
        for attack in attacks:
            ti = tis.get_task_instance(DAG_ID, attack.run_id, attack.task)
            attack.task_state = _state(ti.state)
            # The raw JSON: the client's model keeps `event` but drops the exception's structured details.
            response = tis.get_log_without_preload_content(DAG_ID, attack.run_id, attack.task, ti.try_number or 1,
                                                           full_content=True)
            attack.log = json.dumps(json.loads(response.data))
    return {attack.name: attack for attack in attacks}


@pytest.mark.parametrize("name", NAMES)
def test_the_attack_is_refused_naming_the_rule_never_the_content_and_nothing_is_produced(
        attacks: dict[str, Attack], broker: Broker, name: str) -> None:
    attack = attacks[name]
    assert (attack.state, attack.task_state) == ("failed", "failed"), f"run {attack.state}, {attack.task} " \
                                                                       f"{attack.task_state}"
    for fragment in attack.expected:
        assert json.dumps(fragment)[1:-1] in attack.log, f"{fragment!r} not in the {attack.task} log"
    for secret in [*attack.secrets, TOLD]:
        assert secret not in attack.log, "the log quotes the content"
    config = {"bootstrap.servers": broker.bootstrap_servers}
    request_id = f"{DAG_ID}.split.{attack.run_id}"
    assert _request_records(config, contacts.JOBS_TOPIC, request_id) == [], "a job was produced"
    # An attack the split lets through (a refused callback is only met by notify) registers its empty
    # request: one init, with the pipelined split's progress before it in the same transaction.
    ops = [json.loads(m.value())["op"] for m in _request_records(config, commands_topic(contacts.STORE), request_id)]
    assert ops == (["progress", "init"] if attack.produces else []), f"store commands {ops}"


def test_no_server_nobody_allowed_was_contacted(attacks: dict[str, Attack], stranger: WebhookReceiver) -> None:
    assert len(attacks) == len(NAMES)
    assert not stranger.contacted(), f"contacted: {stranger.requests}"
