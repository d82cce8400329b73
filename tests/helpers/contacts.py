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
    params: list[tuple[Any, ...]] = []
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
