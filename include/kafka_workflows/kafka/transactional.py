"""The transactional producer, with librdkafka's transaction rules in one place.

Used by the exactly-once processor (eos/) and by the job split (split/jobs.py):

- retriable errors (`err.retriable()`): the same call is retried until its deadline;
- abortable errors (`err.txn_requires_abort()`): raised to the caller, who aborts (`abort()`) and
  rewinds whatever it consumed;
- fatal errors (`err.fatal()`, e.g. fenced by a newer producer with the same transactional.id):
  raised to the caller, who calls `recreate()` (a new producer, `init_transactions` again, which
  also aborts what the old one left open).

Delivery failures of produced messages make the transaction abortable; they are kept in
`delivery_errors` so the error that ends the transaction can say what failed.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

from confluent_kafka import KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka import Message as KafkaMessage

from kafka_workflows import headers as h
from kafka_workflows.kafka.config import client_config
from kafka_workflows.kafka.deadline import CallHungError, call_with_deadline
from kafka_workflows.kafka.errors import describe, is_fatal, retry_retriable

log = logging.getLogger(__name__)

T = TypeVar("T")
DeliveryCallback = Callable[[KafkaError | None, KafkaMessage], None]


class TransactionalProducer:
    """A confluent-kafka Producer with a transactional.id, created and initialised by `start()`."""

    def __init__(self, config: Mapping[str, Any], transactional_id: str, *, transaction_timeout_ms: int,
                 linger_ms: int = 5, overrides: Mapping[str, Any] | None = None,
                 on_delivery: DeliveryCallback | None = None,
                 on_recreate: Callable[[str], None] | None = None) -> None:
        """`on_recreate(reason)` is called before a fatal error recreates the producer; it may raise
        to refuse (e.g. after too many restarts without a commit in between)."""
        self.config = dict(config)
        self.transactional_id = transactional_id
        self.transaction_timeout_ms = transaction_timeout_ms
        self.settings = {
            "transactional.id": transactional_id,
            "enable.idempotence": True,
            "acks": "all",
            "linger.ms": linger_ms,
            "transaction.timeout.ms": transaction_timeout_ms,
            "partitioner": "murmur2_random",  # the Java client's: keys land where Java producers put them
            **(overrides or {}),
        }
        self._on_delivery_hook = on_delivery
        self._on_recreate = on_recreate
        self._producer: Producer | None = None
        self.delivery_errors: list[str] = []

    @property
    def retry_timeout(self) -> float:
        """How long a retriable error is retried: the transaction's own timeout, at least 30 s."""
        return max(30.0, self.transaction_timeout_ms / 1000)

    def _retry(self, call: Callable[[], T], what: str) -> T:
        return retry_retriable(call, f"{self.transactional_id}: {what}", self.retry_timeout)

    def _live(self) -> Producer:
        if self._producer is None:
            raise RuntimeError(f"transactional producer {self.transactional_id!r} is not started")
        return self._producer

    # -- lifecycle -------------------------------------------------------------------------
    def start(self, init_timeout: float = 30.0) -> TransactionalProducer:
        """Create the producer and `init_transactions`: fences every older producer of this id and
        aborts the transaction it left open."""
        producer = Producer(client_config(self.config, **self.settings))
        self._producer = producer
        self._retry(lambda: producer.init_transactions(init_timeout), "init_transactions")
        return self

    def recreate(self, reason: str) -> None:
        """After a fatal error: drop this producer and start a new one with the same id."""
        if self._on_recreate is not None:
            self._on_recreate(reason)
        log.error("transactional producer %s hit a fatal error (%s); recreating it", self.transactional_id, reason)
        old, self._producer = self._producer, None
        if old is not None:
            try:
                with warnings.catch_warnings():  # close() warns that the fenced producer cannot abort
                    warnings.simplefilter("ignore")
                    old.purge()
                    old.close()
            except Exception as exc:  # noqa: BLE001 - a fatal producer may refuse anything; we drop it anyway
                log.debug("closing the failed producer: %s", exc)
        self.delivery_errors = []
        self.start()

    def close(self) -> None:
        if self._producer is not None:
            self._producer.close()
            self._producer = None

    # -- the transaction -------------------------------------------------------------------
    def begin(self) -> None:
        """Begin a transaction; a fatal error recreates the producer once and begins again."""
        self.delivery_errors = []
        try:
            self._live().begin_transaction()
        except KafkaException as exc:
            if not is_fatal(exc):
                raise
            self.recreate(describe(exc))
            self._live().begin_transaction()

    def produce(self, topic: str, value: bytes | None, key: str | bytes | None = None,
                headers: Mapping[str, object] | Sequence[tuple[str, bytes]] | None = None,
                partition: int | None = None) -> None:
        """Queue one message of the open transaction (waiting for room when the local queue is full)."""
        producer = self._live()
        kwargs: dict[str, Any] = {
            "key": key.encode() if isinstance(key, str) else key,
            "headers": h.encode(headers) if isinstance(headers, Mapping) else list(headers or ()),
            "on_delivery": self._on_delivery,
        }
        if partition is not None:
            kwargs["partition"] = partition
        while True:
            try:
                producer.produce(topic, value, **kwargs)
                return
            except BufferError:  # local queue full: serve delivery reports and try again
                producer.poll(0.05)

    def poll(self, timeout: float = 0.0) -> None:
        """Serve delivery reports; a fatal error (e.g. fenced) can surface here first."""
        self._live().poll(timeout)

    def send_offsets(self, offsets: list[TopicPartition], group_metadata: Any) -> None:
        """Raises CallHungError when librdkafka hangs past its own timeout (librdkafka#5456: a group
        coordinator that went away); the producer is then abandoned, untouched, and the caller's
        unit must be rebuilt (kafka/deadline.py)."""
        producer = self._live()
        try:
            self._retry(lambda: call_with_deadline(producer.send_offsets_to_transaction, offsets, group_metadata, 30,
                                                   deadline=40, what="send_offsets_to_transaction"),
                        "send_offsets_to_transaction")
        except CallHungError:
            self._producer = None  # neither usable nor safely closable while the call is in flight
            raise

    def commit(self, timeout: float = 60.0) -> None:
        producer = self._live()
        self._retry(lambda: producer.commit_transaction(timeout), "commit_transaction")

    def abort(self, timeout: float = 30.0) -> None:
        """Abort the open transaction; when even that fails, recreate the producer (which aborts it)."""
        producer = self._live()
        try:
            self._retry(lambda: producer.abort_transaction(timeout), "abort_transaction")
        except KafkaException as exc:
            self.recreate(describe(exc))

    def failure_detail(self, exc: BaseException) -> str:
        """librdkafka's text for `exc`, plus the first delivery failures of the transaction."""
        detail = describe(exc)
        if self.delivery_errors:
            detail += f" (delivery failures: {'; '.join(self.delivery_errors[:3])})"
        return detail

    def _on_delivery(self, err: KafkaError | None, msg: KafkaMessage) -> None:
        if err is not None:  # the transaction is now abortable; commit will say so
            self.delivery_errors.append(f"{msg.topic()}: {err.str()}")
        if self._on_delivery_hook is not None:
            self._on_delivery_hook(err, msg)
