"""librdkafka configuration outside Airflow: the Airflow connection, KAFKA_CONFIG, KAFKA_BOOTSTRAP_SERVERS.

Inside Airflow the dict comes from the `kafka_default` connection through the Kafka provider's
hook (see plugins/kafka_workflows_airflow/hooks.py); everything below takes a plain dict so both
sides share one code path. Outside Airflow (the worker image) the same connection serves, read from
the same place and in the same form, so one definition serves both (`kafka_config_from_env`):

1. `AIRFLOW_CONN_KAFKA_DEFAULT` (or `AIRFLOW_CONN_<ID>` for `KAFKA_CONN_ID=<id>`): an Airflow
   connection as JSON (`{"conn_type": "kafka", "extra": {...}}`) or as a URI
   (`kafka://?__extra__=<url-encoded JSON>`, or `kafka://?bootstrap.servers=...&...`); its extra is
   the librdkafka dict, as the provider reads it;
2. `KAFKA_CONFIG` (a JSON object) over it;
3. `KAFKA_BOOTSTRAP_SERVERS` over both (default `localhost:9092` when none of them names one).

Then, as the provider's hook does, callback settings (`oauth_cb`, `error_cb`, `stats_cb`, ...) given
as a dotted path are imported, only when the path is in the provider's allow-list,
`[apache_kafka] callback_allowlist` (`AIRFLOW__APACHE_KAFKA__CALLBACK_ALLOWLIST`, comma-separated),
or `KAFKA_CALLBACK_ALLOWLIST`. And a setting whose value is `{"file": "/path"}` takes the content
of that file (one trailing newline dropped): a mounted secret (`"sasl.password": {"file":
"/run/secrets/kafka-password"}`) instead of the secret in the connection. kafka-workflows resolves
these on the Airflow side too (its hook), so the connection's secrets stay in files there as well.
Errors name the variable and the setting, never a value (values hold secrets).
"""

from __future__ import annotations

import importlib
import json
import os
from collections.abc import Mapping
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from confluent_kafka.admin import AdminClient

from kafka_workflows.errors import BrokerUnreachableError, ConfigError
from kafka_workflows.kafka import client_log

DEFAULT_BOOTSTRAP_SERVERS = "localhost:9092"
DEFAULT_CONN_ID = "kafka_default"
CALLBACK_KEYS = ("error_cb", "throttle_cb", "stats_cb", "log_cb", "oauth_cb", "on_commit")  # the provider's
ALLOWLIST_VARIABLES = ("AIRFLOW__APACHE_KAFKA__CALLBACK_ALLOWLIST", "KAFKA_CALLBACK_ALLOWLIST")
MAX_SECRET_FILE_BYTES = 1 << 20

KafkaConfig = dict[str, Any]


def json_object(raw: str, variable: str, what: str) -> dict[str, Any]:
    """`raw` parsed as a JSON object; the error names `variable` and the position, never the value
    (it holds SASL passwords and keys)."""
    try:
        value = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{variable} is not valid JSON ({exc.msg} at char {exc.pos} of {len(raw)}); "
                          "its value is not shown (it may hold secrets)") from None
    if not isinstance(value, dict):
        raise ConfigError(f"{variable} must be a JSON object of {what}, got {type(value).__name__}")
    return value


def connection_extra(raw: str, variable: str) -> KafkaConfig:
    """The extra (librdkafka dict) of an Airflow connection given as JSON or as a URI."""
    raw = raw.strip()
    if raw.startswith("{"):
        conn = json_object(raw, variable, "an Airflow connection")
        extra = conn.get("extra") or {}
        where = f"{variable}: extra"
    else:
        try:
            query = urlsplit(raw).query
        except ValueError:
            raise ConfigError(f"{variable} is neither JSON nor a connection URI; its value is not shown") from None
        params = dict(parse_qsl(query, keep_blank_values=True))
        extra = params.get("__extra__", params)
        where = f"{variable}: __extra__"
    if isinstance(extra, str):
        try:
            extra = json.loads(extra) if extra.strip() else {}
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{where} is not valid JSON ({exc.msg} at char {exc.pos}); "
                              "its value is not shown (it may hold secrets)") from None
    if not isinstance(extra, dict):
        raise ConfigError(f"{where} must be an object of librdkafka settings, got {type(extra).__name__}")
    return dict(extra)


def callback_allowlist(environ: Mapping[str, str]) -> frozenset[str]:
    paths = ",".join(environ.get(name, "") for name in ALLOWLIST_VARIABLES)
    return frozenset(p.strip() for p in paths.split(",") if p.strip())


