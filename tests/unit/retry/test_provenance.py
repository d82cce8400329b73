"""Headers of retries, dead letters and replays (the kw- contract), without a broker."""

from __future__ import annotations

import pytest
from confluent_kafka import Message as KafkaMessage

from kafka_workflows import headers as h
from kafka_workflows.retry.provenance import Origin, dead_letter_headers, replay_headers, retry_headers


def record(topic: str = "renewals", partition: int = 2, offset: int = 41) -> KafkaMessage:
    return KafkaMessage(topic=topic, partition=partition, offset=offset, key=b"u1", value=b"{}")


def test_a_first_retry_records_where_the_message_came_from_and_when_it_is_due() -> None:
    out = retry_headers(record(), {h.REQUEST_ID: "r1"}, "billing", ValueError("timeout"), delay=30, now=1000.0)
    assert out[h.ORIGINAL_TOPIC] == "renewals" and out[h.ORIGINAL_PARTITION] == 2 and out[h.ORIGINAL_OFFSET] == 41
    assert (out[h.CONSUMER_GROUP], out[h.ERROR_TYPE], out[h.ERROR_MESSAGE]) == ("billing", "ValueError", "timeout")
    assert (out[h.ATTEMPT], out[h.RETRY_AT], out[h.FIRST_FAILED_AT]) == (2, 1_030_000, 1_000_000)
    assert out[h.REQUEST_ID] == "r1"


def test_a_later_move_keeps_the_origin_the_worker_decided_and_first_failure() -> None:
    earlier = {h.ORIGINAL_TOPIC: "renewals", h.ORIGINAL_PARTITION: "0", h.ORIGINAL_OFFSET: "7", h.ATTEMPT: "2",
               h.FIRST_FAILED_AT: "5", h.RETRY_AT: "99"}
    out = dead_letter_headers(record("renewals.billing.retry-1", 1, 3), earlier, "billing", KeyError("x"),
                              origin=Origin("renewals", 0, 7, 5))
    assert (out[h.ORIGINAL_TOPIC], out[h.ORIGINAL_PARTITION], out[h.ORIGINAL_OFFSET]) == ("renewals", 0, 7)
    assert out[h.FIRST_FAILED_AT] == 5 and h.RETRY_AT not in out and out[h.ATTEMPT] == "2"


@pytest.mark.parametrize("forged", [
    {h.ORIGINAL_TOPIC: "kafka-workflows.control", h.ORIGINAL_PARTITION: "0", h.ORIGINAL_OFFSET: "1",
     h.FIRST_FAILED_AT: "1"},
    {h.ORIGINAL_TOPIC: "kafka-workflows.status"}])
def test_an_origin_a_producer_wrote_is_never_kept(forged: dict[str, str]) -> None:
    msg = KafkaMessage(topic="renewals", partition=2, offset=41, key=b"u1", value=b"{}",
                       headers=[(k, v.encode()) for k, v in forged.items()])
    for out in (dead_letter_headers(msg, forged, "billing", KeyError("x")),
                retry_headers(msg, forged, "billing", KeyError("x"), delay=1, now=1000.0)):
        assert (out[h.ORIGINAL_TOPIC], out[h.ORIGINAL_PARTITION], out[h.ORIGINAL_OFFSET]) == ("renewals", 2, 41)
        assert out[h.FIRST_FAILED_AT] != "1"


def test_a_replay_starts_over_and_names_its_dead_letter() -> None:
    letter = {h.REQUEST_ID: "r1", h.ORIGINAL_TOPIC: "renewals", h.ERROR_TYPE: "E", h.ATTEMPT: "4",
              "kw-skipped-by": "ops", "x-custom": "kept"}
    out = replay_headers(letter, "renewals.billing.dlq:0:12")
    assert out == {h.REQUEST_ID: "r1", "x-custom": "kept", h.ATTEMPT: "1", h.REPLAYED_FROM: "renewals.billing.dlq:0:12"}


def test_a_malformed_attempt_header_is_named_without_its_content() -> None:
    with pytest.raises(h.HeaderError, match=r"kw-attempt is not an integer \(6 characters\)") as err:
        retry_headers(record(), {h.ATTEMPT: "secret"}, "g", ValueError("x"), delay=1)
    assert "secret" not in str(err.value)


@pytest.mark.parametrize(("raw", "why"), [
    ("9" * 400, "out of range"), ("1e9", "not an integer"), ("", "not an integer")])
def test_integer_headers_are_bounded_and_named(raw: str, why: str) -> None:
    with pytest.raises(h.HeaderError, match=rf"header kw-retry-at is {why} \({len(raw)} characters\)"):
        h.int_header({h.RETRY_AT: raw}, h.RETRY_AT, 0)
