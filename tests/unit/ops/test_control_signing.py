"""Signed operator commands (issue 17): sign, verify, refuse; no secret configured accepts as before."""

from __future__ import annotations

import time
from typing import Any

import pytest

from kafka_workflows.ops import status
from kafka_workflows.ops.control import (
    MAX_COMMAND_AGE,
    SECRET_ENV,
    CommandGate,
    is_refusal,
    parse_command_record,
    paused_key,
    refusal_record,
    sign,
)

SECRET = "s3cret-for-tests"


@pytest.fixture(autouse=True)
def no_env_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(SECRET_ENV, raising=False)


def pause(group: str = "billing", **changes: Any) -> dict[str, Any]:
    return {"kind": "command", "id": "c1", "op": "pause", "group": group, "topic": None, "partition": None,
            "offset": None, "key": None, "by": "admin", "reason": "maintenance", "at": time.time(), **changes}


def test_a_command_signed_with_the_secret_is_accepted_and_the_followers_note_is_not_signed() -> None:
    signed = sign(pause(), SECRET)
    assert len(signed["sig"]) == 64
    command, why = parse_command_record({**signed, "_where": "kafka-workflows.control[0]@5"}, "here", SECRET)
    assert why is None and command is not None and (command.op, command.by) == ("pause", "admin")


def test_without_a_secret_an_unsigned_command_is_accepted_as_before() -> None:
    command, why = parse_command_record(pause(), "here")
    assert why is None and command is not None
    assert "sig" not in sign(pause())


@pytest.mark.parametrize("field, value", [("op", "resume"), ("group", "renewals"), ("by", "root"),
                                          ("at", 1.0), ("reason", ""), ("extra", "added")])
def test_a_tampered_field_is_a_bad_signature(field: str, value: Any) -> None:
    tampered = {**sign(pause(), SECRET), field: value}
    assert parse_command_record(tampered, "here", SECRET) == (None, "refused: bad signature")


@pytest.mark.parametrize("sig", [None, "", 0, ["x"], {"length": 64}])
def test_a_missing_or_non_text_signature_is_an_unsigned_command(sig: Any) -> None:
    record = pause() if sig is None else {**pause(), "sig": sig}
    assert parse_command_record(record, "here", SECRET) == (None, "refused: unsigned command")


@pytest.mark.parametrize("sig", ["0" * 64, "é" * 64, "a" * 100_000, sign(pause(), "other-secret")["sig"]],
                         ids=["zeros", "non-ascii", "100k", "another-secrets"])  # the last is time-dependent
def test_a_wrong_signature_of_any_size_is_refused(sig: str) -> None:
    assert parse_command_record({**pause(), "sig": sig}, "here", SECRET) == (None, "refused: bad signature")


def test_the_env_variable_is_the_secret_when_none_is_passed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(SECRET_ENV, SECRET)
    assert parse_command_record(pause(), "here") == (None, "refused: unsigned command")
    command, why = parse_command_record(sign(pause()), "here", SECRET)
    assert why is None and command is not None


def test_a_signed_command_outside_the_time_window_is_stale() -> None:
    old = sign(pause(at=time.time() - MAX_COMMAND_AGE - 60), SECRET)
    future = sign(pause(at=time.time() + MAX_COMMAND_AGE + 60), SECRET)
    for record in (old, future):
        assert parse_command_record(record, "here", SECRET) == (None, "refused: stale command")


def test_a_signed_command_written_again_verbatim_is_refused_by_the_gate() -> None:
    gate = CommandGate(SECRET)
    signed = sign(pause(), SECRET)
    assert gate.admit(signed, "here")[1] is None
    assert gate.admit(dict(signed), "here") == (None, "refused: repeated command")
    assert gate.admit(sign(pause(id="c2"), SECRET), "here")[1] is None


def test_a_wrong_shape_is_ignored_not_refused_and_a_refusal_answers_in_the_audit() -> None:
    command, why = parse_command_record({"kind": "command", "op": "pause"}, "here", SECRET)
    assert command is None and not is_refusal(why)
    _, why = parse_command_record(pause(id="x" * 200), "here", SECRET)
    assert is_refusal(why)
    answer = refusal_record(pause(), "billing", "worker-1", str(why))
    assert answer["kind"] == "applied" and answer["result"] == "refused: unsigned command"
    assert (answer["command"], answer["op"], answer["group"], answer["worker"]) == ("c1", "pause", "billing",
                                                                                  "worker-1")
    weird = refusal_record({"id": "y" * 10_000, "op": "<img>"}, "billing", "worker-1", str(why))
    assert weird["command"] is None and weird["op"] is None


def test_a_forged_pause_state_does_not_pause_a_group_when_a_secret_is_set(monkeypatch: pytest.MonkeyPatch) -> None:
    state = {"paused": True, "group": "billing", "by": "admin", "reason": "", "at": time.time(), "command": "c1"}
    topic: dict[str, dict[str, Any]] = {}
    monkeypatch.setattr(status, "read_status_topic", lambda config: topic)
    topic[paused_key("billing")] = state
    assert status.group_paused({}, "billing") is True  # no secret: as before
    assert status.group_paused({}, "billing", SECRET) is False  # unsigned
    topic[paused_key("billing")] = sign(state, SECRET)
    assert status.group_paused({}, "billing", SECRET) is True
    topic[paused_key("renewals")] = sign(state, SECRET)  # billing's signed state, copied to another group
    assert status.group_paused({}, "renewals", SECRET) is False
    topic[paused_key("billing")] = sign({**state, "paused": False}, SECRET)
    assert status.group_paused({}, "billing", SECRET) is False
