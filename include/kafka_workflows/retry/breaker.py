"""The circuit breaker of a worker group: its settings and its state machine (pure: no Kafka, the
clock passed in). The worker acts on it (worker/loop.py: partitions; worker/outcomes.py: failures).

closed     every handler outcome counts in a sliding `window` (seconds). The breaker opens when, with
           at least `min_calls` outcomes in the window, the failures' share reaches `failure_rate`,
           or when a failure of one of the named `errors` (class names, or dotted paths; a subclass
           counts) comes `repeats` times in a row.
open       nothing new is handed to the handler: the worker pauses its partitions. A message that
           fails while the breaker is open, or that opened it, waits where it is with its attempt
           given back: no retry topic, no dead letter. After `cooldown` seconds: half-open. An
           operator's open (`forced`) stays open until an operator closes it.
half_open  the held messages (or, with none, the next message) go to the handler as probes: a
           success closes the breaker, a failure opens it again for another cooldown.

Hand-written, not pybreaker: pybreaker counts consecutive failures only (no rate in a window),
and wraps each call, raising CircuitBreakerError; a worker must instead pause partitions and keep
the failing record, and judge successes a batch at a time (worker/context.py `Tallies`).
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from typing import Any, Literal

from pydantic import Field, PositiveFloat, PositiveInt

from kafka_workflows.strict_model import StrictModel

CLOSED, OPEN, HALF_OPEN = "closed", "open", "half_open"
State = Literal["closed", "open", "half_open"]
FOREVER = float("inf")


class BreakerPolicy(StrictModel):
    """`breaker:` of a worker spec."""

    failure_rate: float = Field(default=0.5, gt=0.0, le=1.0,
                                description="share of failed handler calls in the window that opens the breaker")
    min_calls: PositiveInt = Field(default=10, description="handler calls in the window before the rate counts")
    window: PositiveFloat = Field(default=30.0, description="seconds of handler outcomes the rate is taken over")
    errors: list[str] = Field(default_factory=list, max_length=100,
                              description="exception class names (or dotted paths) that open the breaker when "
                                          "they come `repeats` times in a row")
    repeats: PositiveInt = Field(default=3, description="failures in a row of a named error that open the breaker")
    cooldown: PositiveFloat = Field(default=30.0, description="seconds open before a probe message (half-open)")


def _names(exc: BaseException) -> set[str]:
    return {n for cls in type(exc).__mro__ for n in (cls.__name__, f"{cls.__module__}.{cls.__qualname__}")}


# on_change(old state, new state, reason, automatic)
Transition = Callable[[str, str, str, bool], None]


class Breaker:
    def __init__(self, policy: BreakerPolicy, on_change: Transition | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.policy = policy
        self._on_change = on_change
        self._clock = clock
        self._state: str = CLOSED
        self.forced = False  # an operator's open: no probe until an operator closes it
        self.reopen_at = FOREVER  # monotonic time the open breaker turns half-open
        self.reason = ""
        self.since = time.time()
        self.opened = 0  # times opened
        self._outcomes: deque[tuple[float, int, int]] = deque()  # (when, calls, failures)
        self._calls = self._failures = 0
        self._in_a_row = 0
        self._named = set(policy.errors)

    # -- state ---------------------------------------------------------------------------
    @property
    def state(self) -> str:
        if self._state == OPEN and not self.forced and self._clock() >= self.reopen_at:
            self._move(HALF_OPEN, "cool-down over: probing", True)
        return self._state

    def admits(self) -> bool:
        """Whether messages may go to the handler (closed, or half-open for probes)."""
        return self.state != OPEN

    def wait(self) -> float:
        """Seconds until an open breaker lets a probe through (0 unless open)."""
        if self.state != OPEN:
            return 0.0
        return FOREVER if self.forced else max(0.0, self.reopen_at - self._clock())

    def _move(self, new: str, reason: str, automatic: bool) -> None:
        old, self._state, self.reason, self.since = self._state, new, reason, time.time()
        if new == OPEN and old != OPEN:
            self.opened += 1
        if new != CLOSED:
            self._outcomes.clear()
            self._calls = self._failures = self._in_a_row = 0
        if self._on_change is not None and old != new:
            self._on_change(old, new, reason, automatic)

    def open(self, reason: str, *, forced: bool = False, automatic: bool = False) -> None:
        self.forced = forced
        self.reopen_at = FOREVER if forced else self._clock() + self.policy.cooldown
        self._move(OPEN, reason, automatic)

    def close(self, reason: str, *, automatic: bool = False) -> None:
        self.forced, self.reopen_at = False, FOREVER
        self._outcomes.clear()
        self._calls = self._failures = self._in_a_row = 0
        self._move(CLOSED, reason, automatic)

    # -- outcomes ------------------------------------------------------------------------
    def succeeded(self, calls: int) -> None:
        """`calls` handler calls returned (told a batch at a time)."""
        if calls <= 0:
            return
        state = self.state
        if state == HALF_OPEN:
            self.close("a probe succeeded", automatic=True)
        elif state == CLOSED:
            self._in_a_row = 0
            self._count(calls, 0)

    def failed(self, exc: BaseException, pending_successes: int = 0) -> bool:
        """A handler call raised `exc`. True when the breaker is open (or opened now): the message
        then waits, its attempt given back. `pending_successes`: calls of the batch in hand that
        returned and were not told yet."""
        state = self.state
        name = type(exc).__name__
        if state == OPEN:
            return True
        if state == HALF_OPEN:
            self.open(f"a probe failed: {name}", automatic=True)
            return True
        if self._named and _names(exc) & self._named:
            self._in_a_row += 1
            if self._in_a_row >= self.policy.repeats:
                self.open(f"{name} {self._in_a_row} times in a row", automatic=True)
                return True
        else:
            self._in_a_row = 0
        self._count(1, 1)
        calls, failures = self._calls + pending_successes, self._failures
        if calls >= self.policy.min_calls and failures >= self.policy.failure_rate * calls:
            self.open(f"{failures} of {calls} calls failed in {self.policy.window:g}s (last: {name})", automatic=True)
            return True
        return False

    def _count(self, calls: int, failures: int) -> None:
        now = self._clock()
        self._outcomes.append((now, calls, failures))
        self._calls += calls
        self._failures += failures
        horizon = now - self.policy.window
        while self._outcomes and self._outcomes[0][0] < horizon:
            _, c, f = self._outcomes.popleft()
            self._calls -= c
            self._failures -= f

    def describe(self) -> dict[str, Any]:
        state = self.state
        return {"state": state, "forced": self.forced, "reason": self.reason, "since": self.since,
                "probe_in": None if state != OPEN or self.forced else round(self.wait(), 1), "opened": self.opened}
