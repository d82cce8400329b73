"""A unit that gives up is rebuilt and run again by its supervisor; stop() ends it for good."""

from __future__ import annotations

import threading
import time

import pytest

from kafka_workflows.supervise import Supervised


class Flaky:
    """Raises on its first `failures` runs (counted across instances), then runs until stopped."""

    built = 0

    def __init__(self, failures: int) -> None:
        Flaky.built += 1
        self.number, self.failures = Flaky.built, failures
        self.stopped = threading.Event()

    def run(self, ready: threading.Event | None = None) -> str:
        if self.number <= self.failures:
            raise RuntimeError(f"instance {self.number} gave up")
        if ready is not None:
            ready.set()
        self.stopped.wait(30)
        return f"instance {self.number} stopped"

    def stop(self, *_: object) -> None:
        self.stopped.set()


def test_a_unit_that_gives_up_is_rebuilt_until_it_runs() -> None:
    Flaky.built = 0
    supervised = Supervised("flaky", lambda: Flaky(failures=2), initial_delay=0.01)
    ready, result = threading.Event(), []
    thread = threading.Thread(target=lambda: result.append(supervised.run(ready)))
    thread.start()
    assert ready.wait(10)
    assert (supervised.restarts, supervised.number) == (2, 3), "a fresh instance each time, not the failed one"
    supervised.stop()
    thread.join(10)
    assert result == ["instance 3 stopped"]


def test_stop_during_the_backoff_ends_the_loop() -> None:
    Flaky.built = 0
    supervised = Supervised("flaky", lambda: Flaky(failures=99), initial_delay=5)
    thread = threading.Thread(target=supervised.run)
    thread.start()
    time.sleep(0.5)  # the first instance has failed by now: the supervisor waits out its backoff
    supervised.stop()
    thread.join(10)
    assert not thread.is_alive() and supervised.restarts == 0


def test_a_unit_that_cannot_be_built_fails_at_once() -> None:
    def broken() -> Flaky:
        raise ValueError("no such handler")

    with pytest.raises(ValueError, match="no such handler"):
        Supervised("broken", broken)
