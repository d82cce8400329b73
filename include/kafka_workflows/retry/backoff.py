"""Backoff schedules: a fixed list of intervals or exponential (initial, multiplier, max)."""

from __future__ import annotations

from dataclasses import dataclass

from kafka_workflows.errors import ConfigError


@dataclass(frozen=True)
class Backoff:
    """Delay before attempt n+1 after n failures. `intervals` wins over the exponential settings."""

    initial: float = 1.0
    multiplier: float = 2.0
    max: float = 60.0
    intervals: tuple[float, ...] = ()

    def __post_init__(self) -> None:
        for name in ("initial", "max"):
            if getattr(self, name) < 0:
                raise ConfigError(f"backoff {name} must be >= 0 seconds, got {getattr(self, name)}")
        if self.multiplier < 1:
            raise ConfigError(f"backoff multiplier must be >= 1, got {self.multiplier}")
        if any(i < 0 for i in self.intervals):
            raise ConfigError(f"backoff intervals must be >= 0 seconds, got {list(self.intervals)}")

    def delay(self, failures: int) -> float:
        """Seconds to wait after the `failures`-th failure (1-based)."""
        if self.intervals:
            return self.intervals[min(failures, len(self.intervals)) - 1]
        try:
            delay = self.initial * self.multiplier ** (failures - 1)
        except OverflowError:  # "retry forever" reaches 2.0 ** 1024 after about a thousand failures
            return self.max
        return min(self.max, delay)
