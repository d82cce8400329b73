"""The article's contacts import (pattern 6): a CSV of contacts split into jobs, upserted by workers.

`contacts_import` (dags/workflows/contacts_import.yaml) validates the CSV against `SCHEMA` and produces one job
per `rows_per_job` valid rows; the worker runs `import_jobs` on batches of them and reports each
job to the store:

    kafka-workflows worker --topic contacts-import-jobs --group contacts-importers \
        --handler kw_examples.contacts.import_jobs --store contacts
    kafka-workflows store-processor --store contacts

Database (kw_examples.db): Postgres named by the Airflow connection AIRFLOW_CONN_KW_EXAMPLES_DB,
shared by workers on many machines, or else SQLite at KW_EXAMPLES_DB. Table `contacts`, one row
per email: importing a job twice (a redelivery) changes nothing.
"""

from __future__ import annotations

import csv
import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import text

from kafka_workflows.errors import BatchItemFailed, NonRetryableError
from kafka_workflows.handlers import batch_handler
from kafka_workflows.messages import Message, MessageBatch
from kafka_workflows.sources.csv_source import Column, Schema
from kw_examples.db import begin

JOBS_TOPIC = "contacts-import-jobs"
WORKER_GROUP = "contacts-importers"
STORE = "contacts"
FIELDS = ("email", "first_name", "last_name", "company", "phone", "lead_score", "notes")

SCHEMA = Schema.of(
    Column("email", "email", required=True),
    Column("first_name", "string", required=True, max_length=100),
    Column("last_name", "string", max_length=100),
    Column("company", "string", max_length=200),
    Column("phone", "string", max_length=40),
    Column("lead_score", "int"),
    Column("notes", "string", max_length=2000),
)


_TABLE = ["""
    CREATE TABLE IF NOT EXISTS contacts (
        email TEXT PRIMARY KEY, first_name TEXT NOT NULL, last_name TEXT, company TEXT, phone TEXT,
        lead_score INTEGER, notes TEXT, request_id TEXT, job_index INTEGER,
        imported_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP)"""]

_COLUMNS = (*FIELDS, "request_id", "job_index")
_UPSERT = text(f"""
    INSERT INTO contacts ({", ".join(_COLUMNS)}) VALUES ({", ".join(f":{c}" for c in _COLUMNS)})
    ON CONFLICT (email) DO UPDATE SET {", ".join(f"{c} = excluded.{c}" for c in _COLUMNS[1:])}""")


def job_rows(message: Message) -> list[dict[str, Any]]:
    """The upsert parameters of one job; NonRetryableError when it is not the shape the split produces."""
    value = message.value
    rows = value.get("rows") if isinstance(value, dict) else None
    if not isinstance(rows, list) or not all(isinstance(r, dict) and r.get("email") for r in rows):
        raise NonRetryableError(f"{message.where}: not a contacts job (expected {{'rows': [{{'email': ...}}]}})")
    job = message.headers.get("kw-job-index")
    job_index = int(job) if job is not None else None
    return [{**{f: r.get(f) for f in FIELDS}, "request_id": message.request_id, "job_index": job_index}
            for r in rows]


def upsert(params: list[dict[str, Any]], db: str | Path | None = None) -> None:
    """Upsert contacts by email in one transaction: a redelivered job changes nothing.

    Rows are written in email order (stable, so a later duplicate still wins): two workers
    upserting overlapping contacts on Postgres then lock rows in the same order, never in a cycle.
    """
    if not params:
        return
    with begin(_TABLE, db) as conn:
        conn.execute(_UPSERT, sorted(params, key=lambda row: row["email"]))


@batch_handler
def import_jobs(messages: MessageBatch) -> None:
    """Worker handler: upsert the contacts of a batch of jobs in one database transaction.

    A job that can never succeed (not the shape the split produces) does not block the
    partition: the jobs before it are written, and BatchItemFailed names it, so it goes to the
    dead-letter topic (the store counts it as failed) and the jobs after it come again.
    """
    params: list[dict[str, Any]] = []
    for i, message in enumerate(messages):
        try:
            params += job_rows(message)
        except NonRetryableError as exc:
            upsert(params)
            raise BatchItemFailed(i) from exc
    upsert(params)


