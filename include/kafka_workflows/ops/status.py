"""Worker status: each worker publishes its state to the compacted status topic; anyone reads it.

`kafka-workflows.status` is keyed `<group>/<worker>`: assigned partitions, holds (blocked or
waiting, with the held message's key, offset, failures and error), pause state, the circuit
breaker's state (when declared) and counters. A worker that stops writes a tombstone. The groups'
own states are kept there too: `paused/<group>` (with `until` for a pause of N minutes),
`retries/<group>` and `breaker/<group>` (ops/control.py); `group_state` reads them at once. Status is
advisory: it is not flushed before offsets.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from confluent_kafka import Message as KafkaMessage

from kafka_workflows.kafka.producer import RequestProducer
from kafka_workflows.kafka.reader import read_topic
from kafka_workflows.ops.control import (
    STATUS_TOPIC,
    breaker_key,
    control_secret,
    ensure_control_topics,
    paused_key,
    retries_key,
    signature_problem,
)

log = logging.getLogger(__name__)


class StatusPublisher:
    """Publishes one worker's status at most every `interval` seconds, or at once after `soon()`.

    Status is advisory: it has a producer of its own that is never flushed before offsets, and a
    write that fails (a full or refusing status topic, a broker away) is logged and counted, never
    raised: it must not stop the worker.
    """

    def __init__(self, config: Mapping[str, Any], group: str, member: str, interval: float,
                 on_failure: Callable[[], None] | None = None) -> None:
        self.config = dict(config)
        self.key = f"{group}/{member}"
        self.interval = interval
        self._on_failure = on_failure
        self._producer: RequestProducer | None = None
        self._due = 0.0
        self._warned_at = 0.0

    def producer(self) -> RequestProducer:
        if self._producer is None:
            self._producer = RequestProducer(self.config, remember=False, **{"message.timeout.ms": 10_000})
        return self._producer

    def soon(self) -> None:
        """Something changed (a hold, an assignment, an operation): publish at the next chance."""
        self._due = 0.0

    def send(self, topic: str, value: Mapping[str, Any], key: str) -> None:
        """An advisory write (status, an `applied` audit record): failures are reported, not raised."""
        try:
            self.producer().send(topic, dict(value), key=key)
            failures = self.producer().drain_failures()
        except Exception as exc:  # noqa: BLE001 - advisory: whatever the producer says, the worker goes on
            failures = [f"{type(exc).__name__}: {exc}"]
        if failures:
            if self._on_failure is not None:
                self._on_failure()
            now = time.monotonic()
            if now - self._warned_at > 60:
                self._warned_at = now
                log.warning("status/audit writes to %s failed (%d since the last report; first: %s); the worker "
                            "goes on", topic, len(failures), failures[0])

    def publish(self, status: Callable[[], Mapping[str, Any]], final: bool = False) -> None:
        now = time.monotonic()
        if not final and now < self._due:
            return
        self._due = now + self.interval
        if not final:
            self.send(STATUS_TOPIC, status(), self.key)
            return
        try:  # a stopped worker leaves the status list
            producer = self.producer()
            producer.tombstone(STATUS_TOPIC, self.key)
            producer.flush(10)
        except Exception as exc:  # noqa: BLE001 - advisory
            log.warning("could not remove %s from the status topic: %s", self.key, exc)

    def close(self) -> None:
        if self._producer is not None:
            self._producer.close()
            self._producer = None


def read_status_topic(config: Mapping[str, Any], timeout: float = 30.0) -> dict[str, dict[str, Any]]:
    """The latest value per key of the status topic (deleted keys and unreadable records left out)."""
    ensure_control_topics(config)
    latest: dict[str, dict[str, Any] | None] = {}

    def keep(msg: KafkaMessage) -> None:
        if msg.key() is None:
            return
        key = msg.key().decode("utf-8", "replace")
        if msg.value() is None:
            latest[key] = None
            return
        try:
            value = json.loads(msg.value())
        except ValueError:
            return
        if isinstance(value, dict):
            latest[key] = value

    read_topic(config, STATUS_TOPIC, keep, timeout=timeout)
    return {k: v for k, v in latest.items() if v is not None}


def read_statuses(config: Mapping[str, Any], max_age: float = 30.0) -> list[dict[str, Any]]:
    """The latest status of every live worker (those that reported within `max_age` seconds)."""
    now = time.time()
    return [s for s in read_status_topic(config).values()
            if isinstance(s.get("worker"), str) and isinstance(s.get("group"), str) and s.get("kind") != "incident"
            and isinstance(s.get("at"), int | float) and now - s["at"] <= max_age]


@dataclass
class GroupState:
    """What a worker of `group` starts with: the group's operator-set states (ops/control.py)."""

    paused: bool = False
    paused_until: float | None = None  # epoch seconds a pause for N minutes ends
    nonblocking: bool = False
    breaker: dict[str, Any] | None = None  # the open breaker's state, else None


