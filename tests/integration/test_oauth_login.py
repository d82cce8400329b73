"""The worker logs in to Kafka with SASL/OAUTHBEARER from the Airflow connection's own form.

A broker of this module's own (the session's broker is untouched) has a second listener, SASL_PLAINTEXT
with OAUTHBEARER and Kafka's unsecured-JWT validator. The worker image's settings are only
`AIRFLOW_CONN_KAFKA_DEFAULT` (the Kafka provider's connection, its extra the librdkafka dict) with
`oauth_cb` as a dotted path in the provider's callback allow-list and `sasl.oauthbearer.config`
read from a secret file; no KAFKA_BOOTSTRAP_SERVERS. It handles messages; then, the broker gone,
its /readyz fails.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from kafka_workflows.errors import ConfigError
from kafka_workflows.kafka.admin import TopicSpec, ensure_topics
from kafka_workflows.kafka.config import kafka_config_from_env
from kafka_workflows.kafka.producer import RequestProducer
from stack import reaper
from stack.broker import Broker, free_port
from tests.conftest import STATE
from tests.helpers import oauth
from tests.helpers.kafka import REPO, records, wait_for
from tests.integration.test_telemetry import get

pytestmark = pytest.mark.integration
JAAS = ('org.apache.kafka.common.security.oauthbearer.OAuthBearerLoginModule required '
        'unsecuredLoginStringClaim_sub="admin";')
CALLBACK = "tests.helpers.oauth.unsecured_jwt"


@pytest.fixture(scope="module")
def sasl_broker() -> Iterator[tuple[Broker, int]]:
    data = Path(tempfile.mkdtemp(prefix="kafka-oauth-", dir=STATE))
    port, sasl, controller = free_port(), free_port(), free_port()
    broker = Broker(data, port=port, controller_port=controller, extra={
        "listeners": f"PLAINTEXT://127.0.0.1:{port},SASL://127.0.0.1:{sasl},CONTROLLER://127.0.0.1:{controller}",
        "advertised.listeners": f"PLAINTEXT://127.0.0.1:{port},SASL://127.0.0.1:{sasl}",
        "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT,SASL:SASL_PLAINTEXT",
        "sasl.enabled.mechanisms": "OAUTHBEARER",
        "listener.name.sasl.sasl.enabled.mechanisms": "OAUTHBEARER",
        "listener.name.sasl.oauthbearer.sasl.jaas.config": JAAS,
    }).start()
    yield broker, sasl
    broker.stop()
    shutil.rmtree(data, ignore_errors=True)


def connection_env(sasl: int, secret: Path) -> dict[str, str]:
    """One connection definition, as Airflow reads it: the provider's JSON form, extra = librdkafka dict."""
    return {
        "AIRFLOW_CONN_KAFKA_DEFAULT": json.dumps({"conn_type": "kafka", "extra": {
            "bootstrap.servers": f"127.0.0.1:{sasl}", "security.protocol": "SASL_PLAINTEXT",
            "sasl.mechanism": "OAUTHBEARER", "oauth_cb": CALLBACK,
            "sasl.oauthbearer.config": {"file": str(secret)}}}),
        "AIRFLOW__APACHE_KAFKA__CALLBACK_ALLOWLIST": CALLBACK,
    }


def test_the_worker_logs_in_with_oauthbearer_from_the_airflow_connection(
        sasl_broker: tuple[Broker, int], tmp_path: Path) -> None:
    broker, sasl = sasl_broker
    secret = tmp_path / "oauthbearer-config"
    secret.write_text("principal=admin\n")
    env = connection_env(sasl, secret)
    config = kafka_config_from_env(env)
    assert config["oauth_cb"] is oauth.unsecured_jwt and config["sasl.oauthbearer.config"] == "principal=admin"
    with pytest.raises(ConfigError, match="not in the callback allow-list"):
        kafka_config_from_env({**env, "AIRFLOW__APACHE_KAFKA__CALLBACK_ALLOWLIST": ""})

    topic, group = f"t-{uuid.uuid4().hex[:8]}", f"g-{uuid.uuid4().hex[:8]}"
    ensure_topics(config, [TopicSpec(topic, 1)])  # over SASL too: the callback's token is accepted
    assert oauth.CALLS and oauth.CALLS[-1] == "admin"
    record, log, port = tmp_path / "calls.jsonl", tmp_path / "worker.log", free_port()
    full_env = {k: v for k, v in os.environ.items() if not k.startswith(("KAFKA_", "AIRFLOW_CONN_"))}
    full_env.update(env, KW_TEST_RECORD=str(record), PYTHONPATH=os.pathsep.join([str(REPO / "include"), str(REPO)]))
    with log.open("ab") as out:
        proc = reaper.popen([sys.executable, "-m", "kafka_workflows.cli", "worker", "--topic", topic,
                             "--group", group, "--handler", "tests.helpers.handlers.record",
                             "--metrics-port", str(port)], env=full_env, stdout=out, stderr=out)
    try:
        def alive() -> None:
            assert proc.poll() is None, log.read_text()[-3000:]

        producer = RequestProducer(config)
        for i in range(5):
            producer.send(topic, {"i": i}, key=f"k{i}")
        producer.flush()
        wait_for(lambda: len(records(record)) == 5, 60, "the worker to handle 5 messages", alive=alive)
        assert sorted(r["value"]["i"] for r in records(record)) == list(range(5))
        wait_for(lambda: get(port, "/readyz")[0] == 200, 30, "the worker to be ready", alive=alive)

        broker.stop()  # the broker goes away: the worker stays alive, and is not ready
        wait_for(lambda: get(port, "/readyz")[0] == 503, 60, "/readyz to fail without a broker", alive=alive)
        state = json.loads(get(port, "/readyz")[1])["units"][f"worker {group}"]
        assert state["alive"] and state["broker_up"] is False
        assert get(port, "/healthz")[0] == 200
    finally:
        proc.kill()  # a graceful stop would wait for the broker that is gone (not what this test is about)
        proc.wait(30)
