"""Key-ordered concurrency: many keys of one partition at once, each key strictly in order.

What `Worker.run` calls with each consumed batch when the worker has `concurrency` > 1 (a
message handler; batch handlers keep their own path). From the loop thread it

1. carries out the outcomes of finished calls (runners.py puts them on a queue): a success is
   counted and reported; a failure goes through `retry.decision.decide` like everywhere else, and
   a `hold` becomes a *key hold*: only that key waits for its backoff, its later messages behind
   it in order, while other keys flow. Retries and dead letters are the same `Writes`;
2. admits the batch's messages into lanes (worker/lanes.py) and starts lane heads, up to
   `concurrency` calls at a time;
3. notes in the checkpoint the offset to store per partition: the lowest offset not done yet, so a crash
   repeats at most what was in flight (the checkpoint stores it after the writes are durable);
4. applies backpressure: when admitted-and-not-done messages or bytes reach their caps it stops
   consuming (librdkafka's prefetch queue is capped to the same size: it stops fetching), and
   after PAUSE_AFTER seconds still at the caps pauses the assigned partitions, so that the loop
   can poll again; they are resumed once drained to half.

Every message is read at the inbound boundary (worker/inbound.py) before it is admitted: one the
boundary refuses is dead-lettered at once (it never takes a lane). Outcomes are carried out by
worker/outcomes.py, as for the other strategies; the state shared with them is the worker context.
A message read from a retry topic whose kw-retry-at is not due pauses its partition and rewinds to
it (the partition `waiting` hold of worker/holds.py), as without concurrency. On revoke the
waiting work of the revoked partitions is dropped (not stored), the running calls get
REVOKE_GRACE seconds to finish (their outcomes stored), and what is still running after that is
abandoned: the next owner repeats it. On stop the same happens for every partition.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from queue import Empty, SimpleQueue
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition
from confluent_kafka import Message as KafkaMessage

from kafka_workflows import headers as h
from kafka_workflows.messages import Message
from kafka_workflows.worker.context import WorkerContext
from kafka_workflows.worker.dispatch import MAX_RETRY_WAIT_S, Handler
from kafka_workflows.worker.holds import FOREVER
from kafka_workflows.worker.lanes import Entry, KeyHold, KeyScheduler
from kafka_workflows.worker.outcomes import Hold, Outcomes
from kafka_workflows.worker.runners import AsyncRunner, Outcome, ThreadRunner, is_async

log = logging.getLogger(__name__)

TP = tuple[str, int]
REVOKE_GRACE = 10.0  # seconds running calls of revoked (or, on stop, all) partitions get to finish
PAUSE_AFTER = 1.0  # seconds at the caps without consuming before the partitions are paused
BUSY_POLL = 0.005  # longest consume wait while calls run: their outcomes are read between polls
DEFAULT_MAX_BYTES = 64 * 1024 * 1024


def default_max_in_flight(concurrency: int) -> int:
    return max(1000, 10 * concurrency)


class ConcurrentStrategy:
    def __init__(self, ctx: WorkerContext, outcomes: Outcomes, handler: Handler, concurrency: int,
                 max_in_flight: int, max_in_flight_bytes: int, assignment: set[TP],
                 ops_paused: Callable[[], bool]) -> None:
        self.ctx = ctx
        self.outcomes = outcomes
        self.scheduler = KeyScheduler(concurrency, max_in_flight, max_in_flight_bytes)
        self.outcome_queue: SimpleQueue[Outcome] = SimpleQueue()
        self.runner: AsyncRunner | ThreadRunner = (
            AsyncRunner(handler, self.outcome_queue, ctx.group) if is_async(handler)  # type: ignore[arg-type]
            else ThreadRunner(handler, concurrency, self.outcome_queue, ctx.group))  # type: ignore[arg-type]
        self.assignment = assignment  # the worker's live set
        self._ops_paused = ops_paused
        self.pressed: set[TP] = set()  # partitions paused because the caps were reached
        self.revoking: set[TP] = set()
        self.in_flight, self.blocked_keys = ctx.metrics.concurrency_gauges()

    # -- the loop's calls ------------------------------------------------------------------
    def timeout(self) -> float:
        """How long the loop may wait for messages without leaving outcomes or holds waiting."""
        s = self.scheduler
        if not self.outcome_queue.empty():
            return 0.0
        if s.running:
            return BUSY_POLL
        return max(0.0, s.next_due() - time.monotonic())

    def handle(self, consumer: Consumer, batch: list[KafkaMessage]) -> None:
        ctx = self.ctx
        self.drain(consumer)
        held, read, s, cut = ctx.holds, ctx.boundary.read, self.scheduler, ctx.cut
        for msg in batch:
            if cut.stopping:
                break  # not admitted, not stored: the next owner gets it
            err = msg.error()
            if err is not None:
                if err.code() != KafkaError._PARTITION_EOF:
                    if err.fatal():
                        raise KafkaException(err)
                    log.warning("consumer error: %s", err.str())
                continue
            topic = msg.topic()
            tp = (topic, msg.partition())
            forced = False
            if held and tp in held:
                hold = held[tp]
                if hold.due != FOREVER or msg.offset() != hold.offset:
                    continue  # fetched before the pause and rewind took effect
                forced = hold.forced
                del held[tp]
            track = s.tracks.get(tp)
            if track is None:
                if tp not in self.assignment:
                    continue  # revoked meanwhile
                track = s.track(tp)
            elif msg.offset() < track.next_admit:
                continue  # admitted already
            inbound = read(msg)
            if inbound.round is not None and inbound.error is None and not forced:
                wait = inbound.retry_at / 1000 - time.time()
                if wait > 0:
                    held.hold(consumer, msg, "waiting", min(wait, MAX_RETRY_WAIT_S))
                    ctx.on_change()
                    continue
            if inbound.error is not None:  # refused at the boundary: dead-lettered, never handed over
                self.outcomes.reject(inbound)
                offset = s.passed(track, msg.offset())
                if offset is not None:
                    ctx.checkpoint.done(tp, offset)
                continue
            s.admit(Entry(msg, tp, inbound), track)
        self._start()
        self._pressure(consumer)
        self.in_flight.set(s.messages)

    def _start(self) -> None:
        s = self.scheduler
        if self.ctx.breaker is not None and not self.ctx.breaker.admits():
            return  # the circuit breaker is open: nothing starts until it lets probes through
        if s.holds:
            s.release_due(time.monotonic())
        started = s.start()
        if started:
            self.runner.submit([(entry, self._message(entry)) for entry in started])

    def _message(self, entry: Entry) -> Message:
        """The handler's view; the value is decoded when the handler first reads it."""
        return Message(entry.msg, entry.inbound.value,
                       headers=self._headers(entry) if entry.failures else entry.headers, base=entry.inbound.base)

    def _pressure(self, consumer: Consumer) -> None:
        """At the caps, stop taking messages: first by not consuming (librdkafka's prefetch queue is
        capped too), for up to PAUSE_AFTER seconds; then by pausing the assigned partitions, so the
        loop can go on polling (rebalances, liveness) while the calls drain. Resume once drained to
        half. (Pausing first would cost a fetch stall on every resume: librdkafka refetches up to
        a second later.)"""
        s = self.scheduler
        if s.full():
            if not self.pressed:
                deadline = time.monotonic() + PAUSE_AFTER
                while s.running and not s.drained() and not self.ctx.cut.stopping and time.monotonic() < deadline:
                    self.drain(consumer, wait=0.05)
            if s.full():  # (partitions assigned while pressed are paused too)
                more = [tp for tp in self.assignment if tp not in self.pressed]
                if more:
                    consumer.pause([TopicPartition(*tp) for tp in more])
                    self.pressed.update(more)
        if self.pressed:
            if s.running and not self.ctx.cut.stopping:
                self.drain(consumer, wait=0.1)
            # Not before: with every admitted message behind held keys nothing runs, and resuming
            # then would admit past the caps.
            if s.drained():
                held = self.ctx.holds
                back = [tp for tp in self.pressed if tp in self.assignment
                        and (tp not in held or held[tp].due == FOREVER)]
                if back and not self._ops_paused():
                    consumer.resume([TopicPartition(*tp) for tp in back])
                self.pressed.clear()

    # -- outcomes --------------------------------------------------------------------------
    def drain(self, consumer: Consumer, wait: float = 0.0) -> None:
        """Carry out every outcome waiting (the first one waited for up to `wait` seconds)."""
        queue = self.outcome_queue
        try:
            outcome = queue.get(timeout=wait) if wait > 0 else queue.get_nowait()
        except Empty:
            return
        while True:
            self._outcome(consumer, *outcome)
            try:
                outcome = queue.get_nowait()
            except Empty:
                break
        self._start()

    def _outcome(self, consumer: Consumer, entry: Entry, exc: Exception | None, elapsed: float) -> None:
        s, ctx = self.scheduler, self.ctx
        s.returned(entry)
        if entry.abandoned:
            return
        inbound = entry.inbound
        if exc is None:
            ctx.tallies.call(inbound.base, elapsed)
            self.outcomes.done(inbound)
            if entry.failures:
                ctx.on_change()
                log.info("%s[%d]@%d succeeded after %d failed attempt(s); key unblocked", *entry.tp, entry.offset,
                         entry.failures)
            self._finished(entry)
            return
        if entry.tp in self.revoking:
            return  # not done, not stored: the partition's next owner handles it
        if self.outcomes.failed(inbound, self._headers(entry), exc, entry.failures + 1, self._holder(entry)):
            self._finished(entry)

    def _holder(self, entry: Entry) -> Hold:
        """How a failed message of this strategy waits: its key held, other keys flowing."""
        def hold(delay: float, error: str, given_back: bool) -> None:
            entry.failures += not given_back
            self.scheduler.hold(entry, delay, error)
            self.blocked_keys.set(len(self.scheduler.holds))
        return hold

    @staticmethod
    def _headers(entry: Entry) -> dict[str, str]:
        """The message's headers; after failures in place, kw-attempt says which attempt this is."""
        if entry.headers is None:
            entry.headers = h.decode(entry.msg.headers())
        if not entry.failures:
            return entry.headers
        return {**entry.headers, h.ATTEMPT: str(entry.inbound.attempt_after(entry.failures))}

    def _finished(self, entry: Entry) -> None:
        had_hold = entry.lane is not None and entry.lane.hold is not None
        offset = self.scheduler.finished(entry)
        if had_hold:
            self.blocked_keys.set(len(self.scheduler.holds))
        if offset is not None:
            self.ctx.checkpoint.done(entry.tp, offset)

    # -- revoke, stop, status, operations --------------------------------------------------
    def revoke(self, consumer: Consumer, tps: set[TP], grace: float = REVOKE_GRACE) -> None:
        """Drop the waiting work of `tps`, give their running calls `grace` seconds, store what is done."""
        s = self.scheduler
        tps = {tp for tp in tps if tp in s.tracks}
        if not tps:
            return
        self.revoking |= tps
        s.drop_waiting(tps)
        deadline = time.monotonic() + grace
        try:
            while s.running_in(tps) and time.monotonic() < deadline:
                self.drain(consumer, wait=min(0.1, max(0.0, deadline - time.monotonic())))
            abandoned = s.forget(tps)
            if abandoned:
                log.warning("%d handler call(s) of revoked partitions still running after %.0fs: abandoned, "
                            "their offsets not stored", len(abandoned), grace)
            self.ctx.commit(consumer)
        finally:
            self.revoking -= tps
            self.pressed -= tps

    def close(self, consumer: Consumer) -> None:
        """On stop: finish (or abandon) the running calls of every partition, store what is done."""
        try:
            self.revoke(consumer, set(self.scheduler.tracks))
        except Exception:  # the worker is stopping anyway: its consumer must still be closed
            log.exception("storing the offsets of the work done on stop failed; it will be repeated")
        finally:
            self.runner.close()

    def retry_now(self) -> int:
        """Every key hold comes due now (an operator's switch to non-blocking retries); how many."""
        waiting = [hold for hold in self.scheduler.holds.values() if hold.due != float("inf")]
        for hold in waiting:
            hold.due = 0.0
        return len(waiting)

    def describe_holds(self) -> list[dict[str, Any]]:
        return [hold.describe() for hold in self.scheduler.holds.values()]

    def operate(self, consumer: Consumer, op: str, tp: TP, record: Mapping[str, Any], paused: bool) -> str:
        """skip/unblock with concurrency: act on one key's hold (named by key and/or offset)."""
        key, offset = record.get("key"), record.get("offset")
        where = f"{tp[0]}[{tp[1]}]"
        holds = [hold for hold in self.scheduler.holds.values()
                 if (hold.entry.msg.topic(), hold.entry.msg.partition()) == tp
                 and (offset is None or hold.entry.offset == offset)
                 and (key is None or hold.describe()["key"] == key)]
        partition_hold = self.ctx.holds.get(tp)
        if not holds and op == "unblock" and partition_hold is not None and key is None and (
                offset is None or offset == partition_hold.offset):
            partition_hold.due, partition_hold.forced = 0.0, True
            return f"retrying {where}@{partition_hold.offset} now"
        wanted = "".join([f" key {key!r}" if key is not None else "", f"@{offset}" if offset is not None else ""])
        if not holds:
            return f"nothing held at {where}{wanted}"
        if len(holds) > 1:
            return f"{len(holds)} keys held at {where}{wanted}: name one with --key or --offset"
        hold = holds[0]
        if op == "unblock":
            hold.due = 0.0
            self._start()
            return f"retrying {where}@{hold.entry.offset} key {hold.describe()['key']!r} now"
        self._skip(consumer, hold, record)
        return f"skipped {where}@{hold.entry.offset} key {hold.describe()['key']!r} to the dead-letter topic"

    def _skip(self, consumer: Consumer, hold: KeyHold, record: Mapping[str, Any]) -> None:
        entry = hold.entry
        self.outcomes.skip(entry.inbound, hold.error, record)
        self._finished(entry)
        self.ctx.commit(consumer)
        self._start()
