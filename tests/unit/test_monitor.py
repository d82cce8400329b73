"""The monitor's pure parts: error fingerprints, dead-letter filters, request progress."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from kafka_workflows.errors import ConfigError
from kafka_workflows.monitor.deadletters import LetterQuery, fingerprint, normalise
from kafka_workflows.monitor.requests import progress_of


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
