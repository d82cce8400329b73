"""The batch strategy: runs of consecutive messages of one partition, and what a batch failure means.

`BatchItemFailed(i)`: the messages before `i` are done, message `i` goes through the retry policy
with the chained error, the ones after it come again. Any other error says nothing of which
message failed: the run is handed over again one message at a time (the message strategy's
general way, worker/dispatch.py), so the policy acts on the message that actually fails. A value
that cannot be decoded and is named by `BatchItemFailed(i)` is dead-lettered at once: decoding
again cannot help. Every record is read at the inbound boundary before it joins a run: one the
boundary refuses is dead-lettered, never handed to the handler.
"""

from __future__ import annotations

import logging
import time

from confluent_kafka import Consumer
from confluent_kafka import Message as KafkaMessage

from kafka_workflows import headers as h
from kafka_workflows.errors import BatchItemFailed, MessageDecodeError
from kafka_workflows.messages import Message, MessageBatch, where
from kafka_workflows.observe import tracing
from kafka_workflows.worker.context import WorkerContext
from kafka_workflows.worker.dispatch import Handler, MessageStrategy
from kafka_workflows.worker.inbound import Inbound
from kafka_workflows.worker.outcomes import Outcomes

log = logging.getLogger(__name__)

TP = tuple[str, int]


