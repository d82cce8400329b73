"""Polling until something holds, for the stack runner, the benchmarks and the tests."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def wait_for(predicate: Callable[[], T], timeout: float, what: str, interval: float = 0.1,
             alive: Callable[[], None] | None = None) -> T:
    """Return the first truthy result of `predicate`; TimeoutError naming `what` after `timeout` s.

    `alive`, called before each try, raises when what is being waited on can no longer happen (a
    process it needs exited), so the wait fails then with that cause rather than at its timeout.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if alive is not None:
            alive()
        result = predicate()
        if result:
            return result
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")