def _read_secret(key: str, path: Any, where: str) -> str:
    if not isinstance(path, str) or not path:
        raise ConfigError(f"{where}: {key}: {{\"file\": ...}} must name a file path")
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_SECRET_FILE_BYTES + 1)
    except OSError as exc:
        raise ConfigError(f"{where}: {key}: cannot read {path}: {exc.strerror}") from None
    if len(data) > MAX_SECRET_FILE_BYTES:
        raise ConfigError(f"{where}: {key}: {path} is larger than {MAX_SECRET_FILE_BYTES} bytes")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"{where}: {key}: {path} is not UTF-8 text") from None
    return text[:-2] if text.endswith("\r\n") else text[:-1] if text.endswith("\n") else text


def _import_callback(key: str, path: str, allowlist: frozenset[str], where: str) -> Any:
    if path not in allowlist:
        names = ", ".join(ALLOWLIST_VARIABLES)
        raise ConfigError(f"{where}: refusing to import callback {key}={path!r}: it is not in the callback "
                          f"allow-list ({names}; the provider's [apache_kafka] callback_allowlist)")
    module_name, _, attr = path.replace(":", ".").rpartition(".")
    try:
        target = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError, ValueError) as exc:
        raise ConfigError(f"{where}: callback {key}={path!r} cannot be imported "
                          f"({type(exc).__name__}: {exc})") from None
    if not callable(target):
        raise ConfigError(f"{where}: callback {key}={path!r} is not callable")
    return target


def resolve_settings(config: Mapping[str, Any], allowlist: frozenset[str] = frozenset(),
                     where: str = "kafka config") -> KafkaConfig:
    """`config` with `{"file": path}` values read and allow-listed dotted-path callbacks imported."""
    resolved: KafkaConfig = {}
    for key, value in config.items():
        if isinstance(value, dict):
            if set(value) != {"file"}:
                raise ConfigError(f"{where}: {key}: an object value must be {{\"file\": \"/path\"}}")
            value = _read_secret(key, value["file"], where)
        if key in CALLBACK_KEYS and isinstance(value, str):
            value = _import_callback(key, value, allowlist, where)
        resolved[key] = value
    return resolved


def kafka_config_from_env(environ: Mapping[str, str] | None = None) -> KafkaConfig:
    """The client config from the Airflow connection, KAFKA_CONFIG and KAFKA_BOOTSTRAP_SERVERS (above)."""
    env = os.environ if environ is None else environ
    config: KafkaConfig = {}
    conn_id = env.get("KAFKA_CONN_ID", "").strip() or DEFAULT_CONN_ID
    variable = f"AIRFLOW_CONN_{conn_id.upper()}"
    if env.get(variable, "").strip():
        config.update(connection_extra(env[variable], variable))
    elif conn_id != DEFAULT_CONN_ID:
        raise ConfigError(f"KAFKA_CONN_ID={conn_id}: {variable} is not set")
    raw = env.get("KAFKA_CONFIG", "").strip()
    if raw:
        extra = json_object(raw, "KAFKA_CONFIG", "librdkafka settings")
        config.update(extra)
    servers = env.get("KAFKA_BOOTSTRAP_SERVERS", "").strip()
    if servers:
        config["bootstrap.servers"] = servers
    config.setdefault("bootstrap.servers", DEFAULT_BOOTSTRAP_SERVERS)
    return resolve_settings(config, callback_allowlist(env), "Kafka settings (connection, KAFKA_CONFIG)")


def client_config(config: Mapping[str, Any], **overrides: Any) -> KafkaConfig:
    """A copy of `config` with overrides; connection-only keys of other clients are dropped. librdkafka's
    log lines go to Python logging, rate limited (kafka/client_log.py), unless the config names its own
    `logger` (or `log_cb`)."""
    merged = {k: v for k, v in config.items() if k not in ("group.id",)}
    merged.update(overrides)
    if "logger" not in merged and "log_cb" not in merged:
        merged["logger"] = client_log.LOGGER
    return merged


def check_reachable(config: Mapping[str, Any], timeout: float = 10.0) -> None:
    """Fail fast, naming the address, when no broker answers (librdkafka would retry silently).

    The probe client must not outlive the error. The error's traceback keeps this frame and the
    cause's keeps confluent-kafka's `list_topics` frame, whose `self` is the client. Whoever keeps
    the error (a task runner, pytest) would keep a client that retries the dead address for the
    rest of the process, logging every attempt. So the local is dropped and the cause is raised
    without its traceback.
    """
    servers = config.get("bootstrap.servers", "<unset>")
    admin: AdminClient | None = None
    try:
        admin = AdminClient(client_config(config))
        metadata = admin.list_topics(timeout=timeout)
    except Exception as exc:  # KafkaException or a config error from librdkafka
        exc.__traceback__ = None
        raise BrokerUnreachableError(
            f"cannot reach Kafka at bootstrap.servers={servers!r} within {timeout:.0f}s: {exc}"
        ) from exc
    finally:
        admin = None
    if not metadata.brokers:
        raise BrokerUnreachableError(f"Kafka at bootstrap.servers={servers!r} answered with no brokers")