class BatchStrategy:
    """A `@batch_handler`'s calls: runs of one partition; the general way for everything else."""

    def __init__(self, ctx: WorkerContext, outcomes: Outcomes, handler: Handler, general: MessageStrategy) -> None:
        self.ctx = ctx
        self.outcomes = outcomes
        self.handler = handler
        self.general = general
        self._decoded: dict[int, Inbound] = {}  # id(record) -> its inbound, when values have a schema

    def handle(self, consumer: Consumer, batch: list[KafkaMessage]) -> None:
        """Runs of consecutive messages of one partition go to `_handle_run`; what needs the
        general way goes to `MessageStrategy.process`, one message at a time."""
        ctx = self.ctx
        held, retry_topics, cut = ctx.holds, ctx.retry_topics, ctx.cut
        boundary = ctx.boundary
        # The boundary: a record joins a run only when it is plain (or, reporting to a store, read
        # and accepted); any other goes the general way, which reads it and refuses it, named.
        # With a schema, the decoded values are kept for the run's messages (decoded once, here).
        decoded = self._decoded
        decoded.clear()

        def read_in_full(msg: KafkaMessage) -> bool:
            inbound = boundary.read(msg)
            if inbound.error is not None:
                return False
            if boundary.codecs:
                decoded[id(msg)] = inbound
            return True

        accepted = read_in_full if boundary.full else boundary.plain
        done = ctx.checkpoint.pending
        run: list[KafkaMessage] = []
        run_tp: TP | None = None
        for msg in batch:
            topic = msg.topic()
            tp = (topic, msg.partition())
            if msg.error() is not None or (held and tp in held) or topic in retry_topics or not accepted(msg):
                if run:
                    self._handle_run(consumer, run)
                    run, run_tp = [], None
                if cut.interrupted:
                    cut.mark(msg)
                    return
                ctx.store_progress(consumer)
                if self.general.process(consumer, msg):
                    done[tp] = msg.offset() + 1
            elif tp == run_tp:
                run.append(msg)
            else:
                if run:
                    self._handle_run(consumer, run)
                run, run_tp = [msg], tp
        if run:
            self._handle_run(consumer, run)

    def _handle_run(self, consumer: Consumer, records: list[KafkaMessage]) -> None:
        """Hand one partition's consecutive messages to the batch handler; see `batch_handler`."""
        ctx, outcomes = self.ctx, self.outcomes
        done, cut = ctx.checkpoint.pending, ctx.cut
        topic = records[0].topic()
        tp = (topic, records[0].partition())
        while records:
            ctx.store_progress(consumer)
            if cut.interrupted:
                cut.mark(records[0])  # not handled, not stored
                return
            started = time.perf_counter()
            try:
                if tracing.ENABLED:
                    self._traced(records)
                else:
                    self.handler(self._batch(records))  # type: ignore[arg-type]
            except Exception as exc:  # noqa: BLE001 - every handler failure goes through the policy
                index, cause = failed_index(records, exc)
                if index is None:
                    log.info("batch handler failed on %s (%s: %s) without naming a message; handling its %d "
                             "message(s) one at a time", where(records[0]), type(exc).__name__, exc, len(records))
                    for msg in records:
                        ctx.store_progress(consumer)
                        if cut.interrupted:
                            cut.mark(msg)
                            return
                        if self.general.process(consumer, msg):
                            done[tp] = msg.offset() + 1
                    return
                if index:  # done, though the call did not return: counted, not timed
                    self._batch_done(records[:index], None)
                failing = records[index]
                moved_on = outcomes.failed(ctx.boundary.read(failing), h.decode(failing.headers()), cause, 1,
                                           self.general._holder(consumer, failing, 1))
                if not moved_on:
                    return  # the partition is held at the failing message; the rest come again
                done[tp] = failing.offset() + 1
                records = records[index + 1:]
            else:
                self._batch_done(records, time.perf_counter() - started)
                return

    def _batch(self, records: list[KafkaMessage]) -> MessageBatch:
        if not self._decoded:
            return MessageBatch(records)
        inbounds = [self._decoded.get(id(msg)) for msg in records]
        return MessageBatch(records, [None if i is None else Message(i.msg, i.value, base=i.base) for i in inbounds])

    def _traced(self, records: list[KafkaMessage]) -> None:
        """One batch call inside its consumer span, linked to every message's trace context (OpenTelemetry's
        messaging conventions: a batch links each message's creation). When every message carries the
        same trace (a split's jobs: one DAG run), the span joins it, a child of the first message's context."""
        read = self.ctx.boundary.read
        inbound = [read(msg) for msg in records]
        contexts = [i.trace for i in inbound if i.trace is not None]
        first = records[0]
        attributes = tracing.messaging(first.topic(), first.partition(), first.offset(), group=self.ctx.group,
                                       count=len(records))
        jobs = [i.job_index for i in inbound if i.job_index >= 0]
        if jobs:
            attributes["kw.job_indexes"] = jobs
        same = bool(contexts) and len(contexts) == len(records) and all(
            c.trace_id == contexts[0].trace_id for c in contexts)
        with tracing.span(f"process {first.topic()}", kind="CONSUMER", parent=contexts[0] if same else None,
                          links=contexts, attributes=attributes):
            self.handler(self._batch(records))  # type: ignore[arg-type]

    def _batch_done(self, records: list[KafkaMessage], elapsed: float | None) -> None:
        ctx = self.ctx
        topic = records[0].topic()
        if elapsed is None:
            ctx.tallies.count(topic, len(records))
        else:
            ctx.tallies.call(topic, elapsed, len(records))
        if ctx.boundary.report:
            for msg in records:
                self.outcomes.done(ctx.boundary.read(msg))
        ctx.checkpoint.pending[(topic, records[0].partition())] = records[-1].offset() + 1


def failed_index(records: list[KafkaMessage], exc: Exception) -> tuple[int | None, Exception]:
    """Which message of a batch failed, and with what error, when the handler's exception says so."""
    if isinstance(exc, BatchItemFailed):
        if not 0 <= exc.index < len(records):
            log.warning("batch handler named message %d of a batch of %d; handling the batch one message at a time",
                        exc.index, len(records))
            return None, exc
        cause = exc.cause if isinstance(exc.cause, Exception) else exc
        if isinstance(cause, MessageDecodeError) and cause.record not in (None, records[exc.index]):
            log.warning("batch handler named message %d for a value that is not its own; handling the batch one "
                        "message at a time", exc.index)
            return None, exc
        return exc.index, cause
    # Anything else, an undecodable value read in the batch included, says nothing of the messages
    # before the failing one: a handler that writes a batch at its end has not written them.
    return None, exc
