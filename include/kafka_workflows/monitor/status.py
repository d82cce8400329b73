"""The live workers, from the compacted status topic: who is up, what it holds, whether it is paused.

Each worker publishes `{worker, group, topics, at, paused, assigned: ["t[p]"], held: [...], stats}`
every few seconds under the key `<group>/<member>` and a tombstone when it stops. A worker that
has not reported within `max_age` seconds counts as gone.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from typing import Any

from confluent_kafka import Message as KafkaMessage

from kafka_workflows.monitor.follower import TopicFollower
from kafka_workflows.ops.control import STATUS_TOPIC


class StatusIndex(TopicFollower):
    name = "status"

    def __init__(self, config: Mapping[str, Any], *, max_age: float = 30.0) -> None:
        super().__init__(config, refresh=5.0)
        self.max_age = max_age
        self._latest: dict[str, dict[str, Any]] = {}

    def topics(self, names: set[str]) -> set[str]:
        return {STATUS_TOPIC} & names

    def apply(self, msg: KafkaMessage) -> None:
        key = msg.key().decode("utf-8", "replace") if msg.key() is not None else None
        if key is None:
            return
        value = _checked(json.loads(msg.value())) if msg.value() is not None else None
        with self.lock:
            if value is not None:
                self._latest[key] = value
            else:
                self._latest.pop(key, None)

    def live(self, group: str | None = None) -> list[dict[str, Any]]:
        """The latest status of every live worker (of `group`), by worker name."""
        now = time.time()
        with self.lock:
            rows = [s for s in self._latest.values() if now - float(s.get("at", 0)) <= self.max_age]
        return sorted((s for s in rows if group is None or s["group"] == group), key=lambda s: str(s.get("worker")))

    def groups(self) -> set[str]:
        return {s["group"] for s in self.live()}


def _checked(value: Any) -> dict[str, Any] | None:
    """A status with the shapes the pages rely on (anything can be written to a topic): holds that
    do not name their topic, partition and offset are dropped; a status without a group is ignored."""
    if not isinstance(value, dict) or not isinstance(value.get("group"), str) or value.get("kind") == "incident":
        return None  # an incident (ops/incidents.py) is not a worker's status
    try:
        at = float(value.get("at", 0))
    except (TypeError, ValueError):
        return None
    held = [h for h in value.get("held") or [] if isinstance(h, dict) and isinstance(h.get("topic"), str)
            and isinstance(h.get("partition"), int) and isinstance(h.get("offset"), int)
            and h.get("kind") in ("blocked", "waiting")]
    assigned = [a for a in value.get("assigned") or [] if isinstance(a, str)]
    return {**value, "at": at, "held": held, "assigned": assigned, "worker": str(value.get("worker")),
            "paused": value.get("paused") is True, "breaker": _breaker(value.get("breaker"))}


BREAKER_STATES = ("closed", "half_open", "open")  # in order of concern


def _breaker(value: Any) -> dict[str, Any] | None:
    """A worker's circuit breaker as the pages show it: a known state, a bounded reason; else None."""
    if not isinstance(value, dict) or value.get("state") not in BREAKER_STATES:
        return None
    probe_in = value.get("probe_in")
    return {"state": value["state"], "forced": value.get("forced") is True,
            "reason": str(value.get("reason") or "")[:500],
            "since": value.get("since") if isinstance(value.get("since"), int | float) else None,
            "probe_in": probe_in if isinstance(probe_in, int | float) else None}


def breaker_of(live: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The group's breaker as its live workers report it: the most concerning state; None without one."""
    seen = [s["breaker"] for s in live if s.get("breaker")]
    return max(seen, key=lambda b: BREAKER_STATES.index(b["state"])) if seen else None
