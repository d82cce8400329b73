"""What a worker writes besides offsets: retries, dead letters and store reports.

Every write here must be durable before the offset of the message it moves on is stored:
`flush()` makes them so (raising when one failed), and the offset checkpoint calls it first.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from typing import Any

from kafka_workflows import headers as h
from kafka_workflows.kafka.msgsize import PRODUCER_DEFAULT, message_limit
from kafka_workflows.kafka.producer import RequestProducer
from kafka_workflows.retry.fit import fit_dead_letter, record_size
from kafka_workflows.retry.provenance import dead_letter_headers, error_type, retry_headers
from kafka_workflows.retry.topics import dead_letter_topic, retry_topic
from kafka_workflows.store.client import StoreClient
from kafka_workflows.worker.inbound import Inbound

log = logging.getLogger(__name__)

MAX_REPORTED_REASON = 500
LIMIT_TIMEOUT = 5.0  # seconds to ask the broker for a dead-letter topic's max.message.bytes


class Writes:
    """One worker's producer of retry and dead-letter messages, and its store reporter.

    A dead letter always fits (retry/fit.py); a retry that would not fit is refused (the caller
    dead-letters it instead). A dead-letter topic's limit is the smaller of the producer's
    `message.max.bytes` and the dead-letter topic's `max.message.bytes`, asked once per topic
    (`learn_limits`, from Worker.prepare; the producer's limit when the broker does not answer).
    """

    def __init__(self, config: Mapping[str, Any], group: str, store: str | None = None) -> None:
        self.config = dict(config)
        self.group = group
        self.store_client: StoreClient | None = StoreClient(self.config, store) if store else None
        self._producer: RequestProducer | None = None
        self.unflushed = False
        self.producer_limit = int(self.config.get("message.max.bytes", PRODUCER_DEFAULT))
        self.limits: dict[str, int] = {}  # dead-letter topic -> bytes

    def producer(self) -> RequestProducer:
        if self._producer is None:
            self._producer = RequestProducer(self.config)
        return self._producer

    def learn_limits(self, topics: Iterable[str], timeout: float = LIMIT_TIMEOUT) -> None:
        """Ask the broker once per dead-letter topic how large a record may be there."""
        for topic in topics:
            try:
                self.limits[topic] = message_limit(self.config, topic, timeout=timeout).max_bytes
            except Exception as exc:  # noqa: BLE001 - the producer's own limit is a safe fallback
                log.warning("could not read max.message.bytes of %s (%s); dead letters there fit %d bytes",
                            topic, type(exc).__name__, self.producer_limit)
                self.limits[topic] = self.producer_limit

    def limit(self, topic: str) -> int:
        return min(self.limits.get(topic, self.producer_limit), self.producer_limit)

    def retry(self, inbound: Inbound, headers: Mapping[str, str], exc: BaseException, round: int,
              delay: float) -> bool:
        """Write the record to retry topic number `round` of its base, due in `delay` seconds.
        False (nothing written) when it would not fit there with its retry headers: a retry cannot
        be truncated, so it is the dead letter's to keep. HeaderError when its attempt count cannot
        be carried on."""
        msg = inbound.msg
        out = retry_headers(msg, headers, self.group, exc, delay, origin=inbound.provenance())
        topic = retry_topic(inbound.base, self.group, round)
        if record_size(msg.key(), msg.value(), out) > self.limit(topic):
            return False
        self._write(topic, msg.key(), msg.value(), out)
        return True

    def dead_letter(self, inbound: Inbound, headers: Mapping[str, str], exc: BaseException,
                    extra: Mapping[str, object] | None = None) -> None:
        """Write the record to the dead-letter topic of its base, made to fit; a job counts as
        failed in its store."""
        msg = inbound.msg
        out = dead_letter_headers(msg, headers, self.group, exc, extra, origin=inbound.provenance())
        topic = dead_letter_topic(inbound.base, self.group)
        key, value, fitted = fit_dead_letter(msg.key(), msg.value(), out, self.limit(topic))
        self._write(topic, key, value, fitted)
        self.report(inbound, f"{error_type(exc)}: {out[h.ERROR_MESSAGE]}")

    def report(self, inbound: Inbound, failure: str | None) -> None:
        """Tell the store a job is done (or failed for good). Flushed with the batch, before its
        offsets are stored; the store counts job indices, so a repeat after a crash changes nothing.
        A record that is not a job (no kw-request-id or kw-job-index: the boundary decided) is not
        reported; one rejected at the boundary is never a job."""
        if self.store_client is None or inbound.job_index < 0 or inbound.request_id is None \
                or isinstance(inbound.error, h.HeaderError):
            return
        # Traced, the command carries the handler span's context (the message's own for a batch).
        trace = inbound.trace.headers() if inbound.trace is not None else None
        if failure is None:
            self.store_client.complete(inbound.request_id, inbound.job_index, flush=False, trace=trace)
        else:
            self.store_client.fail(inbound.request_id, inbound.job_index, failure[:MAX_REPORTED_REASON],
                                   flush=False, trace=trace)
        self.unflushed = True

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

    def _write(self, topic: str, key: bytes | None, value: bytes | None, headers: Mapping[str, object]) -> None:
        # The key as it is on the wire: a key that is not UTF-8 keeps its partition and its order.
        self.producer().send(topic, value or b"", key=key, headers=headers, raw=True)
        self.unflushed = True
