"""One `airflow standalone` per test session, shared by tests/e2e and tests/security (a pytest plugin).

It has three users: `admin` (role admin), `viewer` (role viewer: reads, never acts) and `op` (role op:
acts on DAGs, as an operator would).

Starting one takes a minute or more, so every end-to-end test of the session uses the same one. Its
sources and callbacks are allow-listed the way a deployment would configure them:

- `allowed_sources`: the `imports/` folder in its home (the JWT secret file next to it is not),
  the session receiver's `/files/`, and the cloud metadata host (a host allowed by mistake: its
  link-local address is refused all the same, which the security tests show);
- `allowed_callbacks`: the session receiver;
- `allowed_networks`: 127.0.0.1/32 only, so other loopback addresses (127.0.0.2) stay refused.

It is traced (`[traces] otel_on`, the OTEL_* variables naming the session's Jaeger), so every DAG run
is one trace there, and the workers the tests start with its env() trace too.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from stack.airflow import AirflowStandalone
from stack.broker import Broker, free_port
from stack.jaeger import Jaeger
from stack.postgres import Postgres
from tests.helpers.webhook import WebhookReceiver

# The HMAC secret of the contacts import's webhook (the password of connection kw_webhook).
WEBHOOK_SECRET = "e2e-webhook-secret"
VIEWER = "viewer"  # a second user, role viewer: reads, never acts (the UI's API tests)
OP = "op"  # a third user, role op: acts on DAGs (the UI's responsiveness tests)
METADATA_ROOT = "http://169.254.169.254/latest/"


@pytest.fixture(scope="session")
def stack_receiver() -> Iterator[WebhookReceiver]:
    """The loopback webhook receiver and file server the standalone stack is allowed to reach."""
    server = WebhookReceiver().start_in_thread()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def jaeger(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Jaeger]:
    """The session's trace backend (stack/jaeger.py: built from its Go module, in-memory storage)."""
    with Jaeger(tmp_path_factory.mktemp("jaeger")) as backend:
        yield backend


@pytest.fixture(scope="session")
def standalone(broker: Broker, stack_receiver: WebhookReceiver, postgres: Postgres, jaeger: Jaeger,
               tmp_path_factory: pytest.TempPathFactory) -> Iterator[AirflowStandalone]:
    home = tmp_path_factory.mktemp("standalone")
    (home / "imports").mkdir()
    allowed = stack_receiver.allow_env({
        "AIRFLOW__KAFKA_WORKFLOWS__ALLOWED_SOURCES": f"file://{home / 'imports'}/, {METADATA_ROOT}"})
    instance = AirflowStandalone(home, free_port(), broker.bootstrap_servers, users={VIEWER: "viewer", OP: "op"},
                                 metadata_db=postgres.fresh_database("airflow"), extra_env={
        "KW_EXAMPLES_DB": str(home / "examples.sqlite"),
        "AIRFLOW_CONN_KW_WEBHOOK": json.dumps({"conn_type": "http", "password": WEBHOOK_SECRET}),
        **{k: v for k, v in allowed.items() if k.startswith("AIRFLOW__KAFKA_WORKFLOWS__")},
        # Traced, as a deployment would be: Airflow's [traces] on, spans to the session's Jaeger (the
        # workers the tests start with this env trace too: the OTEL_* variables are theirs as well).
        "AIRFLOW__TRACES__OTEL_ON": "True", **jaeger.otel_env("airflow"),
        "AIRFLOW__KAFKA_WORKFLOWS__TRACE_UI_URL": f"{jaeger.ui_url}/trace/",
    })
    instance.start()
    yield instance
    instance.stop()


@pytest.fixture(autouse=True)
def _standalone_still_running(request: pytest.FixtureRequest) -> None:
    """A test of the session's standalone fails at its start, naming the component, if one has exited."""
    if "standalone" in request.fixturenames:
        request.getfixturevalue("standalone").ensure_running()


def emptied(server: WebhookReceiver) -> WebhookReceiver:
    """The session's receiver with nothing recorded: what each end-to-end test's `receiver` is."""
    with server.lock:
        server.deliveries.clear()
        server.requests.clear()
        server.files.clear()
        server.fail_next = 0
    return server