def contacts(db: str | Path | None = None) -> list[dict[str, Any]]:
    """Every imported contact, ordered by email."""
    with begin(_TABLE, db) as conn:
        rows = conn.execute(text(f"SELECT {', '.join(_COLUMNS)} FROM contacts ORDER BY email"))
        return [dict(r) for r in rows.mappings()]


def count(db: str | Path | None = None) -> int:
    with begin(_TABLE, db) as conn:
        return int(conn.execute(text("SELECT count(*) FROM contacts")).scalar_one())


# -- test data -----------------------------------------------------------------------------
@dataclass
class GeneratedCsv:
    """What `write_csv` wrote: the valid contacts by email (typed as the import stores them)."""

    path: Path
    rows: int
    valid: dict[str, dict[str, Any]] = field(default_factory=dict)
    bad_rows: list[int] = field(default_factory=list)  # data-row numbers (from 1)

    @property
    def bad(self) -> int:
        return len(self.bad_rows)


_FIRST = ["Ana", "José", "Zoë", "Li", "Øystein", "Mary-Jane", "O'Brien", "Chloé"]
_LAST = ["Smith", "Núñez", "van der Berg", "Kowalski", "D'Angelo", "Müller"]
_COMPANIES = ["Acme, Inc.", "Wix.com Ltd.", 'The "Best" Co', "Globex", "", "Initech; Ltd"]


def generated_rows(rows: int, *, seed: int = 7, bad_every: int = 37, missing_every: int = 53,
                   prefix: str = "contact") -> Iterator[tuple[list[str], dict[str, Any] | None]]:
    """(CSV fields, the contact as imported or None when the row is bad) for `rows` rows.

    Every `bad_every`-th row has an invalid email, every `missing_every`-th lacks its first name;
    notes hold commas, quotes and newlines. Emails are unique, so valid rows == contacts.
    """
    rnd = random.Random(seed)
    for n in range(1, rows + 1):
        email = f"{prefix}{n}@example.com"
        first, last, company = rnd.choice(_FIRST), rnd.choice(_LAST), rnd.choice(_COMPANIES)
        phone = f"+1 555 {n % 10000:04d}" if n % 3 else ""
        score = str(rnd.randint(0, 100)) if n % 4 else ""
        notes = ["", f"met at booth {n % 17}, follow up", f'said "call me"\nsecond line {n}',
                 "multi\r\nline, with CRLF"][n % 4]
        bad = False
        if bad_every and n % bad_every == 0:
            email = f"{prefix}{n}(at)example.com" if n % 2 else f"{prefix}{n}@"
            bad = True
        if missing_every and n % missing_every == 0:
            first = "   "
            bad = True
        display_email = email.upper() if n % 11 == 0 and not bad else email  # emails are case-insensitive
        fields = [display_email, first, last, company, phone, score, notes]
        contact = None if bad else {
            "email": email.lower(), "first_name": first, "last_name": last, "company": company or None,
            "phone": phone or None, "lead_score": int(score) if score else None, "notes": notes or None}
        yield fields, contact


def write_csv(path: Path, rows: int, *, bom: bool = True, crlf: bool = True, **options: Any) -> GeneratedCsv:
    """Write a contacts CSV of `rows` data rows (streamed, any size); see `generated_rows` for the bad ones."""
    result = GeneratedCsv(path, rows)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8-sig" if bom else "utf-8", newline="") as out:
        writer = csv.writer(out, lineterminator="\r\n" if crlf else "\n")
        writer.writerow(["Email", "First_Name", "last_name", "Company", "Phone", "lead_score", "notes"])
        for n, (fields, contact) in enumerate(generated_rows(rows, **options), start=1):
            writer.writerow(fields)
            if contact is None:
                result.bad_rows.append(n)
            else:
                result.valid[contact["email"]] = contact
    return result
