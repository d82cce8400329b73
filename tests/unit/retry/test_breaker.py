"""The circuit breaker's state machine (retry/breaker.py), on a fake clock."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from kafka_workflows.retry.breaker import CLOSED, HALF_OPEN, OPEN, Breaker, BreakerPolicy


class ProviderDown(ConnectionError):
    pass


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def breaker(**settings: object) -> tuple[Breaker, Clock, list[tuple[str, str, bool]]]:
    clock, moves = Clock(), []
    b = Breaker(BreakerPolicy(**settings), lambda old, new, _why, auto: moves.append((old, new, auto)), clock)
    return b, clock, moves


def test_a_failure_rate_in_the_window_opens_it_then_a_probe_closes_it() -> None:
    b, clock, moves = breaker(failure_rate=0.5, min_calls=4, window=10, cooldown=30)
    b.succeeded(2)
    assert not b.failed(ValueError("x"))  # 1 of 3: below min_calls
    assert b.failed(ValueError("x"))  # 2 of 4: opens, this failure is the breaker's
    assert b.state == OPEN and not b.admits()
    assert b.failed(ValueError("x"))  # open: every failure is held
    assert b.wait() == pytest.approx(30)
    clock.now += 30
    assert b.state == HALF_OPEN and b.admits()
    b.succeeded(1)
    assert b.state == CLOSED
    assert moves == [(CLOSED, OPEN, True), (OPEN, HALF_OPEN, True), (HALF_OPEN, CLOSED, True)]


def test_a_failed_probe_opens_it_again_for_another_cooldown() -> None:
    b, clock, _ = breaker(min_calls=1, failure_rate=1.0, cooldown=5)
    assert b.failed(RuntimeError())
    clock.now += 5
    assert b.state == HALF_OPEN
    assert b.failed(RuntimeError())
    assert b.state == OPEN and b.wait() == pytest.approx(5)
    assert b.opened == 2


def test_old_outcomes_leave_the_window() -> None:
    b, clock, _ = breaker(failure_rate=0.5, min_calls=4, window=10)
    for _ in range(3):
        assert not b.failed(ValueError())
    clock.now += 11  # those three are out of the window
    b.succeeded(3)
    assert not b.failed(ValueError())  # 1 of 4
    assert b.state == CLOSED


def test_a_named_error_repeating_opens_it_and_other_errors_break_the_row() -> None:
    b, _, _ = breaker(errors=["ProviderDown"], repeats=3, min_calls=1000)
    assert not b.failed(ProviderDown())
    assert not b.failed(ProviderDown())
    assert not b.failed(KeyError())  # another error: the row starts again
    assert not b.failed(ProviderDown())
    assert not b.failed(ProviderDown())
    assert b.failed(ProviderDown())
    assert b.state == OPEN


def test_a_named_error_matches_its_subclasses_and_dotted_paths() -> None:
    b, _, _ = breaker(errors=["builtins.ConnectionError"], repeats=1, min_calls=1000)
    assert b.failed(ProviderDown())


def test_an_operators_open_stays_until_closed() -> None:
    b, clock, moves = breaker(cooldown=1)
    b.open("by an operator", forced=True)
    clock.now += 3600
    assert b.state == OPEN and b.wait() == float("inf")
    b.close("by an operator")
    assert b.state == CLOSED
    assert moves == [(CLOSED, OPEN, False), (OPEN, CLOSED, False)]


def test_settings_are_checked() -> None:
    with pytest.raises(ValidationError):
        BreakerPolicy(failure_rate=0)
    with pytest.raises(ValidationError):
        BreakerPolicy(cooldown=-1)
    with pytest.raises(ValidationError):
        BreakerPolicy(threshold=3)  # type: ignore[call-arg]
