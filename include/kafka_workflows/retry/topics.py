"""Names of a consumer group's retry and dead-letter topics (DESIGN.md contract).

They are per consumer group, so two groups reading one topic never retry each other's failures:
`<topic>.<group>.retry-<n>` (n from 1) and `<topic>.<group>.dlq`.
"""

from __future__ import annotations


def retry_topic(topic: str, group: str, n: int) -> str:
    """The n-th (from 1) non-blocking retry topic of `group` reading `topic`."""
    if n < 1:
        raise ValueError(f"retry topics are numbered from 1, got {n}")
    return f"{topic}.{group}.retry-{n}"


def dead_letter_topic(topic: str, group: str) -> str:
    return f"{topic}.{group}.dlq"
