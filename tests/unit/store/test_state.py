"""store.state.RequestState: the accounting rules, as pure transitions, without a broker."""

from __future__ import annotations

import pytest

from kafka_workflows.store.commands import ABORT, COMPLETE, FAIL, INIT, PROGRESS, Command
from kafka_workflows.store.errors import StoreError
from kafka_workflows.store.indexset import IndexSet
from kafka_workflows.store.state import (
    ABORTED,
    BECAME_TERMINAL,
    CHANGED,
    COMPLETED_WITH_FAILURES,
    CORRUPT,
    DUPLICATE,
    IGNORED,
    PENDING,
    REJECTED,
    RUNNING,
    SUCCEEDED,
    TERMINAL_STATUSES,
    RequestState,
)


def init(total: int) -> Command:
    return Command(INIT, "r", total=total)


def complete(job: int) -> Command:
    return Command(COMPLETE, "r", job=job)


def fail(job: int, reason: str = "bad row") -> Command:
    return Command(FAIL, "r", job=job, reason=reason)


def test_init_then_every_job_completes_succeeds_once() -> None:
    state = RequestState.new("r", 1.0)
    assert state.status == PENDING
    assert state.apply(init(3), 2.0)[0] == CHANGED and state.status == RUNNING
    assert [state.apply(complete(j), 3.0)[0] for j in (0, 1)] == [CHANGED, CHANGED]
    assert state.apply(complete(2), 4.0)[0] == BECAME_TERMINAL
    assert (state.status, state.completed_ts) == (SUCCEEDED, 4.0)
    assert state.apply(complete(2), 5.0)[0] == IGNORED  # a terminal value is final


def test_a_failed_job_ends_the_request_completed_with_failures_and_keeps_its_reason() -> None:
    state = RequestState.new("r", 0.0)
    state.apply(init(2), 0.0)
    state.apply(complete(0), 0.0)
    assert state.apply(fail(1, "row 7: no email"), 1.0)[0] == BECAME_TERMINAL
    value = state.to_value()
    assert (value["status"], value["completed"], value["failed"]) == (COMPLETED_WITH_FAILURES, 1, 1)
    assert value["failure_reasons"] == {"1": "row 7: no email"} and value["failed_jobs"] == [[1, 1]]


def test_duplicates_count_nothing_and_the_first_outcome_wins() -> None:
    state = RequestState.new("r", 0.0)
    state.apply(init(5), 0.0)
    state.apply(complete(1), 0.0)
    assert state.apply(complete(1), 0.0)[0] == DUPLICATE
    outcome, why = state.apply(fail(1), 0.0)
    assert outcome == REJECTED and "first outcome wins" in why
    assert (len(state.completed), len(state.failed), state.duplicates, state.rejected) == (1, 0, 1, 1)


def test_commands_before_init_are_kept_and_out_of_range_ones_dropped_at_init() -> None:
    state = RequestState.new("r", 0.0)
    for job in (0, 4, 9):
        state.apply(complete(job), 0.0)
    assert (state.status, state.total) == (PENDING, None)
    outcome, why = state.apply(init(5), 1.0)
    assert outcome == CHANGED and "1 earlier job index(es) >= total dropped" in why
    assert (state.completed.ranges(), state.rejected) == ([[0, 0], [4, 4]], 1)


def test_index_out_of_range_and_a_second_init_with_another_total_are_rejected() -> None:
    state = RequestState.new("r", 0.0)
    state.apply(init(2), 0.0)
    assert state.apply(complete(2), 0.0)[0] == REJECTED
    assert state.apply(init(2), 0.0)[0] == IGNORED
    assert state.apply(init(3), 0.0)[0] == REJECTED and state.total == 2


def test_an_empty_request_is_terminal_at_init() -> None:
    state = RequestState.new("r", 0.0)
    assert state.apply(init(0), 1.0)[0] == BECAME_TERMINAL and state.status == SUCCEEDED


def test_the_store_value_round_trips() -> None:
    state = RequestState.new("r", 10.0)
    state.apply(Command(INIT, "r", total=4, meta={"rows": 40}), 11.0)
    state.apply(complete(0), 12.0)
    state.apply(fail(3, "x"), 13.0)
    state.apply(complete(0), 14.0)
    value = state.to_value()
    assert RequestState.from_value(value).to_value() == value
    assert {"request_id", "total", "completed", "failed", "status", "created_at", "updated_at"} <= value.keys()


# -- restore: a value that breaks the contract is a clear StoreError, never a hang or a crash ---------

