"""Prometheus metrics of workers (prometheus_client), in the process's registry (observe/telemetry.py).

`serve(port)` exposes the process's /metrics, /healthz and /readyz.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge
from prometheus_client.core import HistogramMetricFamily
from prometheus_client.registry import Collector

from kafka_workflows.observe import Telemetry

LATENCY_BOUNDS = (0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 30.0)


class BatchHistogram(Collector):
    """A labelled Prometheus histogram fed a batch at a time.

    prometheus_client's Histogram.observe takes a lock and walks the buckets on every call, about
    1 µs: a third of the worker's whole per-message cost. The worker instead counts a batch into a
    plain list (`new_tally`) and merges it here once per batch; exposition is still
    prometheus_client's (a HistogramMetricFamily with the usual _bucket, _count and _sum series).
    """

    def __init__(self, name: str, documentation: str, labels: tuple[str, ...], bounds: tuple[float, ...]) -> None:
        self.name, self.documentation, self.labels, self.bounds = name, documentation, labels, bounds
        self._lock = threading.Lock()
        self._tallies: dict[tuple[str, ...], list[float]] = {}

    def new_tally(self) -> list[float]:
        """[sum, count in bucket 0, ..., count in +Inf]; bucket i of a value is bisect_left(bounds, value)."""
        return [0.0] * (len(self.bounds) + 2)

    def merge(self, tallies: Mapping[tuple[str, ...], list[float]]) -> None:
        with self._lock:
            for labels, tally in tallies.items():
                mine = self._tallies.get(labels)
                if mine is None:
                    mine = self._tallies[labels] = self.new_tally()
                for i, x in enumerate(tally):
                    mine[i] += x

    def describe(self) -> Iterator[HistogramMetricFamily]:
        yield HistogramMetricFamily(self.name, self.documentation, labels=self.labels)

    def collect(self) -> Iterator[HistogramMetricFamily]:
        family = HistogramMetricFamily(self.name, self.documentation, labels=self.labels)
        with self._lock:
            snapshot = {labels: list(tally) for labels, tally in self._tallies.items()}
        for labels, tally in sorted(snapshot.items()):
            cumulative, buckets = 0.0, []
            for bound, n in zip([*self.bounds, float("inf")], tally[1:], strict=True):
                cumulative += n
                buckets.append(("+Inf" if bound == float("inf") else repr(bound), cumulative))
            family.add_metric(list(labels), buckets, tally[0])
        yield family


class WorkerFamilies:
    """The worker's metric families, registered once per registry and labelled by group."""

    def __init__(self, registry: CollectorRegistry) -> None:
        labels = ["group", "topic"]
        self.handled = Counter("kw_worker_handled", "Messages the handler processed successfully",
                               labels, registry=registry)
        self.failed = Counter("kw_worker_failed", "Failed handler attempts", [*labels, "error_type"],
                              registry=registry)
        self.retried = Counter("kw_worker_retried", "Messages sent to a retry topic", labels, registry=registry)
        self.dead_lettered = Counter("kw_worker_dead_lettered", "Messages sent to the dead-letter topic",
                                     labels, registry=registry)
        self.latency = BatchHistogram("kw_worker_handler_seconds", "Handler latency", ("group", "topic"),
                                      LATENCY_BOUNDS)
        registry.register(self.latency)
        self.lag = Gauge("kw_worker_consumer_lag", "Consumer lag per partition (from librdkafka statistics)",
                         [*labels, "partition"], registry=registry)
        self.blocked = Gauge("kw_worker_blocked_partitions", "Partitions blocked by a failing message",
                             ["group"], registry=registry)
        self.control_ignored = Counter("kw_worker_control_ignored", "Control records of the wrong shape, ignored",
                                       ["group"], registry=registry)
        self.status_failures = Counter("kw_worker_status_write_failures", "Status or audit writes that failed",
                                       ["group"], registry=registry)
        self.headers_untrusted = Counter("kw_worker_untrusted_headers", "Messages dead-lettered for kw- headers "
                                         "that cannot be trusted", ["group", "topic"], registry=registry)
        self.in_flight = Gauge("kw_worker_in_flight_messages", "Messages taken and not done yet (concurrency)",
                               ["group"], registry=registry)
        self.blocked_keys = Gauge("kw_worker_blocked_keys", "Keys held by a blocking retry (concurrency)",
                                  ["group"], registry=registry)
        self.breaker = Gauge("kw_worker_breaker_state", "The group's circuit breaker as this worker sees it: "
                             "0 closed, 1 open, 2 half-open", ["group"], registry=registry)
        self.breaker_opened = Counter("kw_worker_breaker_opened", "Times the circuit breaker opened",
                                      ["group"], registry=registry)
        self.incidents = Counter("kw_worker_incidents", "Incidents published for a human (ops/incidents.py)",
                                 ["group", "reason"], registry=registry)


class WorkerMetrics:
    """One worker group's view of the process's worker metrics (`Telemetry.families`).

    Every worker of a process counts into the process's one registry, under its group's labels: a
    worker rebuilt after an error, or a second group in the same process, gets the same families
    instead of a DuplicateTimeseries error. Without a telemetry the worker has one of its own.
    """

    def __init__(self, group: str, telemetry: Telemetry | None = None) -> None:
        self.telemetry = telemetry or Telemetry()
        self.registry = self.telemetry.registry
        self.group = group
        f = self.families = self.telemetry.families(WorkerFamilies)
        self.handled, self.failed, self.retried, self.dead_lettered = f.handled, f.failed, f.retried, f.dead_lettered
        self.latency, self.lag, self.blocked = f.latency, f.lag, f.blocked
        self.control_ignored, self.status_failures = f.control_ignored, f.status_failures
        self.headers_untrusted = f.headers_untrusted
        self.breaker, self.breaker_opened = f.breaker, f.breaker_opened
        self.incidents = f.incidents
        self._children: dict[tuple[str, str], Any] = {}

    def concurrency_gauges(self) -> tuple[Any, Any]:
        """(in-flight messages, blocked keys) of a worker with concurrency, for this group."""
        return self.families.in_flight.labels(self.group), self.families.blocked_keys.labels(self.group)

    def breaker_state(self, group: str, state: str) -> None:
        self.breaker.labels(group).set({"closed": 0, "open": 1, "half_open": 2}.get(state, 0))

    def child(self, metric: Counter, topic: str) -> Any:
        """Cached labelled child: labels() is too slow for the per-message path."""
        key = (metric._name, topic)
        found = self._children.get(key)
        if found is None:
            found = self._children[key] = metric.labels(self.group, topic)
        return found

    def on_stats(self, stats: dict[str, Any]) -> None:
        """librdkafka statistics (parsed): publish consumer lag of the partitions this member consumes."""
        for topic, info in stats.get("topics", {}).items():
            for partition, p in info.get("partitions", {}).items():
                if partition != "-1" and p.get("consumer_lag", -1) >= 0:
                    self.lag.labels(self.group, topic, partition).set(p["consumer_lag"])

    def serve(self, port: int, addr: str = "127.0.0.1") -> None:
        self.telemetry.serve(port, addr)
