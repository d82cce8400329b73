"""Key-ordered scheduling for a concurrent worker: lanes per key, in-flight offsets per partition.

Pure bookkeeping, no Kafka calls and no threads (worker/concurrent.py drives it from the
worker's loop thread):

- A *lane* is one key of one partition: its admitted messages wait in offset order and at most
  one of them runs at a time, so a key's messages are handled strictly in order. A message with
  no key has a lane of its own (nothing orders it against other messages).
- At most `concurrency` messages run at once; lanes whose head may run wait in `ready`, a heap by
  the head's offset, so the lowest offsets go first: the stored offset keeps up with the work done
  (a crash repeats less) and no key starves.
- A *key hold* is a blocking retry of one key: the failed message stays at its lane's head until
  its backoff is due; later messages of that key wait behind it, other lanes flow.
- A *track* per partition knows every admitted offset not done yet. The offset to store is the
  lowest of them (or the last done + 1): a crash repeats at most what was admitted and not done.
- Capacity: admitted-and-not-done messages and their bytes are counted; `full()` says when to
  pause fetching, `drained()` when to resume.
"""

from __future__ import annotations

import heapq
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import Message as KafkaMessage

from kafka_workflows.worker.inbound import Inbound

TP = tuple[str, int]
LaneId = tuple[str, int, Any]  # topic, partition, key bytes (or the offset, for a message with no key)


class Entry:
    """One admitted message."""

    __slots__ = ("abandoned", "failures", "headers", "inbound", "lane", "msg", "offset", "size", "tp")

    def __init__(self, msg: KafkaMessage, tp: TP, inbound: Inbound | None = None) -> None:
        self.msg = msg
        self.tp = tp
        self.offset: int = msg.offset()
        key = msg.key()
        self.size = len(msg.value() or b"") + (len(key) if key is not None else 0)
        # read at the boundary (worker/inbound.py): origin and kw- headers, parsed once
        self.inbound = inbound if inbound is not None else Inbound(msg, msg.topic(), None)
        self.headers: dict[str, str] | None = None  # decoded when first needed
        self.failures = 0  # failed attempts in place (blocking retries) so far
        self.lane: Lane | None = None
        self.abandoned = False  # its partition was revoked while it ran: its outcome is not ours


@dataclass
class KeyHold:
    """A blocking retry of one key: its lane's head failed and is retried at `due` (monotonic)."""

    entry: Entry
    due: float
    error: str
    since: float = field(default_factory=time.time)
    next_attempt_at: float = 0.0

    def describe(self) -> dict[str, Any]:
        msg, entry = self.entry.msg, self.entry
        attempt = entry.inbound.attempt_after(entry.failures - 1)
        return {"kind": "blocked", "scope": "key", "topic": msg.topic(), "partition": msg.partition(),
                "offset": entry.offset, "key": msg.key().decode("utf-8", "replace") if msg.key() is not None else None,
                "failures": entry.failures, "attempt": attempt, "error": self.error, "since": self.since,
                "next_attempt_at": self.next_attempt_at}


class Lane:
    __slots__ = ("hold", "id", "queue", "running")

    def __init__(self, lane_id: LaneId) -> None:
        self.id = lane_id
        self.queue: deque[Entry] = deque()
        self.running = False
        self.hold: KeyHold | None = None


class Track:
    """The admitted offsets of one partition that are not done yet."""

    __slots__ = ("done", "next_admit", "pending")

    def __init__(self) -> None:
        self.pending: deque[int] = deque()  # admitted, in offset order
        self.done: set[int] = set()  # done, but behind an offset that is not
        self.next_admit = -1  # lower offsets were admitted already (a repeat fetch is ignored)

    def complete(self, offset: int) -> int | None:
        """`offset` is done: the offset to store now, or None when the lowest pending is not it."""
        pending = self.pending
        if not pending or pending[0] != offset:
            self.done.add(offset)
            return None
        pending.popleft()
        nxt = offset + 1
        done = self.done
        while pending and pending[0] in done:
            o = pending.popleft()
            done.discard(o)
            nxt = o + 1
        return pending[0] if pending else nxt


