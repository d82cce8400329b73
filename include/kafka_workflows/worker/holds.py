"""Held partitions: paused behind a failing message (`blocked`) or until a retry is due (`waiting`).

No thread sleeps for a retry. A hold pauses its partition and rewinds it to the held message;
`resume_due` resumes it once its time has come, and the message is read again. The table is a
dict keyed by (topic, partition) so the worker's hot path tests `tp in held` at dict speed.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Literal

from confluent_kafka import Consumer, TopicPartition
from confluent_kafka import Message as KafkaMessage

TP = tuple[str, int]
FOREVER = float("inf")


@dataclass
class Hold:
    """A paused partition: `blocked` behind a failing message, or `waiting` for a retry to be due."""

    kind: Literal["blocked", "waiting"]
    offset: int
    due: float  # time.monotonic() at which to resume; FOREVER once resumed
    raw: KafkaMessage
    failures: int = 0
    error: str = ""
    since: float = 0.0
    next_attempt_at: float = 0.0
    forced: bool = False  # an operator's unblock: handle now, whatever kw-retry-at says

    def describe(self) -> dict[str, Any]:
        return {"kind": self.kind, "topic": self.raw.topic(), "partition": self.raw.partition(),
                "offset": self.offset, "failures": self.failures, "error": self.error, "since": self.since,
                "next_attempt_at": self.next_attempt_at,
                "key": self.raw.key().decode("utf-8", "replace") if self.raw.key() is not None else None}


class HoldTable(dict[TP, Hold]):
    """The holds of one worker's consumer."""

    def hold(self, consumer: Consumer, msg: KafkaMessage, kind: Literal["blocked", "waiting"], delay: float,
             failures: int = 0, error: str = "") -> Hold:
        """Pause `msg`'s partition and rewind it to `msg` for `delay` seconds."""
        tp = (msg.topic(), msg.partition())
        consumer.pause([TopicPartition(*tp)])
        consumer.seek(TopicPartition(msg.topic(), msg.partition(), msg.offset()))
        previous = self.get(tp)
        hold = self[tp] = Hold(
            kind, msg.offset(), time.monotonic() + delay, msg, failures, error,
            since=previous.since if previous is not None and previous.offset == msg.offset() else time.time(),
            next_attempt_at=time.time() + delay)
        return hold

    def next_due(self) -> float:
        return min((hold.due for hold in self.values()), default=FOREVER)

    def resume_due(self, consumer: Consumer) -> None:
        """Resume the partitions whose hold is due; the hold stays known until its message is done."""
        if not self:
            return
        now = time.monotonic()
        due = [tp for tp, hold in self.items() if hold.due <= now]
        if due:
            consumer.resume([TopicPartition(t, p) for t, p in due])
            for tp in due:
                self[tp].due = FOREVER

    def blocked(self) -> int:
        return sum(1 for hold in self.values() if hold.kind == "blocked")

    def describe(self) -> list[dict[str, Any]]:
        return [hold.describe() for hold in self.values()]
