"""The message strategy: consumed messages handed to a message handler, one at a time.

The hot path (`handle`): a message of a request topic on a partition nothing holds is read at the
inbound boundary (worker/inbound.py), handed to the handler (its value decoded when first read)
and counted with no more than that. Everything else (consumer errors, held partitions, retry
topics, records the boundary refused) goes the general way, `process`, one message at a time; the
batch strategy (worker/batches.py) uses that general way too. The per-message cost of `handle` is
what bench/worker_throughput.py measures against a bare consume loop.

What a failure becomes is carried out by worker/outcomes.py; a hold here pauses the partition and
rewinds it to the failed message (worker/holds.py).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException
from confluent_kafka import Message as KafkaMessage

from kafka_workflows import headers as h
from kafka_workflows.errors import BatchItemFailed, MessageDecodeError
from kafka_workflows.messages import NOT_DECODED, Message, MessageBatch, decode_value, where
from kafka_workflows.observe import tracing
from kafka_workflows.worker.context import WorkerContext, WorkerStats
from kafka_workflows.worker.holds import FOREVER
from kafka_workflows.worker.inbound import Inbound
from kafka_workflows.worker.outcomes import Hold, Outcomes

log = logging.getLogger(__name__)

TP = tuple[str, int]
# A retry due further ahead than this (a kw-retry-at written by someone else) is looked at again then.
MAX_RETRY_WAIT_S = 24 * 3600.0
Handler = Callable[[Message], Any] | Callable[[MessageBatch], Any]

__all__ = ["MAX_RETRY_WAIT_S", "Handler", "MessageStrategy", "WorkerStats"]


class MessageStrategy:
    """A message handler's calls, one at a time; also the general way of a batch handler, whose
    handler then gets each message as a batch of one."""

    def __init__(self, ctx: WorkerContext, outcomes: Outcomes, handler: Handler, batch: bool = False) -> None:
        self.ctx = ctx
        self.outcomes = outcomes
        self.handler = handler
        # The general way hands one message at a time, as a batch of one to a batch handler.
        self._call_one: Callable[[Message], Any] = (
            (lambda message: handler(MessageBatch.of(message))) if batch else handler)  # type: ignore[arg-type]

    def handle(self, consumer: Consumer, batch: list[KafkaMessage]) -> None:
        """Handle a consumed batch, noting in the checkpoint the next offset to store per partition.

        The value is decoded when the handler first reads it (an undecodable one is dead-lettered
        then). Consecutive successes on one partition make a run: the run is timed as a whole (the
        histogram gets its mean for each of its calls) and its offset noted once, at its end.
        """
        ctx, outcomes = self.ctx, self.outcomes
        held, retry_topics, handler = ctx.holds, ctx.retry_topics, self.handler
        read, plain = ctx.boundary.read, ctx.boundary.plain
        clock, checkpoint, cut = time.perf_counter, ctx.checkpoint, ctx.cut
        done = checkpoint.pending
        # Every record is read in full when reporting to a store, decoding with a schema, or traced
        # (observe/tracing.py: its trace context is the handler span's parent). Off, the tracing flag is
        # all tracing costs: read once a batch, not once a message.
        traced = tracing.ENABLED
        full = ctx.boundary.full or traced
        run_topic: str | None = None  # the run: its partition, start, size and last message
        run_partition, run_started, run, last = -1, 0.0, 0, None
        due = checkpoint.progress_due
        for msg in batch:
            if cut.interrupted:
                cut.mark(msg)  # not handled, not stored: fetched again, or the next owner gets it
                break
            topic, partition = msg.topic(), msg.partition()
            if msg.error() is not None or (held and (topic, partition) in held) or topic in retry_topics:
                if run:
                    self._run_done(run_topic, run_partition, last, clock() - run_started, run, done)  # type: ignore[arg-type]
                    run = 0
                ctx.store_progress(consumer)
                if self.process(consumer, msg):
                    done[(topic, partition)] = msg.offset() + 1
                run_topic, due = None, checkpoint.progress_due
                continue
            # The boundary: read in full when reporting to a store or decoding with a schema; else only
            # asked whether the record is plain (no object built); one that is not goes the general way.
            inbound = read(msg) if full else None
            if (inbound.error is not None) if inbound is not None else not plain(msg):
                if run:
                    self._run_done(run_topic, run_partition, last, clock() - run_started, run, done)  # type: ignore[arg-type]
                    run = 0
                if self.process(consumer, msg):
                    done[(topic, partition)] = msg.offset() + 1
                run_topic, due = None, checkpoint.progress_due
                continue
            message = Message(msg) if inbound is None else Message(msg, inbound.value, base=inbound.base)
            started = clock()
            if partition != run_partition or topic != run_topic or started >= due:  # a new run
                if run:
                    self._run_done(run_topic, run_partition, last, started - run_started, run, done)  # type: ignore[arg-type]
                    run = 0
                if started >= due:  # a long batch stores its progress as it goes
                    ctx.store_progress(consumer)
                    started, due = clock(), checkpoint.progress_due
                run_topic, run_partition, run_started = topic, partition, started
            try:
                if traced:
                    self._traced(inbound, message)  # type: ignore[arg-type]
                else:
                    handler(message)
            except Exception as exc:  # noqa: BLE001 - every handler failure goes through the policy
                if run:  # the run before the failed call; the failed call is not observed (it did not return)
                    self._run_done(topic, partition, last, started - run_started, run, done)  # type: ignore[arg-type]
                    run = 0
                run_topic = None
                if inbound is None:
                    inbound = read(msg)  # plain: accepted
                if outcomes.failed(inbound, message.headers, exc, 1, self._holder(consumer, msg, 1)):
                    done[(topic, partition)] = msg.offset() + 1
                due = checkpoint.progress_due
                continue
            run += 1
            if inbound is not None:
                outcomes.done(inbound)
            last = msg
        if run:
            self._run_done(run_topic, run_partition, last, clock() - run_started, run, done)  # type: ignore[arg-type]

    def _traced(self, inbound: Inbound, message: Message) -> None:
        """One handler call inside its consumer span, a child of the message's trace context; a job's
        store report then carries the span's context (worker/writes.py)."""
        msg = inbound.msg
        topic = msg.topic()
        attributes = tracing.messaging(topic, msg.partition(), msg.offset(), group=self.ctx.group)
        attributes["kw.attempt"] = inbound.attempt
        if inbound.request_id is not None:
            attributes["kw.request_id"] = inbound.request_id
        if inbound.job_index >= 0:
            attributes["kw.job_index"] = inbound.job_index
        with tracing.span(f"process {topic}", kind="CONSUMER", parent=inbound.trace, attributes=attributes):
            inbound.trace = tracing.current()
            self._call_one(message)

    def _run_done(self, topic: str, partition: int, last: KafkaMessage, elapsed: float, calls: int,
                  done: dict[TP, int]) -> None:
        """A run of `calls` successes on one partition, ending at `last`, took `elapsed` seconds."""
        self.ctx.tallies.run(topic, elapsed, calls)
        done[(topic, partition)] = last.offset() + 1

    def _holder(self, consumer: Consumer, msg: KafkaMessage, failures: int) -> Hold:
        """How a failed message of this strategy waits: its partition paused and rewound to it."""
        ctx = self.ctx

        def hold(delay: float, error: str, given_back: bool) -> None:
            ctx.holds.hold(consumer, msg, "blocked", delay, failures=failures - given_back, error=error)
            ctx.metrics.blocked.labels(ctx.group).set(ctx.holds.blocked())
        return hold

    # -- the general way -------------------------------------------------------------------
    def process(self, consumer: Consumer, msg: KafkaMessage) -> bool:
        """Handle one message the general way; True when its offset may be stored."""
        err = msg.error()
        if err is not None:
            if err.code() != KafkaError._PARTITION_EOF:
                if err.fatal():
                    raise KafkaException(err)
                log.warning("consumer error: %s", err.str())
            return False
        ctx, outcomes, held = self.ctx, self.outcomes, self.ctx.holds
        tp: TP = (msg.topic(), msg.partition())
        hold = held.get(tp)
        if hold is not None and (hold.due != FOREVER or msg.offset() != hold.offset):
            return False  # fetched before the pause and rewind took effect
        inbound = ctx.boundary.read(msg)
        if inbound.error is not None:
            held.pop(tp, None)
            outcomes.reject(inbound)
            return True
        if inbound.round is not None and not (hold is not None and hold.forced):
            wait = inbound.retry_at / 1000 - time.time()
            if wait > 0:
                held.hold(consumer, msg, "waiting", min(wait, MAX_RETRY_WAIT_S))
                return False
        failures = 0
        if hold is not None and hold.kind == "waiting":
            del held[tp]
            hold = None
        elif hold is not None:
            failures = hold.failures
        headers = h.decode(msg.headers())
        if failures:  # an in-place retry: which attempt this is
            headers[h.ATTEMPT] = str(inbound.attempt_after(failures))
        try:
            value = inbound.value if inbound.value is not NOT_DECODED else decode_value(msg.value(), where(msg))
        except MessageDecodeError as exc:
            log.error("%s; dead-lettering it without calling the handler", exc)
            held.pop(tp, None)
            outcomes.dead_letter(inbound, headers, exc)
            return True
        message = Message(msg, value, headers, base=inbound.base)
        started = time.perf_counter()
        try:
            if tracing.ENABLED:
                self._traced(inbound, message)
            else:
                self._call_one(message)
        except Exception as exc:  # noqa: BLE001 - every handler failure goes through the policy
            if isinstance(exc, BatchItemFailed):  # a batch handler naming its only message
                exc = exc.cause if isinstance(exc.cause, Exception) else exc
            moved_on = outcomes.failed(inbound, message.headers, exc, failures + 1,
                                       self._holder(consumer, msg, failures + 1))
            if moved_on and held.pop(tp, None) is not None:
                ctx.metrics.blocked.labels(ctx.group).set(held.blocked())
            return moved_on
        ctx.tallies.call(inbound.base, time.perf_counter() - started)
        outcomes.done(inbound)
        if hold is not None:
            del held[tp]
            ctx.metrics.blocked.labels(ctx.group).set(held.blocked())
            ctx.on_change()
            log.info("%s succeeded after %d failed attempt(s); partition unblocked", where(msg), hold.failures)
        return True
