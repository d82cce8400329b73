"""Kafka in, the core: a record as a run's conf, parsed and bounded once; one run id per record."""

from __future__ import annotations

import json

import pytest

from kafka_workflows.kafka_in import RecordRefused, record_conf, run_id

AT = "refunds[2]@41"


def test_a_json_object_is_the_conf_and_the_filter_passes_over_what_it_does_not_match() -> None:
    value = json.dumps({"type": "refund.requested", "order_id": "o-1"}).encode()
    assert record_conf(value, AT, max_bytes=1000) == {"type": "refund.requested", "order_id": "o-1"}
    assert record_conf(value, AT, max_bytes=1000, filter={"type": "refund.requested"}) is not None
    assert record_conf(value, AT, max_bytes=1000, filter={"type": ["a", "refund.requested"]}) is not None
    assert record_conf(value, AT, max_bytes=1000, filter={"type": "refund.approved"}) is None
    assert record_conf(value, AT, max_bytes=1000, filter={"missing": 1}) is None


@pytest.mark.parametrize(("value", "rule"), [
    (None, "has no value"),
    (b"{secret-not-json", "not JSON"),
    (b'["secret"]', "JSON list, not an object"),
    (b'"secret"', "JSON str, not an object"),
    (json.dumps({"secret": "x" * 2000}).encode(), "over the trigger's max_bytes (1000)"),
])
def test_a_record_that_cannot_be_a_conf_is_refused_naming_it_never_its_content(value: bytes | None,
                                                                               rule: str) -> None:
    with pytest.raises(RecordRefused) as info:
        record_conf(value, AT, max_bytes=1000)
    assert str(info.value).startswith(f"{AT}: ") and rule in str(info.value)
    assert "secret" not in str(info.value)


def test_a_record_names_one_run_id_of_at_most_250_characters() -> None:
    assert run_id("refunds", 2, 41) == "kafka__refunds-2-41" == run_id("refunds", 2, 41)
    assert run_id("refunds", 2, 42) != run_id("refunds", 2, 41) != run_id("refunds", 1, 41)
    long_a, long_b = "a" * 249, "a" * 248 + "b"
    assert len(run_id(long_a, 99, 10**18)) <= 250 and run_id(long_a, 0, 0) != run_id(long_b, 0, 0)
