"""split.jobs: a request outside the store's limits is refused before anything is produced (no broker)."""

from __future__ import annotations

import pytest

from kafka_workflows.split.jobs import JobsError, produce_jobs

NOWHERE = {"bootstrap.servers": "127.0.0.1:1", "socket.timeout.ms": 1000}


@pytest.mark.parametrize(("request_id", "total", "meta", "fragment"), [
    ("", 3, None, "request_id is empty"),
    ("r" * 600, 3, None, "request_id is 600 bytes"),
    ("r", 10**13, None, "total in 0..10,000,000 (max_total), got an integer of 14 digits"),
    ("r", 3, {"pad": "y" * 70_000}, "more than the 65,536 allowed (max_command_bytes)"),
])
def test_a_request_the_store_would_refuse_is_refused_before_producing(
        request_id: str, total: int, meta: dict | None, fragment: str) -> None:
    with pytest.raises(JobsError, match="refused before producing") as caught:
        produce_jobs(NOWHERE, "kw-jobs.t", "jobs", request_id, iter(()), "contacts", total, meta=meta)
    assert fragment in str(caught.value) and "rrrr" not in str(caught.value)
