"""A contacts handler that dead-letters some jobs, for the completed_with_failures tests."""

from __future__ import annotations

from kafka_workflows.errors import NonRetryableError
from kafka_workflows.messages import Message
from kw_examples.contacts import import_job

REJECTED_COMPANY = "REJECT ME"


def import_or_reject(message: Message) -> None:
    """Like kw_examples.contacts.import_job, but a job holding a contact of REJECTED_COMPANY can never succeed."""
    rows = message.value.get("rows", []) if isinstance(message.value, dict) else []
    if any(row.get("company") == REJECTED_COMPANY for row in rows):
        raise NonRetryableError(f"job {message.headers.get('kw-job-index')}: company {REJECTED_COMPANY!r} is blocked")
    import_job(message)
