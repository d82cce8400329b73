"""The examples' database: Postgres named by an Airflow connection, or an embedded SQLite file.

Which database, first match wins:

- `AIRFLOW_CONN_KW_EXAMPLES_DB`: the Airflow connection `kw_examples_db`, in either form Airflow
  reads from the environment: a URI (`postgres://user:password@host:5432/database?sslmode=require`,
  login and password percent-encoded) or JSON (`{"conn_type": "postgres", "host": ..., "login": ...,
  "password": ..., "port": ..., "schema": "database", "extra": {...}}`). We parse it ourselves,
  the way Airflow does, because the companion worker has no Airflow; the DAG's tasks and every
  worker on every machine then share one database. Only `postgres` is supported.
- `KW_EXAMPLES_DB`: a SQLite file, the embedded default (/tmp/kafka-workflows/examples.sqlite),
  for one machine: WAL lets its workers and Airflow's tasks write at once.

Statements are written once in the SQL both accept (`:name` parameters, `ON CONFLICT` upserts).
An engine per database and process is kept (a pool; a dead connection is replaced, not reused)
and tables are created on its first use. Errors about the connection name the variable and
what is wrong with it, never its value (it holds a password).
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import URL, Connection, Engine, create_engine, event, make_url, text
from sqlalchemy.exc import ArgumentError

CONN_VAR = "AIRFLOW_CONN_KW_EXAMPLES_DB"
SQLITE_VAR = "KW_EXAMPLES_DB"
DEFAULT_DB = "/tmp/kafka-workflows/examples.sqlite"
_POSTGRES_TYPES = {"postgres", "postgresql"}
_EXAMPLE = "postgres://user:password@host:5432/database"

# Serializes CREATE TABLE IF NOT EXISTS across processes: two racing creators can both pass the
# IF NOT EXISTS check, and the second then fails on Postgres's catalog unique index.
_SCHEMA_LOCK = 7_406_251_118


class ExamplesDbError(ValueError):
    """The examples' database is named wrongly; the message never quotes the variable's value."""


def database_url(env: Mapping[str, str] | None = None) -> URL:
    """The SQLAlchemy URL of the examples' database, from the environment (see the module docstring)."""
    env = os.environ if env is None else env
    if env.get(CONN_VAR):
        return _from_airflow_connection(env[CONN_VAR])
    return sqlite_url(Path(env.get(SQLITE_VAR) or DEFAULT_DB))


def sqlite_url(path: Path) -> URL:
    return URL.create("sqlite", database=str(path))


def _from_airflow_connection(value: str) -> URL:
    if value.lstrip().startswith(("{", "[")):
        return _from_json(value)
    try:
        url = make_url(value.strip())
    except ArgumentError:
        raise ExamplesDbError(f"{CONN_VAR}: not an Airflow connection URI or JSON (expected {_EXAMPLE})") from None
    conn_type = url.drivername.split("+")[0].replace("-", "_")
    if conn_type not in _POSTGRES_TYPES:
        raise ExamplesDbError(f"{CONN_VAR}: connection type {conn_type!r} is not supported; use postgres "
                              f"({_EXAMPLE}), or {SQLITE_VAR} for a SQLite file")
    if not url.host or not url.database:
        raise ExamplesDbError(f"{CONN_VAR}: the URI needs a host and a database ({_EXAMPLE})")
    return url.set(drivername="postgresql+psycopg")


def _from_json(value: str) -> URL:
    try:
        conn = json.loads(value)
    except ValueError:
        raise ExamplesDbError(f"{CONN_VAR}: not valid JSON (expected an Airflow connection object)") from None
    if not isinstance(conn, dict):
        raise ExamplesDbError(f"{CONN_VAR}: the JSON must be an object with conn_type, host, login, password, "
                              f"port, schema, extra")
    if str(conn.get("conn_type", "")).replace("-", "_") not in _POSTGRES_TYPES:
        raise ExamplesDbError(f"{CONN_VAR}: conn_type must be 'postgres' ({SQLITE_VAR} names a SQLite file)")
    extra = conn.get("extra") or {}
    if isinstance(extra, str):
        try:
            extra = json.loads(extra)
        except ValueError:
            raise ExamplesDbError(f"{CONN_VAR}: extra is not a JSON object") from None
    if not isinstance(extra, dict):
        raise ExamplesDbError(f"{CONN_VAR}: extra must be a JSON object")
    for field, meaning in (("host", "the server"), ("schema", "the database")):
        if not isinstance(conn.get(field), str) or not conn[field]:
            raise ExamplesDbError(f"{CONN_VAR}: {field} is required ({meaning})")
    port = conn.get("port")
    if port is not None and (isinstance(port, bool) or not str(port).isdigit()):
        raise ExamplesDbError(f"{CONN_VAR}: port must be an integer")
    return URL.create("postgresql+psycopg", username=conn.get("login") or None, password=conn.get("password") or None,
                      host=conn["host"], port=int(port) if port is not None else None, database=conn["schema"],
                      query={str(k): str(v) for k, v in extra.items()})


_engines: dict[tuple[str, tuple[str, ...]], Engine] = {}
_lock = threading.Lock()


def _target_url(target: str | Path | None) -> URL:
    if target is None:
        return database_url()
    if isinstance(target, Path) or "://" not in target:
        return sqlite_url(Path(target))
    return _from_airflow_connection(target)


def engine(schema: Sequence[str], target: str | Path | None = None) -> Engine:
    """The engine of `target` (a SQLite path, an Airflow connection URI; default: the environment's)
    with `schema` (CREATE ... IF NOT EXISTS statements) created."""
    url = _target_url(target)
    key = (url.render_as_string(hide_password=False), tuple(schema))
    with _lock:
        found = _engines.get(key)
        if found is None:
            found = _engines[key] = _create(url, schema)
        return found


def _create(url: URL, schema: Sequence[str]) -> Engine:
    if url.get_backend_name() == "sqlite":
        assert url.database is not None
        Path(url.database).parent.mkdir(parents=True, exist_ok=True)
        created = create_engine(url, connect_args={"timeout": 60})
        event.listen(created, "connect", _sqlite_wal)
    else:
        # Nothing waits forever: connecting gives up after 10 s, and a row lock held by a worker whose
        # machine vanished (its session lingers until TCP notices) fails the batch after 30 s, which
        # the worker retries. pre_ping: a connection the server dropped is replaced, not used.
        connect_args: dict[str, Any] = {"connect_timeout": 10}
        if "options" not in url.query:
            connect_args["options"] = "-c lock_timeout=30s"
        created = create_engine(url, pool_pre_ping=True, connect_args=connect_args)
    try:
        with created.begin() as conn:
            if created.dialect.name == "postgresql":
                conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _SCHEMA_LOCK})
            for statement in schema:
                conn.execute(text(statement))
    except BaseException:
        created.dispose()  # not kept: the next call tries again
        raise
    return created


def _sqlite_wal(dbapi_connection: Any, _record: Any) -> None:
    dbapi_connection.execute("PRAGMA journal_mode=WAL")


@contextmanager
def begin(schema: Sequence[str], target: str | Path | None = None) -> Iterator[Connection]:
    """One transaction on the examples' database: committed when the block ends, rolled back on error."""
    with engine(schema, target).begin() as conn:
        yield conn


def _forget_engines_after_fork() -> None:
    """A forked child must not share its parent's pooled connections (SQLAlchemy's pooling rules)."""
    global _lock
    _lock = threading.Lock()  # another thread may have held it at the fork
    for known in _engines.values():
        known.dispose(close=False)
    _engines.clear()


os.register_at_fork(after_in_child=_forget_engines_after_fork)
