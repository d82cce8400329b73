"""The worker's inbound boundary: kw- headers parsed and bounded once, origin from the topic consumed."""

from __future__ import annotations

import pytest
from confluent_kafka import Message as KafkaMessage

from kafka_workflows import headers as h
from kafka_workflows.worker.inbound import MAX_KW_HEADER, MAX_REQUEST_ID, Boundary

RETRY_TOPICS = {"orders.billing.retry-1": ("orders", 1)}


def record(headers: dict[str, bytes | None], topic: str = "orders") -> KafkaMessage:
    return KafkaMessage(topic=topic, partition=1, offset=7, value=b"{}", headers=list(headers.items()))


HEADER_SETS = [
    {}, {h.ATTEMPT: b"1"}, {h.ATTEMPT: b"1000"}, {h.ATTEMPT: b"1001"}, {h.ATTEMPT: b"0"}, {h.ATTEMPT: b"-1"},
    {h.ATTEMPT: b""}, {h.ATTEMPT: None}, {h.ATTEMPT: b" 1"}, {h.ATTEMPT: b"1_0"}, {h.ATTEMPT: b"\xd9\xa1"},
    {h.ATTEMPT: str(h.INT64_MAX).encode()}, {h.ATTEMPT: str(h.INT64_MAX + 1).encode()}, {h.ATTEMPT: b"9" * 10_000},
    {h.REQUEST_ID: b""}, {h.REQUEST_ID: b"r" * MAX_REQUEST_ID}, {h.REQUEST_ID: b"r" * (MAX_REQUEST_ID + 1)},
    {h.REQUEST_ID: b"r" * (MAX_KW_HEADER + 1)}, {h.JOB_INDEX: b"x"}, {h.JOB_INDEX: b"0"}, {h.JOB_INDEX: b"-1"},
    {h.RETRY_AT: b"abc"}, {h.ORIGINAL_TOPIC: b"kafka-workflows.control"}, {"kw-anything": b"x" * (MAX_KW_HEADER + 1)},
    {"x-not-ours": b"x" * (MAX_KW_HEADER * 10)}, {h.ORIGINAL_OFFSET: b"x"},
]


@pytest.mark.parametrize("report", [False, True])
@pytest.mark.parametrize("headers", HEADER_SETS)
def test_the_hot_paths_plain_never_accepts_what_read_refuses(headers: dict[str, bytes | None], report: bool) -> None:
    boundary = Boundary(RETRY_TOPICS, report)
    msg = record(headers)
    inbound = boundary.read(msg)
    if boundary.plain(msg):
        assert inbound.error is None
    if inbound.error is not None:
        assert all(value not in str(inbound.error).encode() for value in headers.values() if value and len(value) > 3)


@pytest.mark.parametrize(("headers", "report", "why"), [
    ({h.ATTEMPT: b"0"}, False, "header kw-attempt is out of range (1 characters)"),
    ({h.ATTEMPT: str(h.INT64_MAX + 1).encode()}, False, "header kw-attempt is out of range (19 characters)"),
    ({h.ATTEMPT: b"1_0"}, False, "header kw-attempt is not an integer (3 characters)"),
    ({h.REQUEST_ID: b""}, True, "header kw-request-id is empty"),
    ({h.REQUEST_ID: b"r" * (MAX_REQUEST_ID + 1)}, True,
     f"header kw-request-id is too long ({MAX_REQUEST_ID + 1} bytes)"),
    ({h.JOB_INDEX: b"-1"}, True, "header kw-job-index is out of range (2 characters)"),
    ({"kw-x": b"x" * (MAX_KW_HEADER + 1)}, False, f"header kw-x is too long ({MAX_KW_HEADER + 1} bytes)"),
])
def test_a_refusal_names_the_header_and_its_size(headers: dict[str, bytes], report: bool, why: str) -> None:
    inbound = Boundary(RETRY_TOPICS, report).read(record(headers))
    assert str(inbound.error) == why


def test_what_a_store_reporting_worker_ignores_elsewhere_is_not_refused() -> None:
    inbound = Boundary(RETRY_TOPICS, False).read(record({h.REQUEST_ID: b"", h.JOB_INDEX: b"x", h.RETRY_AT: b"x"}))
    assert inbound.error is None


def test_the_origin_is_the_topic_consumed_never_a_header() -> None:
    boundary = Boundary(RETRY_TOPICS, False)
    forged = {h.ORIGINAL_TOPIC: b"kafka-workflows.control", h.ORIGINAL_PARTITION: b"0", h.ORIGINAL_OFFSET: b"3"}
    own = boundary.read(record(forged)).provenance()
    assert (own.topic, own.partition, own.offset) == ("orders", 1, 7)
    moved = boundary.read(record({**forged, h.FIRST_FAILED_AT: b"5"}, topic="orders.billing.retry-1"))
    assert (moved.base, moved.round) == ("orders", 1)
    assert moved.provenance() == type(own)("orders", 0, 3, 5), "the group's own retry carries its origin, on its base"
