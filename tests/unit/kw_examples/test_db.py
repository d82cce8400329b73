"""Naming the examples' database: an Airflow connection (URI or JSON) or a SQLite file; bad ones named, never quoted."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from kw_examples import contacts, subscriptions
from kw_examples.db import CONN_VAR, DEFAULT_DB, SQLITE_VAR, ExamplesDbError, database_url

SECRET = "s3cr%40t-PASSWORD"


def test_sqlite_is_the_default_and_kw_examples_db_moves_it(tmp_path: Path) -> None:
    assert database_url({}).database == DEFAULT_DB
    url = database_url({SQLITE_VAR: str(tmp_path / "x.sqlite")})
    assert (url.get_backend_name(), url.database) == ("sqlite", str(tmp_path / "x.sqlite"))


@pytest.mark.parametrize("scheme", ["postgres", "postgresql"])
def test_an_airflow_uri_names_postgres_with_its_parts_decoded(scheme: str, tmp_path: Path) -> None:
    url = database_url({CONN_VAR: f"{scheme}://kw%20user:{SECRET}@db.internal:6432/contacts?sslmode=require",
                        SQLITE_VAR: str(tmp_path / "ignored.sqlite")})
    assert url.drivername == "postgresql+psycopg"
    assert (url.username, url.password, url.host, url.port, url.database) == (
        "kw user", "s3cr@t-PASSWORD", "db.internal", 6432, "contacts")
    assert dict(url.query) == {"sslmode": "require"}


def test_the_json_form_airflow_accepts_too() -> None:
    url = database_url({CONN_VAR: json.dumps({
        "conn_type": "postgres", "host": "pg", "login": "airflow", "password": "pw", "port": 5432,
        "schema": "kw_examples", "extra": {"sslmode": "disable"}})})
    assert (url.drivername, url.username, url.password, url.host, url.port, url.database) == (
        "postgresql+psycopg", "airflow", "pw", "pg", 5432, "kw_examples")
    assert dict(url.query) == {"sslmode": "disable"}


@pytest.mark.parametrize(("value", "named"), [
    (f"mysql://root:{SECRET}@db/contacts", "connection type 'mysql' is not supported"),
    (f"not a uri {SECRET}", "not an Airflow connection URI or JSON"),
    (f"postgres://root:{SECRET}@db", "needs a host and a database"),
    (f"postgres://root:{SECRET}@/contacts", "needs a host and a database"),
    ('{"conn_type": "postgres", "host": "db", "password": "' + SECRET + '"', "not valid JSON"),
    ('["' + SECRET + '"]', "must be an object"),
    ('{"conn_type": "mysql", "host": "db", "schema": "c", "password": "' + SECRET + '"}', "conn_type must be"),
    ('{"conn_type": "postgres", "schema": "c", "password": "' + SECRET + '"}', "host is required"),
    ('{"conn_type": "postgres", "host": "db", "password": "' + SECRET + '"}', "schema is required"),
    ('{"conn_type": "postgres", "host": "db", "schema": "c", "port": "54x", "password": "' + SECRET + '"}',
     "port must be an integer"),
    ('{"conn_type": "postgres", "host": "db", "schema": "c", "extra": "{' + SECRET + '"}', "extra is not"),
])
def test_a_bad_connection_is_named_without_quoting_it(value: str, named: str) -> None:
    with pytest.raises(ExamplesDbError) as caught:
        database_url({CONN_VAR: value})
    message = str(caught.value)
    assert message.startswith(f"{CONN_VAR}: ") and named in message
    assert "s3cr" not in message and "PASSWORD" not in message


def test_the_examples_share_one_sqlite_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Both examples' tables live in the same database, created on first use, upserts idempotent."""
    monkeypatch.setenv(SQLITE_VAR, str(tmp_path / "examples.sqlite"))
    monkeypatch.delenv(CONN_VAR, raising=False)
    row = {"email": "a@example.com", "first_name": "Ana", "last_name": None, "company": None, "phone": None,
           "lead_score": 7, "notes": "x", "request_id": "r1", "job_index": 0}
    contacts.upsert([row, {**row, "email": "b@example.com"}])
    contacts.upsert([{**row, "first_name": "Anna", "request_id": "r2"}])
    assert [(c["email"], c["first_name"], c["request_id"]) for c in contacts.contacts()] == [
        ("a@example.com", "Anna", "r2"), ("b@example.com", "Ana", "r1")]
    assert subscriptions.seed(__import__("datetime").date(2026, 11, 30)) == subscriptions.SEED_USERS
    assert len(subscriptions.all_subscriptions()) == subscriptions.SEED_USERS
    assert (tmp_path / "examples.sqlite").exists() and contacts.count() == 2
