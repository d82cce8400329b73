"""The examples on a real PostgreSQL shared by many processes, named by an Airflow connection URI.

What a scale-out deployment relies on: many worker processes upsert overlapping contacts at once
without a deadlock or a lost row, creating the tables on a fresh database races harmlessly, and a
database restart or a row lock left by a vanished worker costs a failed batch (which the worker
retries), never a stuck process.
"""

from __future__ import annotations

import multiprocessing
import time
from concurrent.futures import ProcessPoolExecutor
from datetime import date

import pytest
from sqlalchemy import text
from sqlalchemy.exc import OperationalError

from kw_examples import contacts, subscriptions
from kw_examples.db import CONN_VAR, engine
from stack.postgres import Postgres
from tests.helpers.contacts import upsert_overlapping

WRITERS, ROUNDS, POOL = 6, 12, 600


def test_many_processes_share_the_contacts_table_without_deadlock_or_lost_rows(
        examples_postgres: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # A fresh database: the writers also race to create the table.
    spawn = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(WRITERS, mp_context=spawn) as pool:
        written = list(pool.map(upsert_overlapping, [examples_postgres] * WRITERS, range(WRITERS),
                                [ROUNDS] * WRITERS, [POOL] * WRITERS))
    assert written == [ROUNDS * 150] * WRITERS  # every process finished: no deadlock aborted a transaction
    monkeypatch.setenv(CONN_VAR, examples_postgres)
    rows = contacts.contacts()
    assert contacts.count() == len(rows) == len({r["email"] for r in rows})
    drawn = {f"c{e}@example.com" for w in range(WRITERS) for e in _drawn(w)}
    assert {r["email"] for r in rows} == drawn, "every email any writer upserted is there, once"
    # Each row is one writer's whole version (one upsert), never a mix of two.
    assert all(r["first_name"] == r["request_id"] for r in rows)

def test_a_lock_held_by_a_vanished_worker_fails_a_batch_instead_of_waiting_forever(
        examples_postgres: str, monkeypatch: pytest.MonkeyPatch) -> None:
    with engine(["SELECT 1"], examples_postgres).connect() as conn:
        assert conn.execute(text("SHOW lock_timeout")).scalar_one() == "30s", "the default bound"
    # The same bound, shortened through the connection's own options so the test need not wait 30 s.
    monkeypatch.setenv(CONN_VAR, f"{examples_postgres}?options=-c%20lock_timeout%3D1s")
    row = {"email": "held@example.com", "first_name": "Ana", "last_name": None, "company": None, "phone": None,
           "lead_score": 1, "notes": None, "request_id": "first", "job_index": 0}
    contacts.upsert([row])
    with engine(["SELECT 1"], examples_postgres).connect() as zombie:  # a worker that stopped mid-transaction
        zombie.execute(text("UPDATE contacts SET notes = 'mine' WHERE email = 'held@example.com'"))
        started = time.monotonic()
        with pytest.raises(OperationalError, match="lock timeout"):
            contacts.upsert([{**row, "request_id": "second"}])
        assert time.monotonic() - started < 20
        zombie.rollback()
    contacts.upsert([{**row, "request_id": "second"}])  # the retry, once the lock is gone
    assert [c["request_id"] for c in contacts.contacts()] == ["second"]


def _drawn(writer: int) -> set[int]:
    import random

    rnd = random.Random(writer)
    return {e for _ in range(ROUNDS) for e in rnd.sample(range(POOL), 150)}


def test_a_database_restart_fails_one_write_then_the_pool_recovers(
        own_postgres: Postgres, monkeypatch: pytest.MonkeyPatch) -> None:
    postgres = own_postgres  # stopped and started again: a server of its own (see the fixture)
    monkeypatch.setenv(CONN_VAR, postgres.url())
    row = {"email": "a@example.com", "first_name": "Ana", "last_name": None, "company": None, "phone": None,
           "lead_score": 1, "notes": None, "request_id": "before", "job_index": 0}
    contacts.upsert([row])
    postgres.stop()
    try:
        started = time.monotonic()
        with pytest.raises(OperationalError) as down:
            contacts.upsert([{**row, "request_id": "while-down"}])
        assert time.monotonic() - started < 60, "a write while the database is down fails, it does not hang"
        assert "password" not in str(down.value).lower()
    finally:
        postgres.start()
    # The pool's connections died with the server: pre-ping replaces them, the next batch goes through.
    contacts.upsert([{**row, "request_id": "after"}])
    assert [(c["email"], c["request_id"]) for c in contacts.contacts()] == [("a@example.com", "after")]


def test_the_subscriptions_example_runs_on_postgres(examples_postgres: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(CONN_VAR, examples_postgres)
    today = date(2026, 11, 30)
    assert subscriptions.seed(today) == subscriptions.SEED_USERS
    assert subscriptions.seed(today) == 0, "seeding twice adds nothing"
    due = subscriptions.due_subscriptions(today.isoformat())
    assert due and all(d["period"] <= today.isoformat() for d in due)
    assert len(subscriptions.all_subscriptions()) == subscriptions.SEED_USERS
    assert subscriptions.renewals() == []
