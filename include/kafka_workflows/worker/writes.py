"""What a worker writes besides offsets: retries, dead letters and store reports.

Every write here must be durable before the offset of the message it moves on is stored:
`flush()` makes them so (raising when one failed), and the offset checkpoint calls it first.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from confluent_kafka import Message as KafkaMessage

from kafka_workflows import headers as h
from kafka_workflows.kafka.producer import RequestProducer
from kafka_workflows.retry.provenance import dead_letter_headers, error_type, retry_headers
from kafka_workflows.retry.topics import dead_letter_topic, retry_topic
from kafka_workflows.store.client import StoreClient

MAX_REPORTED_REASON = 500


class Writes:
    """One worker's producer of retry and dead-letter messages, and its store reporter."""

    def __init__(self, config: Mapping[str, Any], group: str, store: str | None = None) -> None:
        self.config = dict(config)
        self.group = group
        self.store_client: StoreClient | None = StoreClient(self.config, store) if store else None
        self._producer: RequestProducer | None = None
        self.unflushed = False

    def producer(self) -> RequestProducer:
        if self._producer is None:
            self._producer = RequestProducer(self.config)
        return self._producer

    def retry(self, msg: KafkaMessage, headers: Mapping[str, str], base: str, exc: BaseException, round: int,
              delay: float) -> None:
        """Write `msg` to retry topic number `round` of `base`, due in `delay` seconds."""
        self._write(retry_topic(base, self.group, round), msg, retry_headers(msg, headers, self.group, exc, delay))

    def dead_letter(self, msg: KafkaMessage, headers: Mapping[str, str], base: str, exc: BaseException,
                    extra: Mapping[str, object] | None = None) -> None:
        """Write `msg` to the dead-letter topic of `base`; a job counts as failed in its store."""
        out = dead_letter_headers(msg, headers, self.group, exc, extra)
        self._write(dead_letter_topic(base, self.group), msg, out)
        self.report(headers, f"{error_type(exc)}: {out[h.ERROR_MESSAGE]}")

    def report(self, headers: Mapping[str, str], failure: str | None) -> h.HeaderError | None:
        """Tell the store a job is done (or failed for good). Flushed with the batch, before its
        offsets are stored; the store counts job indices, so a repeat after a crash changes nothing.

        A kw-job-index that is not an integer cannot be counted: the error is returned (the message
        was not written by a split), and nothing is reported.
        """
        if self.store_client is None:
            return None
        request_id = headers.get(h.REQUEST_ID)
        try:
            job = h.int_header(headers, h.JOB_INDEX, -1)
        except h.HeaderError as exc:
            return exc
        if request_id is None or job < 0:
            return None
        if failure is None:
            self.store_client.complete(request_id, job, flush=False)
        else:
            self.store_client.fail(request_id, job, failure[:MAX_REPORTED_REASON], flush=False)
        self.unflushed = True
        return None

    def flush(self) -> None:
        """Make every write durable; raises DeliveryError when one failed."""
        if not self.unflushed:
            return
        if self._producer is not None:
            self._producer.flush()
        if self.store_client is not None:
            self.store_client.flush()
        self.unflushed = False

    def close(self) -> None:
        """Flush (a failed write raises) and destroy the clients, whether or not the flush failed."""
        try:
            if self._producer is not None:
                self._producer.flush()
        finally:
            if self._producer is not None:
                self._producer.close()
                self._producer = None
            if self.store_client is not None:
                self.store_client.close()

    def _write(self, topic: str, msg: KafkaMessage, headers: Mapping[str, object]) -> None:
        # The key as it is on the wire: a key that is not UTF-8 keeps its partition and its order.
        self.producer().send(topic, msg.value() or b"", key=msg.key(), headers=headers, raw=True)
        self.unflushed = True
