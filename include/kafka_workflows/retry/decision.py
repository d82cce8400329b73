"""What a failed handler call becomes: the one place where retries are decided.

`decide` is pure: from the policy, the error, how many times this message failed in place and
which retry topic (if any) it came from, it returns a `Decision`:

  hold         blocking retry: pause the partition and try the same message again after `delay`
               (only for messages of the request topic, while blocking attempts remain);
  retry        non-blocking retry: write the message to retry topic number `round`, due in `delay`;
  dead_letter  write it to the dead-letter topic (not retryable, undecodable, or every retry used).

The worker carries a decision out (worker/outcomes.py); it decides nothing itself.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from kafka_workflows.errors import MessageDecodeError
from kafka_workflows.retry.policy import RetryPolicy

HOLD, RETRY, DEAD_LETTER = "hold", "retry", "dead_letter"


@dataclass(frozen=True)
class Decision:
    kind: Literal["hold", "retry", "dead_letter"]
    delay: float = 0.0  # hold and retry: seconds until the next attempt
    round: int = 0  # retry: the retry topic's number (from 1)
    failures: int = 0  # hold: in-place failures of this message so far
    reason: str = ""  # dead_letter: why


def decide(policy: RetryPolicy, error: BaseException, *, failures: int, retry_round: int | None) -> Decision:
    """The decision for a message that just failed for the `failures`-th time in place (from 1).

    `retry_round` is None for a message read from its request topic, else the number of the retry
    topic it was read from. Blocking retries apply only to the request topic: a message that
    already moved to a retry topic keeps moving on.
    """
    if failures < 1:
        raise ValueError(f"failures counts from 1, got {failures}")
    if isinstance(error, MessageDecodeError):  # an undecodable value or kw- header: decoding again cannot help
        return Decision(DEAD_LETTER, reason=f"{type(error).__name__}: {error}")
    if policy.is_non_retryable(error):
        return Decision(DEAD_LETTER, reason=f"{type(error).__name__} is not retryable")
    blocking = policy.blocking
    if retry_round is None and blocking is not None and (blocking.attempts is None or failures < blocking.attempts):
        return Decision(HOLD, delay=blocking.backoff().delay(failures), failures=failures)
    next_round = (retry_round or 0) + 1
    if policy.non_blocking is not None and next_round <= policy.retry_topic_count:
        return Decision(RETRY, delay=policy.non_blocking.intervals[next_round - 1], round=next_round)
    if policy.retry_topic_count or blocking is not None:
        return Decision(DEAD_LETTER, reason="every retry failed")
    return Decision(DEAD_LETTER, reason="the policy retries nothing")
