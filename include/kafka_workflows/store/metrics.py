"""Prometheus metrics of store processors: requests by status, read from their state at scrape time.

`kw_store_requests{store, status}` counts the requests the process's store processors hold (those of
the partitions they own): `pending` and `running` ones still wait for jobs; `succeeded`,
`completed_with_failures`, `corrupt` and `aborted` are terminal (kept until the retention deletes them).
Counting happens when Prometheus scrapes, not per command. The transactions, records and lag of a
store processor are its exactly-once processor's (`kw_processor_*`, eos/metrics.py).
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

STATUSES = ("pending", "running", "succeeded", "completed_with_failures", "corrupt", "aborted")


class StoreRequests(Collector):
    """One per registry; each store processor (re)binds its handler by store name."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self._lock = threading.Lock()
        self._handlers: dict[str, Any] = {}  # store name -> its StoreHandler (state: {partition: {id: state}})
        registry.register(self)

    def bind(self, store: str, handler: Any) -> None:
        with self._lock:
            self._handlers[store] = handler  # a rebuilt processor replaces its predecessor

    def describe(self) -> Iterator[GaugeMetricFamily]:
        yield GaugeMetricFamily("kw_store_requests", "Requests held by this process's store processors, by status",
                                labels=["store", "status"])

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily("kw_store_requests", "Requests held by this process's store processors, "
                                   "by status", labels=["store", "status"])
        with self._lock:
            handlers = dict(self._handlers)
        for store, handler in sorted(handlers.items()):
            counts: Counter[str] = Counter()
            # The loop thread changes these dicts; list() copies each under the GIL before we walk it.
            for requests in list(handler.state.values()):
                counts.update(state.status for state in list(requests.values()))
            for status in sorted(set(STATUSES) | set(counts)):
                family.add_metric([store, status], counts.get(status, 0))
        yield family
