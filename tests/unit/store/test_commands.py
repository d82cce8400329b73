"""store.commands: parsing and building store commands; errors name the offset and the field."""

from __future__ import annotations

import json
import re

import pytest

from kafka_workflows.errors import ConfigError
from kafka_workflows.store.commands import CommandError, abort_command, init_command, parse_command, progress_command
from kafka_workflows.store.limits import StoreLimits
from kafka_workflows.store.partitioning import murmur2, partition_for

WHERE = "contacts.commands[1]@42"


@pytest.mark.parametrize(("raw", "fragment"), [
    (b'{"op": "drop", "request_id": "r"}', "unknown op (4 chars)"),
    (b'{"op": "init", "request_id": "r", "total": -1}', "init needs an integer total in 0..10,000,000"),
    (b'{"op": "complete", "request_id": "r", "job": true}', "complete needs an integer job index in 0..9,999,999"),
    (b'{"op": "complete", "request_id": ""}', "request_id is empty"),
    (b"[1]", "a command must be a JSON object, got list"),
])
def test_bad_commands_are_named_with_their_offset(raw: bytes, fragment: str) -> None:
    with pytest.raises(CommandError, match=rf"^{re.escape(WHERE)}: .*{re.escape(fragment)}"):
        parse_command(None, raw, WHERE)


def test_a_key_that_is_not_the_request_id_is_refused() -> None:
    with pytest.raises(CommandError, match=r"the message key \(5 chars\) differs from the request_id \(1 chars\)"):
        parse_command("other", b'{"op": "complete", "request_id": "r", "job": 0}', WHERE)


SECRET = "s3cr3t-content"


@pytest.mark.parametrize(("body", "fragment"), [
    ({"op": "init", "request_id": "r", "total": 10**13}, "total in 0..10,000,000 (max_total), got an integer of 14"),
    ({"op": "init", "request_id": "r", "total": 10**400}, "got an integer of 401 digits"),
    ({"op": "complete", "request_id": "r", "job": 20_000_000}, "job index in 0..9,999,999"),
    ({"op": "fail", "request_id": "r", "job": 10_000_000, "reason": SECRET}, "job index in 0..9,999,999"),
    ({"op": "complete", "request_id": "x" * 513, "job": 0}, "request_id is 513 bytes, more than the 512"),
    ({"op": "complete", "request_id": 7, "job": 0}, "request_id must be a string, got int"),
    ({"op": SECRET, "request_id": "r"}, "unknown op (14 chars)"),
    ({"op": "init", "request_id": "r", "total": 1, "meta": {"pad": "x" * 70_000}}, "more than the 65,536 allowed"),
])
def test_commands_outside_the_limits_are_refused_without_quoting_them(body: dict, fragment: str) -> None:
    raw = json.dumps(body).encode()
    with pytest.raises(CommandError, match=re.escape(fragment)) as caught:
        parse_command(None, raw, WHERE)
    assert SECRET not in str(caught.value) and "xxxx" not in str(caught.value)


def test_limits_are_configurable_downward_only() -> None:
    small = StoreLimits(max_total=100, max_request_id_bytes=4, max_reason_chars=3, max_command_bytes=200)
    with pytest.raises(CommandError, match=r"total in 0..100 \(max_total\)"):
        parse_command(None, b'{"op": "init", "request_id": "r", "total": 101}', WHERE, small)
    with pytest.raises(CommandError, match="request_id is 5 bytes"):
        parse_command(None, b'{"op": "complete", "request_id": "abcde", "job": 1}', WHERE, small)
    fail = parse_command(b"r", b'{"op": "fail", "request_id": "r", "job": 99, "reason": "long"}', WHERE, small)
    assert (fail.job, fail.reason) == (99, "lon")
    with pytest.raises(ConfigError, match=r"max_total must be in 1\.\.10,000,000"):
        StoreLimits(max_total=10_000_001)


def test_a_key_that_is_not_utf8_is_refused() -> None:
    with pytest.raises(CommandError, match=r"the message key is not UTF-8 \(2 bytes\)"):
        parse_command(b"\xff\xfe", b'{"op": "complete", "request_id": "r", "job": 0}', WHERE)


def test_built_commands_parse_back() -> None:
    message = init_command("contacts", "r", 3, {"rows": 30})
    command = parse_command(message.key, message.value, "built")
    assert (message.topic, command.op, command.total, command.meta) == ("contacts.commands", "init", 3, {"rows": 30})


@pytest.mark.parametrize(("key", "java"), [
    (b"21", -973932308), (b"foobar", -790332482), (b"a-little-bit-long-string", -985981536),
    (b"a-little-bit-longer-string", -1486304829), (b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8", -58897971),
    (b"abc", 479470107),
])
def test_murmur2_matches_the_java_clients_test_vectors(key: bytes, java: int) -> None:
    """Kafka's UtilsTest.testMurmur2 vectors: store commands land where Java producers put them."""
    assert murmur2(key) == java & 0xFFFFFFFF
    assert partition_for(key, 12) == (java & 0x7FFFFFFF) % 12


@pytest.mark.parametrize(("body", "fragment"), [
    ({"op": "progress", "request_id": "r", "jobs": -1, "rows": 0}, "progress needs an integer jobs in 0..10,000,000"),
    ({"op": "progress", "request_id": "r", "jobs": 10**7 + 1, "rows": 0}, "got an integer of 8 digits"),
    ({"op": "progress", "request_id": "r", "jobs": 1}, "progress needs an integer rows in 0..2**53, got NoneType"),
    ({"op": "progress", "request_id": "r", "jobs": 1, "rows": 2**53 + 1}, "rows in 0..2**53"),
    ({"op": "progress", "request_id": "r", "jobs": True, "rows": 1}, "got bool"),
    ({"op": "abort", "request_id": "r", "reason": "x" * 70_000}, "more than the 65,536 allowed"),
])
def test_the_splits_progress_and_abort_are_bounded_at_the_boundary(body: dict, fragment: str) -> None:
    with pytest.raises(CommandError, match=re.escape(fragment)):
        parse_command(None, json.dumps(body).encode(), WHERE)


def test_progress_and_abort_parse_and_the_abort_reason_is_truncated() -> None:
    cmd = parse_command("r", progress_command("contacts", "r", 4, 2000).value, WHERE)
    assert (cmd.op, cmd.jobs, cmd.rows) == ("progress", 4, 2000)
    small = StoreLimits(max_reason_chars=5)
    assert parse_command(None, b'{"op": "abort", "request_id": "r", "reason": "a long reason"}', WHERE,
                         small).reason == "a lon"
    assert abort_command("contacts", "r", "x" * 900).key == "r"
