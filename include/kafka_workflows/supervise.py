"""Restart a unit that gives up, not the process: a worker or processor rebuilt after a backoff.

A unit (a `Worker`, a `TransactionalProcessor`, a `StoreProcessor`) raises when it cannot go on:
a broker away for longer than its transaction retries last, too many aborted transactions in a
row, a producer fenced again and again. Its consumer group hands its partitions to the other
members meanwhile. `Supervised` builds a fresh instance from the same factory and runs it
again, after 1 s, then 2, 4 ... up to 30 s while it keeps failing (back to 1 s once a run lasted
a minute). The fresh instance starts from the committed offsets, as a restarted process would;
nothing of the failed one (its producer, its holds, its open transaction) is reused.

`stop()` stops the running instance and ends the loop. The first instance is built at once, so
a unit that cannot even be built (a bad handler path) fails where it is declared.

`run_supervised` is the CLI's way to run one unit (`worker --topic ...`, `store-processor`): it
fails fast, naming the address, when no broker answers at start (a misconfiguration), and from
then on restarts the unit instead of exiting. Units built with the process's `Telemetry` share its
registry and health entries, so a rebuilt unit keeps counting where its predecessor did (no
DuplicateTimeseries); `shared_metrics` does the same for a Worker factory without one.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from kafka_workflows.kafka.config import check_reachable
from kafka_workflows.observe import Telemetry

log = logging.getLogger(__name__)


class Runnable(Protocol):
    def run(self, ready: threading.Event | None = None) -> Any: ...
    def stop(self, *_: object) -> None: ...


class Supervised:
    """Run `factory()` until `stop()`; rebuild and rerun it whenever its `run` raises."""

    def __init__(self, name: str, factory: Callable[[], Runnable], *, initial_delay: float = 1.0,
                 max_delay: float = 30.0, healthy_after: float = 60.0) -> None:
        self.name = name
        self.factory = factory
        self.initial_delay, self.max_delay, self.healthy_after = initial_delay, max_delay, healthy_after
        self.current: Runnable = factory()
        self.restarts = 0
        self._stop = threading.Event()
        self._lock = threading.Lock()

    def __getattr__(self, item: str) -> Any:  # stats, group, ... of the running instance
        if item == "current":
            raise AttributeError(item)
        return getattr(self.current, item)

    def stop(self, *_: object) -> None:
        self._stop.set()
        with self._lock:
            self.current.stop()

    def run(self, ready: threading.Event | None = None) -> Any:
        delay = self.initial_delay
        while True:
            started = time.monotonic()
            try:
                return self.current.run(ready)
            except Exception as exc:
                if self._stop.is_set():
                    raise
                if time.monotonic() - started >= self.healthy_after:
                    delay = self.initial_delay
                log.exception("%s gave up (%s: %s); restarting it in %.0fs", self.name, type(exc).__name__,
                              exc, delay)
            if self._stop.wait(delay):
                return None
            delay = min(delay * 2, self.max_delay)
            with self._lock:
                if self._stop.is_set():
                    return None
                self.current = self.factory()
                self.restarts += 1


def run_supervised(name: str, factory: Callable[[], Runnable], config: Mapping[str, Any], *,
                   telemetry: Telemetry | None = None, metrics_port: int | None = None,
                   metrics_addr: str = "127.0.0.1") -> Any:
    """Run one unit in this process until SIGTERM/SIGINT, rebuilding it whenever it gives up; with
    `metrics_port`, the process's `telemetry` (the one the factory's units count into) is served there."""
    check_reachable(config)
    if telemetry is not None and metrics_port is not None:
        telemetry.serve(metrics_port, metrics_addr)
    unit = Supervised(name, factory)
    signal.signal(signal.SIGTERM, unit.stop)
    signal.signal(signal.SIGINT, unit.stop)
    return unit.run()


def shared_metrics(factory: Callable[..., Any], port: int | None) -> Callable[[], Any]:
    """Wrap a Worker factory: the first instance serves its metrics on `port`, every later one counts
    into the same registry (Worker's `metrics=`), so a restart does not reset or hide them."""
    first: list[Any] = []

    def build() -> Any:
        if first:
            return factory(metrics=first[0].metrics)
        worker = factory(metrics_port=port)
        first.append(worker)
        return worker

    return build
