"""The requests of an atomic store, from its compacted `S.store` topic, kept warm in memory.

A summary (status, counts, times, the DAG run that made it) is kept for every request; the full
value (failed jobs with reasons, the split's row counts in `meta`) only for the `keep_values` (10,000)
most recently updated requests. An older request's value is one point read (`StoreClient.get`),
kept afterwards when terminal, since a terminal value never changes.
"""

from __future__ import annotations

import json
import time
from collections import OrderedDict
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from confluent_kafka import Message as KafkaMessage

from kafka_workflows.monitor.follower import TopicFollower
from kafka_workflows.store import TERMINAL_STATUSES, StoreClient, store_topic

SUMMARY_FIELDS = ("request_id", "status", "total", "completed", "failed", "created_at", "updated_at", "completed_at")


def _epoch(text: Any) -> float | None:
    try:
        return datetime.fromisoformat(str(text)).timestamp()
    except ValueError:
        return None


def _count(value: Any) -> int:
    return value if isinstance(value, int) and value >= 0 else 0


def progress_of(value: Mapping[str, Any], now: float | None = None) -> dict[str, Any]:
    """Counts, percent, rate (jobs/s) and ETA (s) of one store value."""
    total = value.get("total") if isinstance(value.get("total"), int) else None
    completed, failed = _count(value.get("completed")), _count(value.get("failed"))
    done = completed + failed
    created = _epoch(value.get("created_at"))
    terminal = value.get("status") in TERMINAL_STATUSES
    end = _epoch(value.get("completed_at") if terminal else None) or (now or time.time())
    elapsed = max(end - created, 1e-3) if created is not None else None
    rate = done / elapsed if elapsed and done else None
    remaining = (total - done) if isinstance(total, int) else None
    return {"total": total, "completed": completed, "failed": failed, "done": done,
            "percent": round(100.0 * done / total, 1) if isinstance(total, int) and total > 0 else None,
            "rate": round(rate, 2) if rate else None, "elapsed": round(elapsed, 1) if elapsed else None,
            "eta": round(remaining / rate, 1) if rate and remaining is not None and not terminal else None,
            "terminal": terminal}


class StoreIndex(TopicFollower):
    name = "store"

    def __init__(self, config: Mapping[str, Any], store: str, *, keep_values: int = 10_000) -> None:
        super().__init__(config, refresh=5.0)
        self.store = store
        self.name = f"store-{store}"
        self.keep_values = keep_values
        self._summaries: dict[str, dict[str, Any]] = {}
        self._values: OrderedDict[str, dict[str, Any]] = OrderedDict()

    def topics(self, names: set[str]) -> set[str]:
        return {store_topic(self.store)} & names

    def apply(self, msg: KafkaMessage) -> None:
        if msg.key() is None:
            return
        request_id = msg.key().decode("utf-8", "replace")
        value = json.loads(msg.value()) if msg.value() is not None else None
        with self.lock:
            if not isinstance(value, dict):  # a tombstone: the request expired from the store
                self._summaries.pop(request_id, None)
                self._values.pop(request_id, None)
                return
            meta = value.get("meta") or {}
            self._summaries[request_id] = {**{k: value.get(k) for k in SUMMARY_FIELDS}, "request_id": request_id,
                                           "dag_id": meta.get("dag_id"), "run_id": meta.get("run_id")}
            self._values[request_id] = value
            self._values.move_to_end(request_id)
            while len(self._values) > self.keep_values:
                self._values.popitem(last=False)

    def recent(self, *, dag_id: str | None = None, status: str | None = None, offset: int = 0,
               limit: int = 50) -> dict[str, Any]:
        with self.lock:
            rows = [dict(s) for s in self._summaries.values()
                    if (dag_id is None or s["dag_id"] == dag_id) and (status is None or s["status"] == status)]
        rows.sort(key=lambda s: str(s.get("updated_at") or ""), reverse=True)
        return {"total": len(rows), "offset": offset, "limit": limit, "items": rows[offset:offset + limit]}

    def summary(self, request_id: str) -> dict[str, Any] | None:
        with self.lock:
            found = self._summaries.get(request_id)
            return None if found is None else dict(found)

    def value(self, request_id: str) -> dict[str, Any] | None:
        """The full value of a request the index knows (None when it does not know it)."""
        with self.lock:
            if request_id not in self._summaries:
                return None
            value = self._values.get(request_id)
        if value is None:
            client = StoreClient(self.config, self.store)
            try:
                value = client.get(request_id)
            finally:
                client.close()
            if value is not None and value.get("status") in TERMINAL_STATUSES:
                with self.lock:
                    self._values[request_id] = value
                    self._values.move_to_end(request_id)
                    while len(self._values) > self.keep_values:
                        self._values.popitem(last=False)
        return value

    def status_counts(self, dag_id: str | None = None) -> dict[str, int]:
        out: dict[str, int] = {}
        with self.lock:
            for s in self._summaries.values():
                if dag_id is None or s["dag_id"] == dag_id:
                    out[str(s["status"])] = out.get(str(s["status"]), 0) + 1
        return out
