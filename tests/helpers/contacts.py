"""A contacts handler that dead-letters some jobs, for the completed_with_failures tests."""

from __future__ import annotations

from typing import Any

from kafka_workflows.errors import BatchItemFailed, NonRetryableError
from kafka_workflows.handlers import batch_handler
from kafka_workflows.messages import MessageBatch
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
