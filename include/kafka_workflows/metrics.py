"""Prometheus metrics of one worker (prometheus_client), in a registry of its own.

A registry per worker keeps several workers in one process (tests, embedded use) apart;
`serve(port)` exposes it on /metrics.
"""

from __future__ import annotations

import json
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server


class WorkerMetrics:
    def __init__(self, group: str) -> None:
        self.registry = CollectorRegistry()
        labels = ["group", "topic"]
        self.group = group
        self.handled = Counter("kw_worker_handled", "Messages the handler processed successfully",
                               labels, registry=self.registry)
        self.failed = Counter("kw_worker_failed", "Failed handler attempts", [*labels, "error_type"],
                              registry=self.registry)
        self.retried = Counter("kw_worker_retried", "Messages sent to a retry topic", labels,
                               registry=self.registry)
        self.dead_lettered = Counter("kw_worker_dead_lettered", "Messages sent to the dead-letter topic",
                                     labels, registry=self.registry)
        self.latency = Histogram("kw_worker_handler_seconds", "Handler latency", labels, registry=self.registry,
                                 buckets=(0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 30))
        self.lag = Gauge("kw_worker_consumer_lag", "Consumer lag per partition (from librdkafka statistics)",
                         [*labels, "partition"], registry=self.registry)
        self.blocked = Gauge("kw_worker_blocked_partitions", "Partitions blocked by a failing message",
                             ["group"], registry=self.registry)
        self._children: dict[tuple[str, str], Any] = {}

    def child(self, metric: Counter | Histogram, topic: str) -> Any:
        """Cached labelled child: labels() is too slow for the per-message path."""
        key = (metric._name, topic)
        found = self._children.get(key)
        if found is None:
            found = self._children[key] = metric.labels(self.group, topic)
        return found

    def on_stats(self, stats_json: str) -> None:
        """librdkafka stats_cb: publish consumer lag of the partitions this member consumes."""
        stats = json.loads(stats_json)
        for topic, info in stats.get("topics", {}).items():
            for partition, p in info.get("partitions", {}).items():
                if partition != "-1" and p.get("consumer_lag", -1) >= 0:
                    self.lag.labels(self.group, topic, partition).set(p["consumer_lag"])

    def serve(self, port: int, addr: str = "127.0.0.1") -> None:
        start_http_server(port, addr=addr, registry=self.registry)
