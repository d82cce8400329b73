"""Canary replay: dead letters sent back a few at a time, at a rate, for as long as they succeed.

After an outage the dead-letter topic holds thousands of letters, and the dependency that failed
may still be fragile. A canary replay sends the first `canary` letters, waits until they are
judged, and goes on (at `rate` letters a second) only if none failed; it stops on its own as soon
as a replayed letter comes back.

Every send is `ops.deadletters.replay_once` (the one idempotent replay: audited as `replayed`,
never sent twice). The signals, both read from Kafka:

failed     the letter came back: a record in the dead-letter topic whose `kw-replayed-from` names
           it (followed from the end the topic had when the canary started);
processed  the group's committed offset on the source partition is past where the letter landed
           (a worker commits a message once it is done: handled, or dead-lettered, which is
           flushed first). Processed and not back is a success.

Progress (`CanaryProgress`) goes to `on_progress` as it changes; the end, with its stop reason,
is recorded in the control topic as `kind: canary` (signed when a control secret is set), next to
the `replayed` records of each send: the audit log.
"""

from __future__ import annotations

import logging
import re
import threading
import time
import uuid
from collections.abc import Callable, Collection, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from confluent_kafka import Consumer, TopicPartition

from kafka_workflows import headers as h
from kafka_workflows.errors import ConfigError
from kafka_workflows.kafka.config import client_config
from kafka_workflows.kafka.producer import Delivered, RequestProducer
from kafka_workflows.kafka.reader import partition_reader
from kafka_workflows.ops.control import CONTROL_TOPIC, ensure_control_topics, operator_name, sign
from kafka_workflows.ops.deadletters import DeadLetter, Filter, list_dead_letters, replay_once, replayed_ids
from kafka_workflows.retry.topics import dead_letter_topic

log = logging.getLogger(__name__)

RATE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(?:/\s*s)?\s*$")


def parse_rate(text: str) -> float:
    """`--rate`: "N/s" or "N" letters a second, N > 0."""
    match = RATE.match(text)
    if match is None or float(match.group(1)) <= 0:
        raise ConfigError(f"--rate: expected letters a second such as 5/s (found {text[:40]!r})")
    return float(match.group(1))


@dataclass
class CanaryProgress:
    id: str
    group: str
    dead_letter_topic: str
    to: str
    total: int  # letters selected (not replayed before)
    canary: int
    rate: float
    state: str = "canary"  # canary -> running -> done | stopped
    sent: int = 0
    processed: int = 0
    failed: int = 0
    reason: str = ""  # why it stopped (or "done")
    by: str = ""
    started_at: float = field(default_factory=time.time)

    @property
    def succeeded(self) -> int:
        return max(0, self.processed - self.failed)

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "succeeded": self.succeeded}


class _Returns:
    """Follows the dead-letter topic from its end now: the ids of replayed letters that came back."""

    def __init__(self, config: Mapping[str, Any], topic: str) -> None:
        self._consumer = partition_reader(config)
        partitions = self._consumer.list_topics(topic, timeout=10).topics[topic].partitions
        starts = [TopicPartition(topic, p, self._consumer.get_watermark_offsets(TopicPartition(topic, p),
                                                                                 timeout=10)[1]) for p in partitions]
        self._consumer.assign(starts)
        self.ids: set[str] = set()

    def poll(self) -> set[str]:
        for msg in self._consumer.consume(num_messages=500, timeout=0.2):
            if msg.error() is None:
                origin = h.decode(msg.headers()).get(h.REPLAYED_FROM)
                if origin:
                    self.ids.add(origin[:500])
        return self.ids

    def close(self) -> None:
        self._consumer.close()


class _Committed:
    """The group's committed offsets, asked without joining the group."""

    def __init__(self, config: Mapping[str, Any], group: str) -> None:
        self._consumer = Consumer(client_config(config, **{"group.id": group, "enable.auto.commit": False}))

    def processed(self, delivered: list[Delivered]) -> int:
        if not delivered:
            return 0
        tps = sorted({(d.topic, d.partition) for d in delivered})
        offsets = {(tp.topic, tp.partition): tp.offset
                   for tp in self._consumer.committed([TopicPartition(t, p) for t, p in tps], timeout=10)}
        return sum(1 for d in delivered if offsets.get((d.topic, d.partition), -1) > d.offset)

    def close(self) -> None:
        self._consumer.close()


