"""The incident detector (ops/incidents.py): pure, times passed in."""

from __future__ import annotations

import pytest

from kafka_workflows.ops.control import SECRET_ENV, sign
from kafka_workflows.ops.incidents import IncidentPolicy, IncidentWatch, parse_incident


def hold(offset: int = 7, since: float = 1000.0, kind: str = "blocked") -> dict[str, object]:
    return {"kind": kind, "topic": "t", "partition": 1, "offset": offset, "key": "user-9", "failures": 4,
            "error": "ConnectionError: provider down", "since": since}


def test_a_hold_past_the_threshold_is_one_incident_naming_its_message_and_a_new_hold_is_another() -> None:
    watch = IncidentWatch(IncidentPolicy(held_after=60), "g", "w1")
    assert watch.check([hold()], now=1059.0) == []
    [incident] = watch.check([hold()], now=1061.0)
    assert (incident["reason"], incident["topic"], incident["partition"], incident["offset"], incident["key"],
            incident["error_type"], incident["held_for"]) == ("held", "t", 1, 7, "user-9", "ConnectionError", 61.0)
    assert watch.check([hold()], now=2000.0) == [], "asked once per held message"
    assert watch.check([hold(kind="waiting")], now=3000.0) == [], "a retry waiting for its time is not stuck"
    assert [i["offset"] for i in watch.check([hold(offset=8, since=1500.0)], now=1600.0)] == [8]


def test_a_fingerprint_spike_is_one_incident_while_it_goes_on() -> None:
    watch = IncidentWatch(IncidentPolicy(spike=3, window=10), "g", "w1")
    assert watch.failed("ConnectionError", now=0.0) == [] and watch.failed("ConnectionError", now=1.0) == []
    assert watch.failed("KeyError", now=1.5) == []
    [spike] = watch.failed("ConnectionError", now=2.0)
    assert (spike["reason"], spike["error_type"], spike["count"]) == ("spike", "ConnectionError", 3)
    assert watch.pending == [spike]
    assert watch.failed("ConnectionError", now=3.0) == [], "the same spike is not asked about twice"
    assert watch.failed("ConnectionError", now=30.0) == [] and watch.failed("ConnectionError", now=31.0) == []
    assert [i["count"] for i in watch.failed("ConnectionError", now=32.0)] == [3], "a new spike after a quiet window"


def test_an_incident_is_read_strictly_and_with_a_control_secret_only_when_signed(
        monkeypatch: pytest.MonkeyPatch) -> None:
    [incident] = IncidentWatch(IncidentPolicy(held_after=1), "g", "w1").check([hold()], now=1002.0)
    parsed, why = parse_incident(incident)
    assert why is None and parsed is not None and parsed.key == "user-9"
    assert parse_incident({**incident, "offset": "7"})[1] == "incident of the wrong shape ignored (fields: offset)"
    monkeypatch.setenv(SECRET_ENV, "s3cret")
    assert parse_incident(incident) == (None, "incident refused: unsigned command")
    assert parse_incident(sign(incident))[0] == parsed
