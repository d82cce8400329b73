"""store.commands: parsing and building store commands; errors name the offset and the field."""

from __future__ import annotations

import re

import pytest

from kafka_workflows.store.commands import CommandError, init_command, parse_command
from kafka_workflows.store.partitioning import murmur2, partition_for

WHERE = "contacts.commands[1]@42"


@pytest.mark.parametrize(("raw", "fragment"), [
    (b'{"op": "drop", "request_id": "r"}', "unknown op 'drop'"),
    (b'{"op": "init", "request_id": "r", "total": -1}', "init of 'r' needs an integer total >= 0"),
    (b'{"op": "complete", "request_id": "r", "job": true}', "complete of 'r' needs an integer job index"),
    (b'{"op": "complete", "request_id": ""}', "non-empty string request_id"),
    (b"[1]", "a command must be a JSON object, got list"),
])
def test_bad_commands_are_named_with_their_offset(raw: bytes, fragment: str) -> None:
    with pytest.raises(CommandError, match=rf"^{re.escape(WHERE)}: .*{re.escape(fragment)}"):
        parse_command(None, raw, WHERE)


def test_a_key_that_is_not_the_request_id_is_refused() -> None:
    with pytest.raises(CommandError, match="message key 'other' differs from request_id 'r'"):
        parse_command("other", b'{"op": "complete", "request_id": "r", "job": 0}', WHERE)


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
