"""Batch handlers: runs of consecutive messages of one partition, and what a batch failure means.

`BatchItemFailed(i)`: the messages before `i` are done, message `i` goes through the retry policy
with the chained error, the ones after it come again. Any other error says nothing of which
message failed: the run is handed over again one message at a time (the dispatcher's general
way), so the policy acts on the message that actually fails. A value that cannot be decoded and
is named by `BatchItemFailed(i)` is dead-lettered at once: decoding again cannot help.

A mixin of `Dispatcher` (worker/dispatch.py), whose state and general way it uses.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from confluent_kafka import Consumer
from confluent_kafka import Message as KafkaMessage

from kafka_workflows import headers as h
from kafka_workflows.errors import BatchItemFailed, MessageDecodeError
from kafka_workflows.messages import MessageBatch, where

if TYPE_CHECKING:
    from kafka_workflows.worker.holds import HoldTable
    from kafka_workflows.worker.writes import Writes

log = logging.getLogger(__name__)

TP = tuple[str, int]


class BatchHandling:
    """The batch-handler half of the dispatcher (it provides the attributes and methods below)."""

    handler: Callable[..., Any]
    held: HoldTable
    retry_topics: dict[str, tuple[str, int]]
    writes: Writes
    interrupted: bool
    cut_at: KafkaMessage | None
    _batch_messages: dict[str, int]

    if TYPE_CHECKING:  # provided by Dispatcher
        def _store_progress(self, consumer: Consumer, done: dict[TP, int]) -> None: ...
        def process(self, consumer: Consumer, msg: KafkaMessage) -> bool: ...
        def on_failure(self, consumer: Consumer, msg: KafkaMessage, headers: dict[str, str],
                       origin: tuple[str, int] | None, exc: Exception) -> bool: ...
        def dead_letter(self, msg: KafkaMessage, headers: dict[str, str], origin: tuple[str, int] | None,
                        exc: BaseException, extra: dict[str, object] | None = None) -> None: ...
        def _untrusted(self, msg: KafkaMessage, headers: dict[str, str], origin: tuple[str, int] | None,
                       error: h.HeaderError | None = None) -> None: ...
        def _tally(self, base: str, elapsed: float, messages: int = 1) -> None: ...

    def handle_batches(self, consumer: Consumer, batch: list[KafkaMessage], done: dict[TP, int]) -> None:
        """`handle` for a batch handler: runs of consecutive messages of one partition go to
        `_handle_run`; what needs the general way goes to `process`, one message at a time."""
        held, retry_topics = self.held, self.retry_topics
        report = self.writes.store_client is not None
        run: list[KafkaMessage] = []
        run_tp: TP | None = None
        for msg in batch:
            topic = msg.topic()
            tp = (topic, msg.partition())
            if (msg.error() is not None or (held and tp in held) or topic in retry_topics
                    or (report and not h.valid_int_header(h.decode(msg.headers()), h.JOB_INDEX))):
                if run:
                    self._handle_run(consumer, run, done)
                    run, run_tp = [], None
                if self.interrupted:
                    self.cut_at = self.cut_at or msg
                    return
                self._store_progress(consumer, done)
                if self.process(consumer, msg):
                    done[tp] = msg.offset() + 1
            elif tp == run_tp:
                run.append(msg)
            else:
                if run:
                    self._handle_run(consumer, run, done)
                run, run_tp = [msg], tp
        if run:
            self._handle_run(consumer, run, done)

    def _handle_run(self, consumer: Consumer, records: list[KafkaMessage], done: dict[TP, int]) -> None:
        """Hand one partition's consecutive messages to the batch handler; see `batch_handler`."""
        topic = records[0].topic()
        tp = (topic, records[0].partition())
        while records:
            self._store_progress(consumer, done)
            if self.interrupted:
                self.cut_at = self.cut_at or records[0]  # not handled, not stored
                return
            started = time.perf_counter()
            try:
                self.handler(MessageBatch(records))  # type: ignore[arg-type]
            except Exception as exc:  # noqa: BLE001 - every handler failure goes through the policy
                index, cause = failed_index(records, exc)
                if index is None:
                    log.info("batch handler failed on %s (%s: %s) without naming a message; handling its %d "
                             "message(s) one at a time", where(records[0]), type(exc).__name__, exc, len(records))
                    for msg in records:
                        self._store_progress(consumer, done)
                        if self.interrupted:
                            self.cut_at = self.cut_at or msg
                            return
                        if self.process(consumer, msg):
                            done[tp] = msg.offset() + 1
                    return
                if index:  # done, though the call did not return: counted, not timed
                    self._batch_done(topic, records[:index], None, done)
                failing = records[index]
                headers = h.decode(failing.headers())
                if isinstance(cause, MessageDecodeError):  # decoding again cannot help
                    log.error("%s; dead-lettering it", cause)
                    self.dead_letter(failing, headers, None, cause)
                    moved_on = True
                else:
                    moved_on = self.on_failure(consumer, failing, headers, None, cause)
                if not moved_on:
                    return  # the partition is held at the failing message; the rest come again
                done[tp] = failing.offset() + 1
                records = records[index + 1:]
            else:
                self._batch_done(topic, records, time.perf_counter() - started, done)
                return

    def _batch_done(self, topic: str, records: list[KafkaMessage], elapsed: float | None,
                    done: dict[TP, int]) -> None:
        if elapsed is None:
            self._batch_messages[topic] = self._batch_messages.get(topic, 0) + len(records)
        else:
            self._tally(topic, elapsed, len(records))
        if self.writes.store_client is not None:
            for msg in records:
                headers = h.decode(msg.headers())
                if self.writes.report(headers, None) is not None:
                    self._untrusted(msg, headers, None)  # handled, but its job index cannot be counted
        done[(topic, records[0].partition())] = records[-1].offset() + 1


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