def canary_replay(config: Mapping[str, Any], topic: str, group: str, where: Filter | None = None, *,
                  rate: float, canary: int = 5, window: float = 60.0, by: str | None = None, reason: str = "",
                  declared: Collection[str] | None = None, secret: str | None = None,
                  on_progress: Callable[[CanaryProgress], None] | None = None,
                  stop: threading.Event | None = None) -> CanaryProgress:
    """Replay the matching dead letters of `<topic>.<group>.dlq` (not replayed before) back to
    `topic`: first `canary` of them; then, while none came back, the rest at `rate` a second. It
    stops on its own when a replayed letter comes back, when the canary is not judged within
    `window` seconds, or when `stop` is set. Returns the final progress (also audited)."""
    if canary < 1:
        raise ConfigError("--canary: at least 1 letter")
    if rate <= 0:
        raise ConfigError("--rate: letters a second, more than 0")
    dlq = dead_letter_topic(topic, group)
    done = replayed_ids(config, dlq, secret)
    letters = [letter for letter in list_dead_letters(config, topic, group, where) if letter.id not in done]
    progress = CanaryProgress(uuid.uuid4().hex, group, dlq, topic, len(letters), min(canary, len(letters)), rate,
                              by=by or operator_name())
    returns, committed = _Returns(config, dlq), _Committed(config, group)
    delivered: list[Delivered] = []
    sent_ids: set[str] = set()
    stop = stop or threading.Event()

    def tell() -> None:
        if on_progress is not None:
            on_progress(progress)

    def judge() -> None:
        progress.failed = len(returns.poll() & sent_ids)
        progress.processed = committed.processed(delivered)

    def send(chunk: list[DeadLetter], note: str) -> None:
        result = replay_once(config, topic, group, lambda _done: chunk, by=progress.by,
                             reason=f"{reason} ({note}, canary replay {progress.id[:8]})".strip(), declared=declared,
                             secret=secret)
        delivered.extend(result.delivered)
        sent_ids.update(letter.id for letter in result.letters)
        progress.sent += len(result.letters)

    def paced(batch: list[DeadLetter], note: str) -> bool:
        """Send `batch` at the rate, a second's worth at a time; False once a letter came back."""
        step = max(1, int(rate))
        for i in range(0, len(batch), step):
            if stop.is_set():
                progress.reason = "stopped by the operator"
                return False
            began = time.monotonic()
            send(batch[i:i + step], note)
            judge()
            tell()
            if progress.failed:
                progress.reason = (f"failures returned: {progress.failed} replayed letter(s) came back to {dlq} "
                                   f"after {progress.sent} sent")
                return False
            time.sleep(max(0.0, step / rate - (time.monotonic() - began)))
        return True

    try:
        tell()
        if not letters:
            progress.state, progress.reason = "done", "nothing to replay"
            return progress
        first, rest = letters[:progress.canary], letters[progress.canary:]
        ok = paced(first, f"canary of {len(first)}")
        deadline = time.monotonic() + window
        while ok and progress.processed < progress.sent and time.monotonic() < deadline and not stop.is_set():
            time.sleep(0.5)
            judge()
            tell()
            if progress.failed:
                progress.reason = f"the canary failed: {progress.failed} of {progress.sent} came back to {dlq}"
                ok = False
        if ok and progress.processed < progress.sent:
            progress.reason = ("stopped by the operator" if stop.is_set() else
                               f"the canary was not confirmed within {window:g}s "
                               f"({progress.processed} of {progress.sent} processed)")
            ok = False
        if ok:
            progress.state = "running"
            tell()
            ok = paced(rest, "continued")
        if ok:  # the last letters: judged like the canary, so a late failure is reported
            deadline = time.monotonic() + window
            while progress.processed < progress.sent and time.monotonic() < deadline and not progress.failed:
                time.sleep(0.5)
                judge()
            if progress.failed:
                progress.reason = f"failures returned: {progress.failed} replayed letter(s) came back to {dlq}"
                ok = False
        progress.state = "done" if ok else "stopped"
        if ok:
            progress.reason = f"done: {progress.sent} letter(s) replayed, {progress.processed} processed"
        return progress
    finally:
        returns.close()
        committed.close()
        tell()
        _audit(config, progress, reason, secret)
        log.warning("canary replay %s of %s: %s", progress.id[:8], dlq, progress.reason)


def _audit(config: Mapping[str, Any], progress: CanaryProgress, reason: str, secret: str | None) -> None:
    ensure_control_topics(config)
    producer = RequestProducer(config)
    try:
        producer.send(CONTROL_TOPIC, sign({
            "kind": "canary", "id": progress.id, "op": "canary-replay", "group": progress.group,
            "dead_letter_topic": progress.dead_letter_topic, "to": progress.to, "by": progress.by,
            "reason": reason, "at": time.time(), "state": progress.state, "result": progress.reason,
            "total": progress.total, "sent": progress.sent, "processed": progress.processed,
            "failed": progress.failed, "rate": progress.rate, "canary": progress.canary}, secret), key=progress.group)
        producer.flush()
    finally:
        producer.close()
