"""eos: each consumed record is checked once where it enters; a poison's dead letter always fits."""

from __future__ import annotations

import pytest
from confluent_kafka import Message as KafkaMessage

from kafka_workflows.eos.handler import Output, TransactionalHandler
from kafka_workflows.eos.inbound import InboundError, inbound
from kafka_workflows.eos.poison import PoisonGuard
from kafka_workflows.messages import Message
from kafka_workflows.retry.fit import record_size


def record(value: bytes | None = b'{"a": 1}', headers: list[tuple[str, bytes]] | None = None,
           key: bytes | None = b"k", offset: int = 7) -> KafkaMessage:
    return KafkaMessage(topic="purchases", partition=2, offset=offset, key=key, value=value, headers=headers or [])


@pytest.mark.parametrize(("headers", "fragment"), [
    ([("kw-request-id", b"")], "header kw-request-id is 0 bytes; it must be 1..512"),
    ([("kw-request-id", b"r" * 513)], "header kw-request-id is 513 bytes"),
    ([("kw-attempt", b"abc")], "header kw-attempt is not an integer (3 characters)"),
    ([("kw-attempt", b"9" * 400)], "header kw-attempt is out of range (400 characters)"),
    ([("kw-attempt", b"0")], "header kw-attempt is out of range"),
    ([("kw-job-index", b"-1")], "header kw-job-index is out of range"),
    ([("kw-error-message", b"e" * 9000)], "header kw-error-message is 9,000 bytes, more than the 8,192"),
])
def test_a_record_breaking_the_kw_contract_is_refused_naming_where_and_the_field(
        headers: list[tuple[str, bytes]], fragment: str) -> None:
    with pytest.raises(InboundError, match=r"^purchases\[2\]@7: ") as caught:
        inbound(record(headers=headers))
    assert fragment in str(caught.value) and "rrrr" not in str(caught.value)


def test_a_good_record_has_its_headers_decoded_once_and_an_optional_size_bound() -> None:
    checked = inbound(record(headers=[("kw-request-id", b"r1"), ("other", b"\xff")]))
    assert checked.headers["kw-request-id"] == "r1" and checked.where == "purchases[2]@7"
    with pytest.raises(InboundError, match="the record is 1,008 bytes, more than the 1,000 allowed"):
        inbound(record(value=b"x" * 1000, key=b"k", headers=[("kw-a", b"bcd")]), max_record_bytes=1000)


class JsonHandler(TransactionalHandler):
    def process(self, message: KafkaMessage) -> list[Output]:
        return [Output("out", None, str(Message.of(message).value).encode())]


def test_a_1mb_poison_is_dead_lettered_truncated_to_the_dlq_limit() -> None:
    guard = PoisonGuard(JsonHandler(), "checkout", dead_letter_limits={"purchases.checkout.dlq": 1_000_000})
    poison = record(value=b"\xff" + b"p" * 999_799, offset=8)
    outputs = guard.outputs([record(), poison, record(offset=9)])
    assert outputs is not None and [o.topic for o in outputs] == ["out", "purchases.checkout.dlq", "out"]
    dead = outputs[1]
    headers = dict(dead.headers or {})
    assert headers["kw-error-type"] == "MessageDecodeError" and headers["kw-original-size"] == "999800"
    assert headers["kw-original-offset"] == 8 and int(str(headers["kw-value-truncated"])) == len(dead.value or b"")
    key = dead.key if isinstance(dead.key, bytes) else None
    assert record_size(key, dead.value, headers) <= 1_000_000 and guard.dead_lettered == 1


def test_a_record_failing_the_boundary_never_reaches_the_handler() -> None:
    seen: list[int] = []

    class Recording(TransactionalHandler):
        def process(self, message: KafkaMessage) -> list[Output]:
            seen.append(message.offset())
            return []

    guard = PoisonGuard(Recording(), "g")
    outputs = guard.outputs([record(offset=1), record(headers=[("kw-request-id", b"")], offset=2), record(offset=3)])
    assert seen == [1, 3]
    assert outputs is not None and len(outputs) == 1
    assert dict(outputs[0].headers or {})["kw-error-type"] == "InboundError"
