"""The monitor's parts that need no broker: error fingerprints, dead-letter filters, request progress,
what a workflow's reader sees of shared stores, and a group page that never waits behind a slow broker."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from kafka_workflows.errors import ConfigError
from kafka_workflows.monitor.deadletters import LetterQuery, fingerprint, normalise
from kafka_workflows.monitor.lag import LagMonitor
from kafka_workflows.monitor.requests import progress_of
from kafka_workflows.monitor.service import Monitor, NotFound


def test_a_fingerprint_ignores_numbers_ids_and_quoted_text_but_not_the_error_type() -> None:
    a = "account 1234 failed after 3 tries: 'alice@example.com' rejected (req 9f8e7d6c5b4a)"
    b = "account 77 failed after 12 tries: 'bob@example.org' rejected (req 0a1b2c3d4e5f)"
    assert normalise(a) == normalise(b) == "account N failed after N tries: '…' rejected (req X)"
    assert fingerprint("ValueError", a) == fingerprint("ValueError", b) != fingerprint("KeyError", a)
    assert fingerprint("ValueError", a) != fingerprint("ValueError", "something else entirely")


def test_a_letter_query_matches_its_filters_and_refuses_since_after_until() -> None:
    row = {"group": "g", "topic": "t.g.dlq", "original_topic": "t", "key": "k", "error_type": "E",
           "fingerprint": "f", "at": datetime(2026, 1, 2, tzinfo=UTC).timestamp()}
    assert LetterQuery(groups=frozenset({"g"}), topic="t", key="k", error_type="E", fingerprint="f",
                       since=datetime(2026, 1, 1, tzinfo=UTC)).matches(row)
    assert not LetterQuery(groups=frozenset({"other"})).matches(row)
    assert not LetterQuery(until=datetime(2026, 1, 1, tzinfo=UTC)).matches(row)
    with pytest.raises(ConfigError, match="is after until"):
        LetterQuery(since=datetime(2026, 1, 2, tzinfo=UTC), until=datetime(2026, 1, 1, tzinfo=UTC))


def test_progress_has_percent_rate_and_eta_while_running_and_no_eta_once_terminal() -> None:
    running = progress_of({"total": 100, "completed": 30, "failed": 10, "status": "running",
                           "created_at": "2026-01-01T00:00:00+00:00"}, now=datetime(2026, 1, 1, 0, 0, 40,
                                                                                     tzinfo=UTC).timestamp())
    assert (running["percent"], running["rate"], running["eta"], running["terminal"]) == (40.0, 1.0, 60.0, False)
    done = progress_of({"total": 4, "completed": 4, "failed": 0, "status": "succeeded",
                        "created_at": "2026-01-01T00:00:00+00:00", "completed_at": "2026-01-01T00:00:02+00:00"})
    assert (done["percent"], done["rate"], done["eta"], done["elapsed"]) == (100.0, 2.0, None, 2.0)
    assert progress_of({"total": None, "completed": 0, "failed": 0, "status": "pending"})["percent"] is None


def test_a_status_record_of_the_wrong_shape_loses_its_bad_parts_instead_of_breaking_the_pages() -> None:
    from kafka_workflows.monitor.status import _checked

    assert _checked({"worker": "w"}) is None and _checked(["not", "a", "status"]) is None
    assert _checked({"group": "g", "at": "yesterday"}) is None
    good = {"kind": "blocked", "topic": "t", "partition": 0, "offset": 5}
    status = _checked({"group": "g", "worker": "w", "at": 1, "paused": "yes", "assigned": ["t[0]", 7],
                       "held": [good, {"kind": "blocked", "topic": "t"}, "junk"]})
    assert status is not None
    assert (status["held"], status["assigned"], status["paused"]) == ([good], ["t[0]"], False)
    assert progress_of({"total": "many", "completed": "x", "failed": -3, "status": "running"})["done"] == 0


def test_a_workers_breaker_state_is_shown_only_when_well_formed_and_the_group_shows_the_worst() -> None:
    from kafka_workflows.monitor.status import _checked, breaker_of

    def status(breaker: object) -> dict[str, object]:
        checked = _checked({"group": "g", "worker": "w", "at": 1, "breaker": breaker})
        assert checked is not None
        return checked

    assert status({"state": "exploded"})["breaker"] is None and status("open")["breaker"] is None
    opened = status({"state": "open", "forced": "yes", "reason": "x" * 10_000, "probe_in": "soon"})["breaker"]
    assert opened == {"state": "open", "forced": False, "reason": "x" * 500, "since": None, "probe_in": None}
    live = [status({"state": "closed"}), status({"state": "open", "reason": "r"}), status({"state": "half_open"})]
    assert breaker_of(live)["state"] == "open"  # type: ignore[index]
    assert breaker_of([status(None)]) is None


# -- the monitor's view is filtered by workflow, and never waits behind a slow broker -------------------------

class _Record:
    """A store-topic record as the follower hands it to `apply()`."""

    def __init__(self, key: str, value: dict[str, object]) -> None:
        self._key, self._value = key.encode(), json.dumps(value).encode()

    def key(self) -> bytes:
        return self._key

    def value(self) -> bytes:
        return self._value


@pytest.fixture
def shared_store(tmp_path: Path) -> Iterator[Monitor]:
    """Two workflows whose split steps use the same store, `contacts`, with one request each."""
    spec = (Path(__file__).resolve().parents[2] / "dags" / "workflows" / "contacts_import.yaml").read_text()
    (tmp_path / "a.yaml").write_text(spec)
    (tmp_path / "b.yaml").write_text(spec.replace("name: contacts_import", "name: contacts_other", 1))
    monitor = Monitor({"bootstrap.servers": "127.0.0.1:1", "log_level": 0}, tmp_path)  # never started: no broker needed
    index = monitor.store_index("contacts")
    for dag_id in ("contacts_import", "contacts_other"):
        index.apply(_Record(f"{dag_id}-request", {  # type: ignore[arg-type]
            "request_id": f"{dag_id}-request", "status": "running", "total": 2, "completed": 1, "failed": 0,
            "meta": {"dag_id": dag_id, "run_id": "manual__1"}}))
    yield monitor
    monitor.lag.reader.close()


def test_a_workflows_store_requests_are_only_its_own_when_two_workflows_share_a_store(shared_store: Monitor) -> None:
    for name, other in (("contacts_import", "contacts_other"), ("contacts_other", "contacts_import")):
        page = shared_store.requests(name, "contacts")
        assert [r["request_id"] for r in page["items"]] == [f"{name}-request"] and page["total"] == 1, page
        assert shared_store.request(name, "contacts", f"{name}-request")["request_id"] == f"{name}-request"
        with pytest.raises(NotFound, match=f"{other}-request"):
            shared_store.request(name, "contacts", f"{other}-request")


def test_health_shows_only_the_store_followers_of_the_workflows_the_caller_reads(shared_store: Monitor) -> None:
    shared_store.store_index("private")  # a store of no workflow the caller reads
    names = lambda allowed: {f["name"] for f in shared_store.describe(allowed)["followers"]}  # noqa: E731
    assert names({"contacts_import"}) == {"status", "audit", "dead-letters", "store-contacts"}
    assert names(set()) == {"status", "audit", "dead-letters"}
    assert "store-private" not in names({"contacts_import", "contacts_other"})


def test_a_group_page_gets_the_last_known_lag_at_once_while_another_broker_round_is_slow() -> None:
    lag = LagMonitor({"bootstrap.servers": "127.0.0.1:1", "log_level": 0}, dict, interval=3600)
    known = {"group": "g", "state": "stable", "members": [], "partitions": [], "lag": 7, "error": None, "at": 1.0}
    lag._keep("g", known)
    answers: list[dict[str, object]] = []
    with lag._admin_lock:  # a refresh stuck on a paused broker holds the admin client
        page = threading.Thread(target=lambda: answers.append(lag.fresh("g", ["t"])), daemon=True)
        page.start()
        page.join(30)
        assert not page.is_alive(), "the page waited for the slow broker round"
    assert answers == [{**known, "error": "the broker is slow to answer"}]
    unknown = threading.Thread(target=lambda: answers.append(lag.fresh("never-seen", ["t"])), daemon=True)
    with lag._admin_lock:
        unknown.start()
        unknown.join(30)
        assert not unknown.is_alive()
    assert answers[-1]["state"] == "unknown" and answers[-1]["partitions"] == []
    lag.reader.close()


def test_a_group_page_gets_the_last_known_lag_when_the_broker_does_not_answer() -> None:
    lag = LagMonitor({"bootstrap.servers": "127.0.0.1:1", "log_level": 0}, dict, interval=3600)
    known = {"group": "g", "state": "stable", "members": [], "partitions": [], "lag": 7, "error": None, "at": 1.0}
    lag._keep("g", known)
    answer = lag.fresh("g", ["t"])  # no broker listens there: every call times out
    assert answer["lag"] == 7 and "did not answer" in answer["error"], answer
    assert lag.fresh("other", ["t"])["state"] == "unknown"
    lag.reader.close()


def test_the_run_view_shows_a_pipelined_splits_rows_while_pending_and_why_a_request_was_aborted(
        shared_store: Monitor) -> None:
    from kafka_workflows.messages import request_id_for

    index = shared_store.store_index("contacts")
    pending_id, aborted_id = (request_id_for("contacts_import", "split", run) for run in ("manual__2", "manual__3"))
    index.apply(_Record(pending_id, {  # type: ignore[arg-type]  # what the store writes after two chunks
        "request_id": pending_id, "status": "pending", "total": None, "completed": 7, "failed": 0, "meta": None,
        "split": {"jobs": 1000, "rows": 500_123}}))
    index.apply(_Record(aborted_id, {  # type: ignore[arg-type]
        "request_id": aborted_id, "status": "aborted", "total": None, "completed": 3, "failed": 0, "meta": None,
        "split": {"jobs": 5, "rows": 12}, "error": "MalformedCsvError: line 54 is not UTF-8 text"}))
    [pending] = shared_store.run("contacts_import", "manual__2")["requests"]
    assert (pending["status"], pending["split"], pending["progress"]["total"], pending["error"]) == (
        "pending", {"jobs": 1000, "rows": 500_123}, None, None)
    [aborted] = shared_store.run("contacts_import", "manual__3")["requests"]
    assert (aborted["status"], aborted["error"], aborted["progress"]["terminal"]) == (
        "aborted", "MalformedCsvError: line 54 is not UTF-8 text", True)
