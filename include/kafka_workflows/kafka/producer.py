"""An idempotent producer whose delivery failures raise instead of vanishing in a callback."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from confluent_kafka import KafkaError, Message, Producer

from kafka_workflows import headers as h
from kafka_workflows.errors import DeliveryError
from kafka_workflows.kafka.config import client_config
from kafka_workflows.messages import encode_value


@dataclass(frozen=True)
class Delivered:
    topic: str
    partition: int
    offset: int
    key: str | None


class RequestProducer:
    """Produce keyed JSON requests; `flush()` returns what was delivered or raises DeliveryError.

    Idempotence (acks=all, in-order, no duplicates on internal retries) is always on: a
    schedule-and-forget request must land once even when the network blips.
    """

    def __init__(self, config: Mapping[str, Any], *, remember: bool = True, **overrides: Any) -> None:
        """`remember=False` for advisory writes (status, audit) that are never flushed for their
        results: deliveries are then not kept, and failures only until `drain_failures()`."""
        settings = {
            "enable.idempotence": True,
            "acks": "all",
            "linger.ms": 5,
            "message.timeout.ms": 30_000,
            **overrides,
        }
        self._producer = Producer(client_config(config, **settings))
        self._remember = remember
        self._delivered: list[Delivered] = []
        self._failed: list[tuple[str | None, KafkaError]] = []
        self._closed = False

    def _on_delivery(self, err: KafkaError | None, msg: Message) -> None:
        key = msg.key().decode("utf-8", "replace") if msg.key() is not None else None
        if err is not None:
            self._failed.append((key, err))
        elif self._remember:
            self._delivered.append(Delivered(msg.topic(), msg.partition(), msg.offset(), key))

    def send(self, topic: str, value: Any, key: str | bytes | None = None,
             headers: Mapping[str, object] | None = None, raw: bool = False, partition: int = -1) -> None:
        payload = value if raw else encode_value(value)
        while True:
            try:
                self._producer.produce(topic, payload, key=key if key is None or isinstance(key, bytes)
                                       else str(key).encode(),
                                       partition=partition, headers=h.encode(headers or {}),
                                       on_delivery=self._on_delivery)
                break
            except BufferError:  # local queue full: serve callbacks and try again
                self._producer.poll(0.1)
        self._producer.poll(0)

    def tombstone(self, topic: str, key: str) -> None:
        """A null value: deletes `key` from a compacted topic."""
        self._producer.produce(topic, None, key=key.encode(), on_delivery=self._on_delivery)
        self._producer.poll(0)

    def close(self) -> None:
        """Destroy the client now (its threads, sockets, reconnect attempts). Flush first what must be
        delivered: what is still queued is purged, never waited for, so a stop cannot hang on a broker
        that is gone. Idempotent."""
        if self._closed:
            return
        self._closed = True
        self._producer.purge()
        self._producer.close()

    def drain_failures(self, max_kept: int = 100) -> list[str]:
        """Serve delivery reports and hand over the failures so far (advisory producers)."""
        self._producer.poll(0)
        failed, self._failed = self._failed, []
        return [f"{k!r}: {e.str()}" for k, e in failed[:max_kept]]

    def flush(self, timeout: float = 60.0) -> list[Delivered]:
        remaining = self._producer.flush(timeout)
        delivered, failed = self._delivered, self._failed
        self._delivered, self._failed = [], []
        if failed or remaining:
            first = "; ".join(f"key={k!r}: {e.str()}" for k, e in failed[:3])
            raise DeliveryError(
                f"{len(failed)} message(s) failed and {remaining} not acknowledged within {timeout:.0f}s"
                + (f" (first: {first})" if first else "")
            )
        return delivered
