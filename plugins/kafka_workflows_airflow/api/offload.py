"""The plugin's blocking work runs on its own threads, bounded, so Airflow's API server stays responsive.

Airflow's API server runs its own sync routes on anyio's default thread limiter (40 threads, shared by
every sync route and dependency of the process). The plugin's routes are `async` and hand every call
that may block (on the broker, a point read, a worker's answer) to `read()` or `act()`, which run it on
threads counted by the plugin's own limiters, never by Airflow's:

- `read()`: at most `READ_THREADS` at once; a caller waits at most `READ_TIMEOUT` seconds for its
  answer (queueing included), then gets 503 (`Unavailable`) while the thread finishes in the background,
  still counted, so a stalled broker can tie up at most `READ_THREADS` threads of the process.
- `act()`: at most `MAX_ACTIONS` operator actions in flight per process; one more is refused at once
  with 429 (`TooBusy`, with Retry-After), never queued on a thread.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

import anyio
from anyio import CapacityLimiter, to_thread

from kafka_workflows.errors import KafkaWorkflowsError

T = TypeVar("T")
READ_THREADS = 8
READ_TIMEOUT = 15.0
MAX_ACTIONS = 4
RETRY_AFTER = 5


class Unavailable(KafkaWorkflowsError):
    """The answer did not come in time (the broker is slow or away): 503."""


class TooBusy(KafkaWorkflowsError):
    """Too many operator actions in flight in this API server process: 429."""


class _Limits:
    """Created on first use, inside the event loop (anyio's limiters belong to the running backend)."""

    def __init__(self) -> None:
        self.reads: CapacityLimiter | None = None
        self.actions: CapacityLimiter | None = None
        self.actions_in_flight = 0

    def read_limiter(self) -> CapacityLimiter:
        if self.reads is None:
            self.reads = CapacityLimiter(READ_THREADS)
        return self.reads

    def action_limiter(self) -> CapacityLimiter:
        if self.actions is None:
            self.actions = CapacityLimiter(MAX_ACTIONS)
        return self.actions


_limits = _Limits()


async def read(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """`fn(*args, **kwargs)` on a plugin read thread; `Unavailable` after `READ_TIMEOUT` seconds."""
    try:
        with anyio.fail_after(READ_TIMEOUT):
            return await to_thread.run_sync(functools.partial(fn, *args, **kwargs),
                                            limiter=_limits.read_limiter(), abandon_on_cancel=True)
    except TimeoutError:
        raise Unavailable(f"no answer within {READ_TIMEOUT:.0f}s (is the Kafka broker reachable?)") from None


async def act(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """`fn(*args, **kwargs)` as one of at most `MAX_ACTIONS` actions in flight; `TooBusy` beyond."""
    if _limits.actions_in_flight >= MAX_ACTIONS:  # the event loop is one thread: no lock needed
        raise TooBusy(f"{MAX_ACTIONS} operator actions are already in progress on this API server; "
                      f"try again in {RETRY_AFTER}s")
    _limits.actions_in_flight += 1
    try:
        return await to_thread.run_sync(functools.partial(fn, *args, **kwargs), limiter=_limits.action_limiter())
    finally:
        _limits.actions_in_flight -= 1
