"""Poison inputs of an exactly-once processor: dead-lettered inside the transaction, not fatal.

A topic holds whatever any producer wrote. When a handler raises on an input, that input goes to
`<topic>.<group>.dlq` in the open transaction, with the worker's provenance headers, and the
processor goes on: the dead letter commits together with the input offsets, so counts stay exact.

- A handler that keeps the default `process_batch` is called once a message, and only the
  message whose `process` raises is dead-lettered (so `process` must not change state before it
  raises).
- A handler with its own `process_batch` that raises cannot say which message failed: the
  processor aborts, rewinds, and `PoisonGuard` then has it take those messages one at a time
  (`careful`), so only the one that fails is dead-lettered.
- A record that fails the inbound boundary (eos/inbound.py) is dead-lettered without reaching
  the handler.

A dead letter always fits its topic (retry/fit.py): the input's value plus the provenance headers
can outgrow the dead-letter topic's limit (`dead_letter_limits`: the topic's max.message.bytes
when known, capped by the producer's message.max.bytes, default 1,000,000), so the value is
truncated or omitted with headers saying so, instead of failing the transaction in a loop.
"""

from __future__ import annotations

import logging

from confluent_kafka import KafkaException
from confluent_kafka import Message as KafkaMessage

from kafka_workflows import headers as h
from kafka_workflows.eos.handler import TP, Output, TransactionalHandler
from kafka_workflows.eos.inbound import InboundError, inbound, where
from kafka_workflows.errors import RegistryUnavailableError
from kafka_workflows.kafka.msgsize import PRODUCER_DEFAULT
from kafka_workflows.retry.fit import fit_dead_letter
from kafka_workflows.retry.provenance import dead_letter_headers
from kafka_workflows.retry.topics import dead_letter_topic

log = logging.getLogger(__name__)


class PoisonGuard:
    def __init__(self, handler: TransactionalHandler, group: str, *, max_record_bytes: int | None = None,
                 dead_letter_limits: dict[str, int] | None = None, default_limit: int = PRODUCER_DEFAULT) -> None:
        self.handler = handler
        self.group = group
        self.max_record_bytes = max_record_bytes
        self.dead_letter_limits = dict(dead_letter_limits or {})  # dead-letter topic -> its record limit
        self.default_limit = default_limit
        self.per_message = type(handler).process_batch is TransactionalHandler.process_batch
        self.careful: dict[TP, int] = {}  # partitions to take one message at a time, up to this offset
        self.dead_lettered = 0

    def outputs(self, batch: list[KafkaMessage]) -> list[Output] | None:
        """The batch's outputs, poison inputs dead-lettered; None when the transaction must be
        aborted and rewound (a custom process_batch raised: its messages come again one at a time)."""
        refused: list[Output] = []
        accepted = []
        for msg in batch:  # the inbound boundary: checked once, before any handler sees the record
            try:
                inbound(msg, self.max_record_bytes)
                accepted.append(msg)
            except InboundError as exc:
                refused.append(self.dead_letter(msg, exc))
        batch = accepted
        if not batch:
            return refused
        outputs = self._outputs(batch)
        return None if outputs is None else refused + outputs

    def _outputs(self, batch: list[KafkaMessage]) -> list[Output] | None:
        if self.per_message or any(m.offset() <= self.careful.get((m.topic(), m.partition()), -1) for m in batch):
            return self._one_at_a_time(batch)
        try:
            return list(self.handler.process_batch(batch))
        except (KafkaException, RegistryUnavailableError):
            raise
        except Exception as exc:  # noqa: BLE001 - a poison input somewhere in the batch
            log.warning("%s: the handler's process_batch raised %s on %s..%s; aborting and taking those "
                        "messages one at a time", self.group, type(exc).__name__, where(batch[0]), where(batch[-1]))
            for msg in batch:
                tp = (msg.topic(), msg.partition())
                self.careful[tp] = max(self.careful.get(tp, -1), msg.offset())
            return None

    def done(self, batch: list[KafkaMessage]) -> None:
        """The batch is in the transaction: partitions past their careful offset go back to batches."""
        for msg in batch:
            tp = (msg.topic(), msg.partition())
            if tp in self.careful and self.careful[tp] <= msg.offset():
                del self.careful[tp]

    def _one_at_a_time(self, batch: list[KafkaMessage]) -> list[Output]:
        outputs: list[Output] = []
        for msg in batch:
            try:
                outputs.extend(self.handler.process(msg) if self.per_message else self.handler.process_batch([msg]))
            except (KafkaException, RegistryUnavailableError):  # not the record's fault: the unit gives up
                raise
            except Exception as exc:  # noqa: BLE001 - a poison input: dead-lettered, the processor goes on
                outputs.append(self.dead_letter(msg, exc))
        return outputs

    def dead_letter(self, msg: KafkaMessage, exc: BaseException) -> Output:
        """`msg` as a dead letter that fits its topic, with the provenance and the error."""
        topic = dead_letter_topic(msg.topic(), self.group)
        log.error("%s: %s: %s; dead-lettering it to %s in the transaction", where(msg), type(exc).__name__,
                  str(exc)[:200], topic)
        self.dead_lettered += 1
        schema_headers = getattr(exc, "schema_headers", None)  # a value that does not decode with its schema
        headers = dead_letter_headers(msg, h.decode(msg.headers()), self.group, exc,
                                      schema_headers() if callable(schema_headers) else None)
        limit = self.dead_letter_limits.get(topic, self.default_limit)
        key, value, fitted = fit_dead_letter(msg.key(), msg.value(), headers, limit)
        return Output(topic, key, value, fitted)
