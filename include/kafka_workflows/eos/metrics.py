"""Prometheus metrics of exactly-once processors (and of the store processor, which is one).

Registered once per process registry (`Telemetry.families`), labelled by consumer group, so the
processors of a process, and a processor rebuilt by its supervisor, share them.
"""

from __future__ import annotations

import json
from collections import Counter as Tally
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from kafka_workflows.observe import Telemetry, UnitHealth

COMMIT_BOUNDS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class ProcessorFamilies:
    def __init__(self, registry: CollectorRegistry) -> None:
        g, gt = ["group"], ["group", "topic"]
        self.committed = Counter("kw_processor_transactions_committed", "Transactions committed", g,
                                 registry=registry)
        self.aborted = Counter("kw_processor_transactions_aborted", "Transactions aborted (or lost to a fatal "
                               "producer error)", g, registry=registry)
        self.commit_seconds = Histogram("kw_processor_commit_seconds", "Time to send the offsets and commit a "
                                        "transaction", g, buckets=COMMIT_BOUNDS, registry=registry)
        self.records_in = Counter("kw_processor_records_in", "Input records committed (their offsets in a "
                                  "committed transaction)", g, registry=registry)
        self.records_out = Counter("kw_processor_records_out", "Output records committed, per output topic", gt,
                                   registry=registry)
        self.dead_lettered = Counter("kw_processor_poison_dead_lettered", "Poison inputs dead-lettered, "
                                     "committed", g, registry=registry)
        self.producer_restarts = Counter("kw_processor_producer_restarts", "Transactional producers recreated "
                                         "after a fatal error (e.g. fenced)", g, registry=registry)
        self.lag = Gauge("kw_processor_consumer_lag", "Consumer lag per partition (from librdkafka statistics)",
                         [*gt, "partition"], registry=registry)


class ProcessorMetrics:
    """One processor's view of the families, with its group's labels bound."""

    def __init__(self, telemetry: Telemetry, group: str, health: UnitHealth) -> None:
        self.telemetry, self.group, self.health = telemetry, group, health
        f = self.families = telemetry.families(ProcessorFamilies)
        self.committed, self.aborted = f.committed.labels(group), f.aborted.labels(group)
        self.commit_seconds, self.records_in = f.commit_seconds.labels(group), f.records_in.labels(group)
        self.dead_lettered, self.producer_restarts = f.dead_lettered.labels(group), f.producer_restarts.labels(group)

    def on_commit(self, seconds: float, consumed: int, outputs: Any, dead_lettered: int) -> None:
        self.committed.inc()
        self.commit_seconds.observe(seconds)
        self.records_in.inc(consumed)
        for topic, n in Tally(out.topic for out in outputs).items():
            self.families.records_out.labels(self.group, topic).inc(n)
        if dead_lettered:
            self.dead_lettered.inc(dead_lettered)

    def on_stats(self, stats_json: str) -> None:
        """librdkafka stats_cb: lag of the partitions this member consumes, and broker reachability.

        librdkafka's own `consumer_lag` counts from offsets the consumer committed, and a processor's
        offsets are committed by its producer, in the transaction: so the lag here is the partition's
        last stable offset minus the position the processor has consumed to (`app_offset`).
        """
        stats = json.loads(stats_json)
        self.health.on_stats(stats)
        for topic, info in stats.get("topics", {}).items():
            for partition, p in info.get("partitions", {}).items():
                end = p.get("ls_offset", -1) if p.get("ls_offset", -1) >= 0 else p.get("hi_offset", -1)
                position = p.get("app_offset", -1)
                if partition != "-1" and end >= 0 and position >= 0:
                    self.families.lag.labels(self.group, topic, partition).set(max(0, end - position))
