"""One-shot admin calls ask again while a leader moves, and only then."""

from __future__ import annotations

import pytest
from confluent_kafka import KafkaError, KafkaException

from kafka_workflows.kafka.leader_moves import retry_leader_moves


def test_a_fenced_leader_epoch_is_asked_again() -> None:
    answers = [KafkaException(KafkaError(KafkaError.FENCED_LEADER_EPOCH)),
               KafkaException(KafkaError(KafkaError.NOT_LEADER_FOR_PARTITION)), {0: 42}]

    def call() -> dict[int, int]:
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    assert retry_leader_moves(call, "end offsets", timeout=10) == {0: 42}


def test_other_errors_and_the_timeout_are_raised() -> None:
    def denied() -> None:
        raise KafkaException(KafkaError(KafkaError.TOPIC_AUTHORIZATION_FAILED))

    with pytest.raises(KafkaException):
        retry_leader_moves(denied, "end offsets", timeout=10)

    def fenced() -> None:
        raise KafkaException(KafkaError(KafkaError.FENCED_LEADER_EPOCH))

    with pytest.raises(KafkaException):
        retry_leader_moves(fenced, "end offsets", timeout=0.5)
