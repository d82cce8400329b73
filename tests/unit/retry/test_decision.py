"""retry.decision.decide: what a failure becomes, for every policy shape, without a broker."""

from __future__ import annotations

import pytest

from kafka_workflows.errors import NonRetryableError
from kafka_workflows.retry import DEAD_LETTER, HOLD, RETRY, BlockingRetry, NonBlockingRetry, RetryPolicy, decide
from kafka_workflows.retry.backoff import Backoff


class Boom(Exception):
    pass


class Permanent(Exception):
    pass


def test_the_default_policy_holds_forever_with_capped_exponential_delays() -> None:
    policy = RetryPolicy.default()
    delays = [decide(policy, Boom(), failures=n, retry_round=None) for n in (1, 2, 3, 7, 8, 5000)]
    assert {d.kind for d in delays} == {HOLD}
    assert [d.delay for d in delays] == [1.0, 2.0, 4.0, 60.0, 60.0, 60.0]
    assert [d.failures for d in delays] == [1, 2, 3, 7, 8, 5000]


def test_blocking_with_attempts_dead_letters_on_the_last_attempt() -> None:
    policy = RetryPolicy(blocking=BlockingRetry(intervals=[0.5, 1.0], attempts=3))
    assert decide(policy, Boom(), failures=1, retry_round=None).delay == 0.5
    assert decide(policy, Boom(), failures=2, retry_round=None).delay == 1.0
    last = decide(policy, Boom(), failures=3, retry_round=None)
    assert last.kind == DEAD_LETTER and last.reason == "every retry failed"


def test_non_blocking_moves_through_each_retry_topic_then_dead_letters() -> None:
    policy = RetryPolicy(non_blocking=NonBlockingRetry(intervals=[30, 600]))
    first = decide(policy, Boom(), failures=1, retry_round=None)
    assert (first.kind, first.round, first.delay) == (RETRY, 1, 30)
    second = decide(policy, Boom(), failures=1, retry_round=1)
    assert (second.kind, second.round, second.delay) == (RETRY, 2, 600)
    assert decide(policy, Boom(), failures=1, retry_round=2).kind == DEAD_LETTER


def test_both_blocks_first_then_moves_to_retry_topics_and_never_blocks_a_retry_topic() -> None:
    policy = RetryPolicy(blocking=BlockingRetry(intervals=[1], attempts=2),
                         non_blocking=NonBlockingRetry(intervals=[5]))
    assert decide(policy, Boom(), failures=1, retry_round=None).kind == HOLD
    moved = decide(policy, Boom(), failures=2, retry_round=None)
    assert (moved.kind, moved.round) == (RETRY, 1)
    assert decide(policy, Boom(), failures=1, retry_round=1).kind == DEAD_LETTER  # blocking is for the request topic


@pytest.mark.parametrize("error", [NonRetryableError("bad account"), Permanent("gone")])
def test_non_retryable_errors_go_straight_to_the_dead_letter_topic(error: Exception) -> None:
    policy = RetryPolicy(blocking=BlockingRetry(), non_retryable=[f"{__name__}.Permanent"])
    decision = decide(policy, error, failures=1, retry_round=None)
    assert decision.kind == DEAD_LETTER and type(error).__name__ in decision.reason


def test_an_undecodable_value_or_header_is_never_retried() -> None:
    from kafka_workflows.headers import HeaderError

    decision = decide(RetryPolicy.default(), HeaderError("header kw-attempt is not an integer (3 characters)"),
                      failures=1, retry_round=None)
    assert decision.kind == DEAD_LETTER and "kw-attempt" in decision.reason


def test_an_empty_policy_retries_nothing() -> None:
    decision = decide(RetryPolicy(), Boom(), failures=1, retry_round=None)
    assert (decision.kind, decision.reason) == (DEAD_LETTER, "the policy retries nothing")


def test_failures_count_from_one() -> None:
    with pytest.raises(ValueError, match="counts from 1"):
        decide(RetryPolicy.default(), Boom(), failures=0, retry_round=None)


def test_retry_forever_backoff_never_overflows() -> None:
    backoff = Backoff(initial=1, multiplier=2, max=60)
    assert [backoff.delay(n) for n in (1024, 1025, 10**6)] == [60, 60, 60]
