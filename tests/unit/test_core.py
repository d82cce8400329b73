"""Core pieces that need no broker: configuration, headers, naming, backoff, handler resolution."""

from __future__ import annotations

import pytest

from kafka_workflows import headers as h
from kafka_workflows.errors import ConfigError, HandlerImportError, MessageDecodeError
from kafka_workflows.handlers import resolve_callable
from kafka_workflows.kafka.admin import TopicSpec
from kafka_workflows.kafka.config import DEFAULT_BOOTSTRAP_SERVERS, kafka_config_from_env
from kafka_workflows.messages import decode_value, encode_value, request_id_for
from kafka_workflows.retry.backoff import Backoff
from kafka_workflows.retry.topics import dead_letter_topic, retry_topic


def test_config_defaults_to_localhost() -> None:
    assert kafka_config_from_env({}) == {"bootstrap.servers": DEFAULT_BOOTSTRAP_SERVERS}


def test_config_merges_kafka_config_json_and_bootstrap_wins() -> None:
    env = {"KAFKA_BOOTSTRAP_SERVERS": "b1:9093,b2:9093",
           "KAFKA_CONFIG": '{"security.protocol": "SASL_SSL", "bootstrap.servers": "ignored:1"}'}
    assert kafka_config_from_env(env) == {"bootstrap.servers": "b1:9093,b2:9093", "security.protocol": "SASL_SSL"}


@pytest.mark.parametrize(("raw", "fragment"), [("{not json", "KAFKA_CONFIG is not valid JSON"),
                                               ('["a"]', "must be a JSON object")])
def test_bad_kafka_config_names_the_variable(raw: str, fragment: str) -> None:
    with pytest.raises(ConfigError, match=fragment):
        kafka_config_from_env({"KAFKA_CONFIG": raw})


def test_header_round_trip_drops_none() -> None:
    wire = h.encode({h.REQUEST_ID: "r1", h.ATTEMPT: 2, h.RETRY_AT: None})
    assert wire == [("kw-request-id", b"r1"), ("kw-attempt", b"2")]
    assert h.decode(wire) == {"kw-request-id": "r1", "kw-attempt": "2"}


def test_topic_names_follow_the_contract() -> None:
    assert retry_topic("renewals", "billing", 1) == "renewals.billing.retry-1"
    assert dead_letter_topic("renewals", "billing") == "renewals.billing.dlq"
    with pytest.raises(ValueError):
        retry_topic("renewals", "billing", 0)
    with pytest.raises(ConfigError, match="partitions must be >= 1"):
        TopicSpec("x", partitions=0)


def test_exponential_backoff_is_capped_and_list_repeats_last() -> None:
    assert [Backoff(initial=1, multiplier=2, max=5).delay(n) for n in range(1, 6)] == [1, 2, 4, 5, 5]
    assert [Backoff(intervals=(0.5, 3)).delay(n) for n in range(1, 4)] == [0.5, 3, 3]


@pytest.mark.parametrize("kwargs", [{"initial": -1}, {"multiplier": 0.5}, {"intervals": (1, -2)}])
def test_negative_backoff_is_rejected(kwargs: dict) -> None:
    with pytest.raises(ConfigError, match="backoff"):
        Backoff(**kwargs)


def test_resolve_callable_accepts_dotted_and_colon_paths() -> None:
    assert resolve_callable("os.path.join") is resolve_callable("os.path:join")


@pytest.mark.parametrize(("path", "fragment"), [
    ("no_such_module_xyz.handler", "cannot import module 'no_such_module_xyz'"),
    ("os.path.no_such_function", "has no attribute 'no_such_function'"),
    ("os.sep", "not a callable"),
    ("justaname", "must look like 'package.module.function'"),
    ("", "non-empty dotted path"),
])
def test_unknown_handler_paths_are_named(path: str, fragment: str) -> None:
    with pytest.raises(HandlerImportError, match=fragment):
        resolve_callable(path)


def test_decode_value_names_the_message() -> None:
    assert decode_value(encode_value({"a": 1}), "t[0]@1") == {"a": 1}
    with pytest.raises(MessageDecodeError, match=r"renewals\[2\]@17: value is not JSON") as err:
        decode_value(b"\xff not json", "renewals[2]@17")
    assert "not json" not in str(err.value), "a topic's content is never quoted in an error"
    with pytest.raises(MessageDecodeError, match="has no value"):
        decode_value(None, "t[0]@0")


def test_request_id_is_stable_per_task_instance() -> None:
    assert request_id_for("d", "t", "run1") == "d.t.run1"
    assert request_id_for("d", "t", "run1", 3) == "d.t.run1.3"
