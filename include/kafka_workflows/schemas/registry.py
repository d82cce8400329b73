"""The schema registry as a connection: the same settings on the Airflow side and in the worker.

On the Airflow side it is a connection (default id `schema_registry_default`, type `http`): its host
(with scheme, port and path: `http://registry:8081/apis/ccompat/v7`), login and password (basic auth),
and an extra of further client settings (confluent-kafka's SchemaRegistryClient: `ssl.ca.location`,
`bearer.auth.*`, ...) plus ours, `auto_register` (default true: a schema is registered on first use;
false: it must exist, and a produce whose schema is not registered fails). Outside Airflow (the
worker) the same connection is read from the same place in the same form, as for Kafka
(kafka/config.py): `AIRFLOW_CONN_SCHEMA_REGISTRY_DEFAULT` (or `AIRFLOW_CONN_<ID>` for
`SCHEMA_REGISTRY_CONN_ID=<id>`), as JSON (`{"conn_type": "http", "host": ..., "login": ..., "password":
..., "extra": {...}}`) or as a URI (`http://user:pass@registry:8081/apis/ccompat/v7?auto_register=false`);
`SCHEMA_REGISTRY_URL` over it. Settings given as `{"file": "/path"}` read a mounted secret. Errors
name the variable and the setting, never a value.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from kafka_workflows.errors import ConfigError
from kafka_workflows.kafka.config import json_object, resolve_settings

DEFAULT_CONN_ID = "schema_registry_default"
AUTO_REGISTER = "auto_register"
# confluent-kafka's registry client waits forever for an answer by default; a registry that accepts
# a connection and never answers once hung a test for its whole 600 s. The connection's extra may set
# its own `timeout`.
DEFAULT_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class RegistrySettings:
    url: str
    client: dict[str, Any] = field(default_factory=dict)  # SchemaRegistryClient settings besides the URL
    auto_register: bool = True

    def client_config(self) -> dict[str, Any]:
        return {"url": self.url, "timeout": DEFAULT_TIMEOUT_S, **self.client}


def _flag(value: Any, where: str) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false", "1", "0", "yes", "no"):
        return value.strip().lower() in ("true", "1", "yes")
    raise ConfigError(f"{where}: {AUTO_REGISTER} must be true or false")


def from_connection(conn: Mapping[str, Any], where: str) -> RegistrySettings:
    """Settings from an Airflow connection's fields (conn_type, host, port, schema, login, password, extra)."""
    host = str(conn.get("host") or "").strip()
    if not host:
        raise ConfigError(f"{where}: the connection has no host (the registry's URL)")
    if "://" not in host:
        scheme = "https" if str(conn.get("conn_type") or "").lower() == "https" else "http"
        host = f"{scheme}://{host}"
    parts = urlsplit(host)
    url = host.rstrip("/")
    if conn.get("port") and parts.port is None:
        url = f"{parts.scheme}://{parts.netloc}:{conn['port']}{parts.path}".rstrip("/")
    if conn.get("schema"):
        url = f"{url}/{str(conn['schema']).strip('/')}"
    extra = conn.get("extra") or {}
    if isinstance(extra, str):
        extra = json_object(extra, f"{where}: extra", "schema registry settings") if extra.strip() else {}
    if not isinstance(extra, dict):
        raise ConfigError(f"{where}: extra must be an object of schema registry settings")
    client = dict(extra)
    auto_register = _flag(client.pop(AUTO_REGISTER, True), where)
    if conn.get("login"):
        client.setdefault("basic.auth.user.info", f"{conn['login']}:{conn.get('password') or ''}")
    client = resolve_settings(client, frozenset(), where)
    return RegistrySettings(url, client, auto_register)


def _from_uri(raw: str, variable: str) -> RegistrySettings:
    try:
        parts = urlsplit(raw)
        port = parts.port
    except ValueError:
        raise ConfigError(f"{variable} is neither JSON nor a connection URI; its value is not shown") from None
    params = dict(parse_qsl(parts.query, keep_blank_values=True))
    extra: Any = params.pop("__extra__", None)
    extra = json_object(extra, f"{variable}: __extra__", "schema registry settings") if extra else params
    scheme = "https" if parts.scheme == "https" else "http"
    host = f"{scheme}://{parts.hostname or ''}" + (f":{port}" if port else "") + parts.path
    return from_connection({"host": host, "login": unquote(parts.username or ""),
                            "password": unquote(parts.password or ""), "extra": extra}, variable)


def settings_from_env(environ: Mapping[str, str] | None = None) -> RegistrySettings | None:
    """The registry's settings outside Airflow (above); None when none are given."""
    env = os.environ if environ is None else environ
    conn_id = env.get("SCHEMA_REGISTRY_CONN_ID", "").strip() or DEFAULT_CONN_ID
    variable = f"AIRFLOW_CONN_{conn_id.upper()}"
    raw = env.get(variable, "").strip()
    settings: RegistrySettings | None = None
    if raw.startswith("{"):
        settings = from_connection(json_object(raw, variable, "an Airflow connection"), variable)
    elif raw:
        settings = _from_uri(raw, variable)
    elif conn_id != DEFAULT_CONN_ID:
        raise ConfigError(f"SCHEMA_REGISTRY_CONN_ID={conn_id}: {variable} is not set")
    url = env.get("SCHEMA_REGISTRY_URL", "").strip()
    if url:
        settings = RegistrySettings(url.rstrip("/"), settings.client if settings else {},
                                    settings.auto_register if settings else True)
    return settings


def client_for(settings: RegistrySettings) -> Any:
    """confluent-kafka's SchemaRegistryClient (it caches schemas and ids) for these settings."""
    try:
        from confluent_kafka.schema_registry import SchemaRegistryClient
    except ImportError as exc:
        raise ConfigError("a spec declares a schema, but confluent-kafka's schema registry extras are not "
                          f"installed ({exc.name}): pip install 'kafka-workflows[schemas]'") from None
    return SchemaRegistryClient(settings.client_config())
