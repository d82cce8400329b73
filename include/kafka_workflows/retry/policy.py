"""Retry policies of a handler: blocking, non-blocking (retry topics), both, and classification.

  blocking      the partition is paused and rewound for a backoff; order per partition is kept.
                `attempts: null` retries forever (the partition stays blocked until it succeeds,
                or an operator skips the message).
  non_blocking  one retry topic `<topic>.<group>.retry-<n>` per interval; the message moves on
                and the main topic keeps flowing; after the last interval, the dead-letter topic.
  both          `attempts` blocking tries first, then the retry topics.
  non_retryable exception classes (dotted paths) that go straight to the dead-letter topic, as
                does any kafka_workflows.errors.NonRetryableError.

With no policy at all a handler gets blocking retries forever (exponential 1 s .. 60 s): a
schedule-and-forget request must not be dropped silently.
"""

from __future__ import annotations

from typing import Any, Self

from pydantic import Field, NonNegativeFloat, PositiveInt, field_validator, model_validator

from kafka_workflows.errors import ConfigError, HandlerImportError, NonRetryableError
from kafka_workflows.handlers import resolve_callable
from kafka_workflows.retry.backoff import Backoff
from kafka_workflows.strict_model import StrictModel


class BlockingRetry(StrictModel):
    """Retry in place. `intervals` (seconds) wins over the exponential settings."""

    intervals: list[NonNegativeFloat] | None = Field(default=None, min_length=1)
    initial: NonNegativeFloat = 1.0
    multiplier: float = Field(default=2.0, ge=1.0)
    max: NonNegativeFloat = 60.0
    attempts: PositiveInt | None = Field(default=None, description="tries in all; null = retry forever")

    def backoff(self) -> Backoff:
        return Backoff(initial=self.initial, multiplier=self.multiplier, max=self.max,
                       intervals=tuple(self.intervals or ()))


class NonBlockingRetry(StrictModel):
    """One retry topic per interval (seconds before the next attempt)."""

    intervals: list[NonNegativeFloat] = Field(min_length=1)


class RetryPolicy(StrictModel):
    blocking: BlockingRetry | None = None
    non_blocking: NonBlockingRetry | None = None
    non_retryable: list[str] = Field(default_factory=list, description="exception classes, as dotted paths")

    @field_validator("non_retryable")
    @classmethod
    def _importable(cls, paths: list[str]) -> list[str]:
        for path in paths:
            try:
                target = resolve_callable(path, "exception class")
            except HandlerImportError as exc:
                raise ValueError(str(exc)) from exc
            if not (isinstance(target, type) and issubclass(target, BaseException)):
                raise ValueError(f"{path!r} is not an exception class")
        return paths

    @model_validator(mode="after")
    def _reachable(self) -> Self:
        if self.blocking is not None and self.blocking.attempts is None and self.non_blocking is not None:
            raise ValueError("blocking.attempts is null (retry forever), so non_blocking would never be "
                             "reached: give blocking.attempts a number")
        return self

    @classmethod
    def default(cls) -> RetryPolicy:
        return cls(blocking=BlockingRetry())

    @classmethod
    def parse(cls, data: Any, where: str = "retry policy") -> RetryPolicy:
        """Validate user input (a dict from YAML/JSON) with an error that names each bad field."""
        from pydantic import ValidationError

        try:
            return cls.model_validate(data or {})
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in err['loc']) or '(policy)'}: {err['msg']}"
                + (f" (got {err['input']!r})" if err["type"] not in ("missing",) and "input" in err
                   and not isinstance(err["input"], dict) else "")
                for err in exc.errors())
            raise ConfigError(f"{where}: {problems}") from exc

    def is_non_retryable(self, exc: BaseException) -> bool:
        if isinstance(exc, NonRetryableError):
            return True
        return any(isinstance(exc, resolve_callable(path)) for path in self.non_retryable)  # type: ignore[arg-type]

    @property
    def retry_topic_count(self) -> int:
        return len(self.non_blocking.intervals) if self.non_blocking else 0
