"""runner.supervise: a unit that dies is started again, fresh, after a backoff; the others go on."""

from __future__ import annotations

import threading
import time
from typing import Any

from kafka_workflows.runner import Unit, supervise


class Flaky:
    """Dies `failures` times (one instance each), then runs until stopped."""

    built: list[Flaky] = []

    def __init__(self, failures: list[int]) -> None:
        self.failures = failures
        self.stopped = threading.Event()
        Flaky.built.append(self)

    def run(self, ready: Any = None) -> None:
        if self.failures[0] > 0:
            self.failures[0] -= 1
            raise ConnectionError("broker away")
        self.stopped.wait(30)

    def stop(self, *_: object) -> None:
        self.stopped.set()


def test_a_unit_that_dies_is_restarted_fresh_with_a_growing_backoff() -> None:
    Flaky.built.clear()
    failures = [3]
    unit = Unit("wf", "importer", Flaky(failures), factory=lambda: Flaky(failures))
    stop = threading.Event()
    started = time.monotonic()
    thread = threading.Thread(target=supervise, args=(unit, stop), kwargs={"initial": 0.1, "maximum": 0.4})
    thread.start()
    deadline = time.monotonic() + 20
    while len(Flaky.built) < 4 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(Flaky.built) == 4 and unit.restarts == 3
    assert unit.last_error == "ConnectionError: broker away"
    assert time.monotonic() - started >= 0.1 + 0.2 + 0.4 - 0.05  # 0.1, 0.2, then capped at 0.4
    stop.set()
    unit.runnable.stop()
    thread.join(10)
    assert not thread.is_alive() and Flaky.built[-1].stopped.is_set()


def test_one_dying_unit_does_not_stop_another() -> None:
    Flaky.built.clear()
    dying, steady = [10**6], [0]
    units = [Unit("wf", "dying", Flaky(dying), factory=lambda: Flaky(dying)),
             Unit("wf", "steady", Flaky(steady), factory=lambda: Flaky(steady))]
    stop = threading.Event()
    threads = [threading.Thread(target=supervise, args=(u, stop), kwargs={"initial": 0.01, "maximum": 0.02})
               for u in units]
    for thread in threads:
        thread.start()
    time.sleep(1.0)
    assert units[0].restarts > 5 and units[1].restarts == 0
    assert not units[1].runnable.stopped.is_set()  # type: ignore[attr-defined]
    stop.set()
    for unit in units:
        unit.runnable.stop()
    for thread in threads:
        thread.join(10)
    assert not any(t.is_alive() for t in threads)
