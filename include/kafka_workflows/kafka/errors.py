"""librdkafka errors: one unwrapper and one retry loop, so every room reads them the same way.

librdkafka classifies each error: `retriable()` (try the same call again), `txn_requires_abort()`
(abort the transaction and rewind), `fatal()` (the client is unusable: recreate it). Callers
ask `kafka_error(exc)` for the KafkaError inside a KafkaException instead of unpacking `args`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TypeVar

from confluent_kafka import KafkaError, KafkaException

log = logging.getLogger(__name__)

T = TypeVar("T")

# Transient while a group's coordinator moves or loads (e.g. __consumer_offsets being created).
COORDINATOR_NOT_READY = frozenset({KafkaError.NOT_COORDINATOR, KafkaError.COORDINATOR_LOAD_IN_PROGRESS,
                                   KafkaError.COORDINATOR_NOT_AVAILABLE, KafkaError._TIMED_OUT})


def kafka_error(exc: BaseException) -> KafkaError | None:
    """The KafkaError a KafkaException carries, else None."""
    if isinstance(exc, KafkaException) and exc.args and isinstance(exc.args[0], KafkaError):
        return exc.args[0]
    return None


def error_code(exc: BaseException) -> int | None:
    err = kafka_error(exc)
    return err.code() if err is not None else None


def describe(exc: BaseException) -> str:
    """librdkafka's own text for a KafkaException, else str(exc)."""
    err = kafka_error(exc)
    return err.str() if err is not None else str(exc)


def is_fatal(exc: BaseException) -> bool:
    err = kafka_error(exc)
    return err is not None and err.fatal()


def retry_while(call: Callable[[], T], what: str, timeout: float, again: Callable[[KafkaException], bool], *,
                initial: float = 0.05, maximum: float = 1.0, refresh: Callable[[], object] | None = None) -> T:
    """`call()`, again after a doubling backoff (`initial`..`maximum` s) while `again(exc)` says so,
    until `timeout` seconds; `refresh` runs before each new attempt (e.g. a metadata request)."""
    deadline = time.monotonic() + timeout
    delay = initial
    while True:
        try:
            return call()
        except KafkaException as exc:
            if not again(exc) or time.monotonic() + delay > deadline:
                raise
            log.info("%s: %s; trying again in %.2fs", what, describe(exc), delay)
            time.sleep(delay)
            delay = min(delay * 2, maximum)
            if refresh is not None:
                try:
                    refresh()
                except KafkaException as refresh_error:
                    log.info("%s: refreshing failed too: %s", what, describe(refresh_error))


def is_retriable(exc: BaseException) -> bool:
    """librdkafka says try the same call again: retriable, and neither abortable nor fatal."""
    err = kafka_error(exc)
    return err is not None and err.retriable() and not err.txn_requires_abort() and not err.fatal()


def retry_retriable(call: Callable[[], T], what: str, timeout: float) -> T:
    """Retry `call` while librdkafka says its error is retriable (and neither abortable nor fatal)."""
    return retry_while(call, what, timeout, is_retriable)