class KeyScheduler:
    def __init__(self, concurrency: int, max_messages: int, max_bytes: int) -> None:
        self.concurrency = concurrency
        self.max_messages = max_messages
        self.max_bytes = max_bytes
        self.lanes: dict[LaneId, Lane] = {}
        self.tracks: dict[TP, Track] = {}
        self.ready: list[tuple[int, int, Lane]] = []  # heap of (head offset, tie-breaker, lane)
        self._seq = 0
        self.holds: dict[LaneId, KeyHold] = {}
        self.running = 0
        self.running_by_tp: dict[TP, int] = {}
        self.messages = 0  # admitted and not done
        self.bytes = 0
        self.peak_messages = 0
        self.peak_bytes = 0

    # -- capacity --------------------------------------------------------------------------
    def full(self) -> bool:
        return self.messages >= self.max_messages or self.bytes >= self.max_bytes

    def drained(self) -> bool:
        return self.messages <= self.max_messages // 2 and self.bytes <= self.max_bytes // 2

    # -- admitting and starting ------------------------------------------------------------
    def track(self, tp: TP) -> Track:
        track = self.tracks.get(tp)
        if track is None:
            track = self.tracks[tp] = Track()
        return track

    def passed(self, track: Track, offset: int) -> int | None:
        """A record done as it was admitted, without a lane or a call (refused at the inbound
        boundary and dead-lettered): the offset to store, if it moved."""
        track.pending.append(offset)
        track.next_admit = offset + 1
        return track.complete(offset)

    def admit(self, entry: Entry, track: Track) -> None:
        key = entry.msg.key()
        lane_id: LaneId = (entry.tp[0], entry.tp[1], key if key is not None else entry.offset)
        lane = self.lanes.get(lane_id)
        if lane is None:
            lane = self.lanes[lane_id] = Lane(lane_id)
        entry.lane = lane
        lane.queue.append(entry)
        if len(lane.queue) == 1 and not lane.running and lane.hold is None:
            self._ready(lane)
        track.pending.append(entry.offset)
        track.next_admit = entry.offset + 1
        self.messages += 1
        self.bytes += entry.size
        if self.messages > self.peak_messages:
            self.peak_messages = self.messages
        if self.bytes > self.peak_bytes:
            self.peak_bytes = self.bytes

    def _ready(self, lane: Lane) -> None:
        self._seq += 1
        heapq.heappush(self.ready, (lane.queue[0].offset, self._seq, lane))

    def start(self) -> list[Entry]:
        """The lane heads that may run now (each is counted as running)."""
        started: list[Entry] = []
        ready = self.ready
        while ready and self.running < self.concurrency:
            lane = heapq.heappop(ready)[2]
            entry = lane.queue[0]
            lane.running = True
            self.running += 1
            self.running_by_tp[entry.tp] = self.running_by_tp.get(entry.tp, 0) + 1
            started.append(entry)
        return started

    # -- outcomes --------------------------------------------------------------------------
    def returned(self, entry: Entry) -> None:
        """A call of `entry` returned (whatever its outcome): its slot is free."""
        self.running -= 1
        left = self.running_by_tp.get(entry.tp, 1) - 1
        if left:
            self.running_by_tp[entry.tp] = left
        else:
            self.running_by_tp.pop(entry.tp, None)
        lane = entry.lane
        if lane is not None:
            lane.running = False

    def finished(self, entry: Entry) -> int | None:
        """`entry` is done (handled, retried or dead-lettered): the offset to store, if it moved."""
        lane = entry.lane
        assert lane is not None and lane.queue and lane.queue[0] is entry
        lane.queue.popleft()
        if lane.hold is not None:
            del self.holds[lane.id]
            lane.hold = None
        if lane.queue:
            if not lane.running:
                self._ready(lane)
        else:
            del self.lanes[lane.id]
        self.messages -= 1
        self.bytes -= entry.size
        track = self.tracks.get(entry.tp)
        return track.complete(entry.offset) if track is not None else None

    def hold(self, entry: Entry, delay: float, error: str) -> KeyHold:
        """Keep `entry` at its lane's head until `delay` seconds from now."""
        lane = entry.lane
        assert lane is not None
        previous = lane.hold
        hold = KeyHold(entry, time.monotonic() + delay, error, next_attempt_at=time.time() + delay)
        if previous is not None and previous.entry is entry:
            hold.since = previous.since
        lane.hold = self.holds[lane.id] = hold
        return hold

    def release_due(self, now: float) -> None:
        """Lanes whose hold is due may run their head again (the hold stays until it is done)."""
        for hold in self.holds.values():
            if hold.due <= now:
                hold.due = float("inf")
                lane = hold.entry.lane
                if lane is not None and not lane.running:
                    self._ready(lane)

    def next_due(self) -> float:
        return min((hold.due for hold in self.holds.values()), default=float("inf"))

    # -- revoke and stop -------------------------------------------------------------------
    def drop_waiting(self, tps: set[TP]) -> None:
        """Forget the entries of `tps` that are not running (their offsets stay pending: not stored)."""
        for lane_id in [lane_id for lane_id in self.lanes if (lane_id[0], lane_id[1]) in tps]:
            lane = self.lanes[lane_id]
            self.holds.pop(lane_id, None)
            lane.hold = None
            keep = 1 if lane.running else 0
            while len(lane.queue) > keep:
                entry = lane.queue.pop()
                entry.lane = None
                self.messages -= 1
                self.bytes -= entry.size
            if not lane.queue:
                del self.lanes[lane_id]
        self.ready = [item for item in self.ready if (item[2].id[0], item[2].id[1]) not in tps]
        heapq.heapify(self.ready)

    def running_in(self, tps: set[TP]) -> int:
        return sum(self.running_by_tp.get(tp, 0) for tp in tps)

    def forget(self, tps: set[TP]) -> list[Entry]:
        """Forget `tps` altogether; returns their entries still running (now abandoned)."""
        self.drop_waiting(tps)
        abandoned: list[Entry] = []
        for lane_id in [lane_id for lane_id in self.lanes if (lane_id[0], lane_id[1]) in tps]:
            for entry in self.lanes.pop(lane_id).queue:
                entry.abandoned = True
                self.messages -= 1
                self.bytes -= entry.size
                abandoned.append(entry)
        for tp in tps:
            self.tracks.pop(tp, None)
        return abandoned
