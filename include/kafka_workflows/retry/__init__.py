"""Retries: where a failure goes, and what it carries when it gets there.

policy.py       RetryPolicy (blocking, non-blocking retry topics, non-retryable errors)
backoff.py      delays: fixed intervals or exponential
decision.py     decide(): what a failure becomes (hold, retry topic, dead letter): pure
topics.py       names of a group's retry and dead-letter topics
provenance.py   headers of retries, dead letters and replays
"""

from kafka_workflows.retry.decision import DEAD_LETTER, HOLD, RETRY, Decision, decide
from kafka_workflows.retry.policy import BlockingRetry, NonBlockingRetry, RetryPolicy
from kafka_workflows.retry.topics import dead_letter_topic, retry_topic

__all__ = ["DEAD_LETTER", "HOLD", "RETRY", "BlockingRetry", "Decision", "NonBlockingRetry", "RetryPolicy",
           "dead_letter_topic", "decide", "retry_topic"]