def _good() -> dict:
    state = RequestState.new("r", 1.0)
    state.apply(init(10), 2.0)
    state.apply(complete(3), 3.0)
    return state.to_value()


@pytest.mark.parametrize("change", [
    {"request_id": ""}, {"request_id": "x" * 600}, {"total": 10**13}, {"total": -1}, {"total": "3"},
    {"completed_jobs": [[0, 10**13]]}, {"completed_jobs": [[5, 5], [0, 1]]}, {"completed_jobs": [[0, 20]]},
    {"completed_jobs": [["1" * 5000, 2]]}, {"completed_jobs": {"format": "roaring"}}, {"completed": 7},
    {"failure_reasons": {"not-an-index": "x"}}, {"created_at": "soon"}, {"created_at": 5},
    {"duplicates": -1}, {"rejected": 10**30}, {"meta": [1]},
])
def test_a_value_that_breaks_the_contract_does_not_restore(change: dict) -> None:
    with pytest.raises(StoreError, match="a store value"):
        RequestState.from_value({**_good(), **change})


def test_a_good_value_round_trips() -> None:
    again = RequestState.from_value(_good())
    assert (again.total, again.completed.ranges(), again.status) == (10, [[3, 3]], RUNNING)


def test_a_corrupt_request_is_terminal_ignores_commands_and_round_trips() -> None:
    state = RequestState.corrupted("r", "the stored value could not be restored: store[0]@4: not JSON", 5.0)
    assert state.status == CORRUPT and CORRUPT in TERMINAL_STATUSES and state.terminal
    assert state.apply(complete(1), 6.0)[0] == IGNORED
    value = state.to_value()
    assert (value["status"], value["completed"], value["total"]) == (CORRUPT, 0, None)
    assert "could not be restored" in value["error"]
    again = RequestState.from_value(value)
    assert again.status == CORRUPT and again.corrupt == state.corrupt and again.completed_ts == 5.0


def test_index_sets_out_of_order_merge_without_walking_each_index() -> None:
    merged = IndexSet([[5, 9], [0, 3], [4, 4], [8, 10**12], [10**12 + 5, 10**12 + 5]])
    assert merged.ranges() == [[0, 10**12], [10**12 + 5, 10**12 + 5]] and len(merged) == 10**12 + 2


def progress(jobs: int, rows: int) -> Command:
    return Command(PROGRESS, "r", jobs=jobs, rows=rows)


def test_a_pipelined_split_stays_pending_until_init_whatever_its_jobs_report() -> None:
    state = RequestState.new("r", 1.0)
    assert state.apply(progress(2, 1000), 2.0)[0] == CHANGED
    for job in (0, 1, 0):  # the workers handle the committed chunk, one at least twice
        state.apply(complete(job), 3.0)
    assert state.apply(progress(1, 500), 3.5)[0] == IGNORED  # an older progress never goes back
    value = state.to_value()
    assert (value["status"], value["total"], value["completed"], value["duplicates"]) == (PENDING, None, 2, 1)
    assert value["split"] == {"jobs": 2, "rows": 1000}
    assert RequestState.from_value(value).to_value() == value
    state.apply(progress(3, 1400), 4.0)
    assert state.apply(init(3), 4.0)[0] == CHANGED and state.status == RUNNING
    assert state.apply(complete(2), 5.0)[0] == BECAME_TERMINAL
    assert (state.status, len(state.completed)) == (SUCCEEDED, 3)


def test_an_abort_before_init_ends_the_request_aborted_and_one_after_init_is_rejected() -> None:
    state = RequestState.new("r", 1.0)
    state.apply(progress(2, 100), 2.0)
    state.apply(complete(0), 2.5)
    assert state.apply(Command(ABORT, "r", reason="malformed CSV at line 7"), 3.0)[0] == BECAME_TERMINAL
    assert state.status == ABORTED and ABORTED in TERMINAL_STATUSES and state.terminal
    assert state.apply(init(2), 4.0)[0] == IGNORED and state.apply(complete(1), 4.0)[0] == IGNORED
    value = state.to_value()
    assert (value["status"], value["error"], value["total"], value["completed"]) == (
        ABORTED, "malformed CSV at line 7", None, 1)
    again = RequestState.from_value(value)
    assert again.status == ABORTED and again.completed_ts == 3.0 and again.to_value() == value

    sealed = RequestState.new("r", 1.0)
    sealed.apply(init(2), 2.0)
    assert sealed.apply(Command(ABORT, "r", reason="late"), 3.0)[0] == REJECTED
    assert sealed.status == RUNNING and sealed.rejected == 1
