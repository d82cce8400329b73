"""One-shot admin calls ask again while a leader moves, and only then."""

from __future__ import annotations

import pytest
from confluent_kafka import KafkaError, KafkaException

from kafka_workflows.kafka.leader_moves import retry_leader_moves


def test_a_fenced_leader_epoch_is_asked_again() -> None:
    answers = [KafkaException(KafkaError(KafkaError.FENCED_LEADER_EPOCH)),
               KafkaException(KafkaError(KafkaError.NOT_LEADER_FOR_PARTITION)),
               # the client's metadata has no such partition yet: a topic another replica just created
               KafkaException(KafkaError(KafkaError._UNKNOWN_PARTITION)), {0: 42}]

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


class _ListOffsetsAnswers:
    """An admin client whose ListOffsets answers come from a script: librdkafka's fan-out leaves a
    partition whose leader did not answer as offset INVALID (-1001) *without* an error."""

    def __init__(self, *offsets: int) -> None:
        self.offsets = list(offsets)

    def list_offsets(self, request: dict, **_: object) -> dict:
        from concurrent.futures import Future

        from confluent_kafka.admin import ListOffsetsResultInfo

        answer = self.offsets.pop(0)
        futures = {}
        for tp in request:
            future: Future = Future()
            future.set_result(ListOffsetsResultInfo(answer, -1, -1))
            futures[tp] = future
        return futures

    def list_topics(self, *_: object, **__: object) -> None:
        return None


def test_an_end_offset_the_leader_did_not_answer_is_asked_again_not_read_as_empty() -> None:
    from kafka_workflows.kafka.admin import end_offsets

    admin = _ListOffsetsAnswers(-1001, -1, 42)
    assert end_offsets(admin, "s.store", [0], timeout=5) == {0: 42}  # type: ignore[arg-type]
    assert admin.offsets == []


def test_an_end_offset_never_answered_is_an_error_not_an_empty_partition() -> None:
    from kafka_workflows.kafka.admin import end_offsets

    admin = _ListOffsetsAnswers(*[-1001] * 100)
    with pytest.raises(KafkaException, match=r"s\.store\[0\]: its leader did not answer"):
        end_offsets(admin, "s.store", [0], timeout=0.3)  # type: ignore[arg-type]
