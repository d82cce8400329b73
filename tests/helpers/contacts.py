"""Contacts handlers for the tests: one that dead-letters some jobs (completed_with_failures), one slow."""

from __future__ import annotations

import time
from typing import Any

from kafka_workflows.errors import BatchItemFailed, NonRetryableError
from kafka_workflows.handlers import batch_handler
from kafka_workflows.messages import Message, MessageBatch
from kw_examples.contacts import job_rows, upsert

REJECTED_COMPANY = "REJECT ME"


@batch_handler
def import_or_reject(messages: MessageBatch) -> None:
    """Like kw_examples.contacts.import_jobs, but a job holding a contact of REJECTED_COMPANY can never succeed."""
    params: list[dict[str, Any]] = []
    for i, message in enumerate(messages):
        rows = message.value.get("rows", []) if isinstance(message.value, dict) else []
        if any(row.get("company") == REJECTED_COMPANY for row in rows):
            upsert(params)
            raise BatchItemFailed(i) from NonRetryableError(
                f"job {message.headers.get('kw-job-index')}: company {REJECTED_COMPANY!r} is blocked")
        params += job_rows(message)
    upsert(params)


def import_slowly(message: Message) -> None:
    """kw_examples.contacts.import_jobs one job at a time, 0.2 s a job: the chaos test's kills land mid-import."""
    time.sleep(0.2)
    upsert(job_rows(message))


def upsert_overlapping(url: str, writer: int, rounds: int, pool: int = 600, size: int = 150) -> int:
    """One of many processes sharing a database: `rounds` transactions, each upserting `size`
    contacts drawn from the same `pool` of emails as every other writer, in random order.
    Every row it writes says who wrote it in first_name and request_id. Returns the rows written."""
    import os
    import random

    os.environ["AIRFLOW_CONN_KW_EXAMPLES_DB"] = url
    rnd = random.Random(writer)
    written = 0
    for n in range(rounds):
        emails = rnd.sample(range(pool), size)
        upsert([{"email": f"c{e}@example.com", "first_name": f"writer-{writer}", "last_name": None,
                 "company": None, "phone": None, "lead_score": n, "notes": None,
                 "request_id": f"writer-{writer}", "job_index": n} for e in emails])
        written += size
    return written
