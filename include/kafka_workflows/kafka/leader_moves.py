"""Ask again while a partition's leader moves: what a one-shot admin call meets when a broker goes.

librdkafka retries fetches and produces through a leader change by itself, but a one-shot admin
request (ListOffsets, Metadata) answered by a broker that just lost or gained leadership fails
with FENCED_LEADER_EPOCH, NOT_LEADER_OR_FOLLOWER, LEADER_NOT_AVAILABLE, ... and hands that error
to the caller. Issue 12's store processor died of exactly that after a broker restart.
`retry_leader_moves` calls again, with a short backoff, until its timeout.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from confluent_kafka import KafkaError

from kafka_workflows.kafka.errors import kafka_error, retry_while

T = TypeVar("T")

LEADER_MOVES = frozenset({
    KafkaError.FENCED_LEADER_EPOCH, KafkaError.UNKNOWN_LEADER_EPOCH, KafkaError.NOT_LEADER_FOR_PARTITION,
    KafkaError.LEADER_NOT_AVAILABLE, KafkaError.NOT_COORDINATOR, KafkaError.COORDINATOR_NOT_AVAILABLE,
    KafkaError.COORDINATOR_LOAD_IN_PROGRESS, KafkaError.REQUEST_TIMED_OUT, KafkaError._TRANSPORT,
    KafkaError._TIMED_OUT, KafkaError._ALL_BROKERS_DOWN, KafkaError.UNKNOWN_TOPIC_OR_PART,
    KafkaError._UNKNOWN_PARTITION,  # this client's metadata does not have it yet (a topic just created)
})


def is_leader_move(exc: BaseException) -> bool:
    err = kafka_error(exc)
    return err is not None and (err.retriable() or err.code() in LEADER_MOVES) and not err.fatal()


def retry_leader_moves(call: Callable[[], T], what: str, timeout: float = 60.0,
                       refresh: Callable[[], object] | None = None) -> T:
    """`call()`, again after 0.2..2 s while it fails with a leader-move error, until `timeout` s.

    `refresh` runs before each new attempt, e.g. a metadata request: librdkafka's admin client
    keeps sending the leader epoch it cached, and is answered FENCED_LEADER_EPOCH until it asks.
    """
    return retry_while(call, what, timeout, is_leader_move, initial=0.2, maximum=2.0, refresh=refresh)