def group_state(config: Mapping[str, Any], group: str, secret: str | None = None) -> GroupState:
    """The group's pause, retry mode and breaker from one read of the status topic; with a control
    secret only states signed with it, for this group, count (like `group_paused`). A pause whose
    `until` passed is over."""
    states = read_status_topic(config)
    out = GroupState()
    pause = states.get(paused_key(group))
    if (pause is not None and "worker" not in pause and pause.get("paused") is True
            and _trusted(pause, paused_key(group), group, secret, "pause state", "unpaused")):
        until = pause.get("until")
        if not isinstance(until, int | float) or isinstance(until, bool):
            out.paused = True
        elif until > time.time():
            out.paused, out.paused_until = True, float(until)
    mode = states.get(retries_key(group))
    if (mode is not None and "worker" not in mode and mode.get("retries") == "nonblocking"
            and _trusted(mode, retries_key(group), group, secret, "retry mode", "with its declared retries")):
        out.nonblocking = True
    breaker = states.get(breaker_key(group))
    if (breaker is not None and "worker" not in breaker and breaker.get("breaker") == "open"
            and _trusted(breaker, breaker_key(group), group, secret, "breaker state", "closed")):
        out.breaker = breaker
    return out


def group_paused(config: Mapping[str, Any], group: str, secret: str | None = None) -> bool:
    """Whether an operator's last pause/resume of `group` was a pause (a worker starts paused then).

    With a control secret (`secret`, else the env variable) only a pause state signed with it, for
    this group, counts: anyone who may write the status topic could otherwise pause a group.
    """
    state = read_status_topic(config).get(paused_key(group))
    if state is None or "worker" in state or state.get("paused") is not True:
        return False
    return _trusted(state, paused_key(group), group, secret, "pause state", "unpaused")


def group_breaker(config: Mapping[str, Any], group: str, secret: str | None = None) -> dict[str, Any] | None:
    """The group's circuit breaker state when it is open (`forced`: by an operator), else None; with a
    control secret only a state signed with it, for this group, counts (like `group_paused`)."""
    state = read_status_topic(config).get(breaker_key(group))
    if state is None or "worker" in state or state.get("breaker") != "open":
        return None
    return state if _trusted(state, breaker_key(group), group, secret, "breaker state", "closed") else None


def _trusted(state: Mapping[str, Any], key: str, group: str, secret: str | None, what: str, otherwise: str
             ) -> bool:
    secret = control_secret(secret)
    if secret is None:
        return True
    problem = signature_problem(state, secret) or (None if state.get("group") == group else "another group's")
    if problem is not None:
        log.warning("%s[%s]: %s of group %s refused (%s); the worker starts %s", STATUS_TOPIC, key, what, group,
                    problem, otherwise)
        return False
    return True


def blocked_partitions(config: Mapping[str, Any], group: str | None = None) -> list[dict[str, Any]]:
    """Every partition a live worker holds blocked, with its worker, offset, failures and error."""
    rows = []
    for status in read_statuses(config):
        if group is not None and status["group"] != group:
            continue
        for held in status.get("held", []):
            if isinstance(held, dict) and held.get("kind") == "blocked":
                rows.append({"group": status["group"], "worker": status["worker"], **held})
    return sorted(rows, key=lambda r: (r["group"], str(r.get("topic")), str(r.get("partition"))))
