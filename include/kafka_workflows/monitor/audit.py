"""The audit log: the control topic's commands (who asked what, when, why) joined with their answers.

Keeps the newest `limit` commands in memory; each command carries the `applied` records the
workers answered with. Paged newest first. `replayed` records (written by every replay, the CLI's
and the UI's) say which dead letters were replayed, by whom.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any

from confluent_kafka import Message as KafkaMessage

from kafka_workflows.monitor.follower import TopicFollower
from kafka_workflows.ops.control import CONTROL_TOPIC


class AuditLog(TopicFollower):
    name = "audit"

    def __init__(self, config: Mapping[str, Any], *, limit: int = 10_000) -> None:
        super().__init__(config, refresh=5.0)
        self.limit = limit
        self._commands: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self._replayed: OrderedDict[str, dict[str, Any]] = OrderedDict()  # dead letter id -> who, when

    def topics(self, names: set[str]) -> set[str]:
        return {CONTROL_TOPIC} & names

    def apply(self, msg: KafkaMessage) -> None:
        record = json.loads(msg.value() or b"null")
        if not isinstance(record, dict):
            return
        with self.lock:
            if record.get("kind") == "command" and isinstance(record.get("id"), str):
                self._commands[record["id"]] = {**record, "control_offset": msg.offset(), "applied": []}
                while len(self._commands) > self.limit:
                    self._commands.popitem(last=False)

            elif record.get("kind") == "replayed" and isinstance(record.get("id"), str):
                self._commands[record["id"]] = {**record, "control_offset": msg.offset(), "applied": []}
                while len(self._commands) > self.limit:
                    self._commands.popitem(last=False)
                for letter in record.get("ids") if isinstance(record.get("ids"), list) else []:
                    self._replayed[str(letter)] = {"by": record.get("by"), "at": record.get("at")}
                while len(self._replayed) > 10 * self.limit:
                    self._replayed.popitem(last=False)
            elif record.get("kind") == "applied":
                command = self._commands.get(str(record.get("command")))
                if command is not None:
                    command["applied"].append({k: record.get(k) for k in ("worker", "result", "at")})

    def page(self, *, group: str | None = None, groups: set[str] | None = None, offset: int = 0,
             limit: int = 50) -> dict[str, Any]:
        """Commands newest first, of `group` (or of any of `groups`), `limit` from `offset`."""
        with self.lock:
            rows = [dict(c, applied=list(c["applied"])) for c in reversed(self._commands.values())
                    if (group is None or c.get("group") == group) and (groups is None or c.get("group") in groups)]
        return {"total": len(rows), "offset": offset, "limit": limit, "items": rows[offset:offset + limit]}

    def replayed(self, letter_id: str) -> dict[str, Any] | None:
        """Who replayed this dead letter, and when (the latest replay), if anyone did."""
        with self.lock:
            return self._replayed.get(letter_id)

    def command(self, command_id: str) -> dict[str, Any] | None:
        with self.lock:
            found = self._commands.get(command_id)
            return None if found is None else dict(found, applied=list(found["applied"]))
