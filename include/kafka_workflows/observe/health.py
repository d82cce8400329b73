"""Liveness and readiness of one unit (a worker, a processor, a store), as its own loop reports them.

The loop writes, the HTTP thread reads; every field is one assignment, so no lock is needed.

- **alive**: the loop turned (`beat`) within `stale_after` seconds. A handler call that never
  returns, a deadlock, a callback stuck: the loop stops turning and the process should be
  restarted. A broker that is away does not stop the loop (librdkafka retries underneath), so it
  never fails liveness.
- **ready**: alive, a member of its consumer group (the broker gave it a member id: it joined,
  with partitions or without), and a broker connection up in librdkafka's latest statistics
  (`broker_up`). A held key or partition, a paused group, a blocking retry waiting for its
  backoff: none of these is a readiness matter, the loop turns and the member stays in its group.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

JOIN_CHECK_INTERVAL = 1.0


def broker_up(stats: Mapping[str, Any]) -> bool:
    """Whether librdkafka's statistics show a connection to a broker that is up (not its internal one)."""
    brokers = stats.get("brokers") or {}
    return any(isinstance(b, dict) and b.get("source") != "internal" and b.get("state") == "UP"
               for b in brokers.values())


class UnitHealth:
    """One unit's heartbeat, group membership and broker reachability."""

    def __init__(self, name: str, clock: Any = time.monotonic) -> None:
        self.name = name
        self.clock = clock
        self.beat_at = clock()  # starting counts as turning: a unit has `stale_after` to reach its loop
        self.joined = False
        self.broker_up: bool | None = None  # unknown until the first statistics
        self.broker_seen_at: float | None = None
        self._join_checked = 0.0

    def beat(self, consumer: Any = None) -> None:
        """Called by the loop once a turn; with the consumer, notes (once a second) whether it is in its group."""
        now = self.clock()
        self.beat_at = now
        if consumer is not None and now - self._join_checked >= JOIN_CHECK_INTERVAL:
            self._join_checked = now
            try:
                self.joined = bool(consumer.memberid())
            except RuntimeError:  # closed
                self.joined = False

    def left(self) -> None:
        """The unit's consumer closed (stopping, or rebuilt by its supervisor)."""
        self.joined = False

    def on_stats(self, stats: Mapping[str, Any]) -> None:
        self.broker_up = broker_up(stats)
        self.broker_seen_at = self.clock()

    def state(self, stale_after: float) -> dict[str, Any]:
        since = self.clock() - self.beat_at
        alive = since <= stale_after
        reasons = []
        if not alive:
            reasons.append(f"loop has not turned for {since:.0f}s (more than {stale_after:.0f}s)")
        if not self.joined:
            reasons.append("not a member of its consumer group")
        if self.broker_up is None:
            reasons.append("no broker statistics yet")
        elif not self.broker_up:
            reasons.append("no broker reachable")
        return {"alive": alive, "ready": not reasons, "since_beat_s": round(since, 3), "joined": self.joined,
                "broker_up": self.broker_up, "not_ready": reasons}
