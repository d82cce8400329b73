"""Handlers the worker processes of the tests run, by dotted path (tests.helpers.handlers.record).

Each appends one JSON line per call (attempt) to $KW_TEST_RECORD with an `outcome`, so a test
can count every handler call, success or failure, across processes and restarts.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from kafka_workflows.errors import BatchItemFailed, NonRetryableError
from kafka_workflows.handlers import batch_handler
from kafka_workflows.messages import Message, MessageBatch


class PermanentError(Exception):
    """Configured as non-retryable in the classification tests."""


def _append(message: Message, outcome: str) -> None:
    line = json.dumps({"key": message.key, "value": message.value, "topic": message.topic,
                       "partition": message.partition, "offset": message.offset, "pid": os.getpid(),
                       "t": time.time(), "attempt": message.attempt, "outcome": outcome,
                       "headers": message.headers}) + "\n"
    fd = os.open(os.environ["KW_TEST_RECORD"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)


def record(message: Message) -> None:
    """Succeeds, unless the value asks otherwise:
    sleep: seconds to take; fail: always raise; fail_unless_exists: raise until that file exists;
    fail_attempts: raise on attempts <= N (kw-attempt); permanent / non_retryable: raise those kinds.
    """
    value = message.value if isinstance(message.value, dict) else {}
    if value.get("sleep"):
        time.sleep(float(value["sleep"]))
    error: Exception | None = None
    if value.get("fail"):
        error = RuntimeError(f"{message.key} always fails")
    elif value.get("fail_unless_exists") and not Path(value["fail_unless_exists"]).exists():
        error = ConnectionError(f"{message.key}: dependency down")
    elif message.attempt <= int(value.get("fail_attempts", 0)):
        error = TimeoutError(f"{message.key}: attempt {message.attempt} timed out")
    elif value.get("permanent"):
        error = PermanentError(f"{message.key}: bad account")
    elif value.get("non_retryable"):
        error = NonRetryableError(f"{message.key}: cannot ever work")
    _append(message, "ok" if error is None else f"{type(error).__name__}")
    if error is not None:
        raise error


def outage(message: Message) -> None:
    """A provider call that fails (ConnectionError) while the file $KW_TEST_OUTAGE exists."""
    if Path(os.environ["KW_TEST_OUTAGE"]).exists():
        _append(message, "ConnectionError")
        raise ConnectionError(f"{message.key}: provider down")
    _append(message, "ok")


@batch_handler
def outage_batch(messages: MessageBatch) -> None:
    """`outage` as a batch handler: the first message that fails is named with BatchItemFailed."""
    for i, message in enumerate(messages):
        try:
            outage(message)
        except Exception as exc:
            raise BatchItemFailed(i) from exc


@batch_handler
def record_batch(messages: MessageBatch) -> None:
    """`record` as a batch handler: the first message that fails is named with BatchItemFailed."""
    for i, message in enumerate(messages):
        try:
            record(message)
        except Exception as exc:
            raise BatchItemFailed(i) from exc


def slow_checkout(message: Message) -> list[dict[str, object]]:
    """The example checkout transform, 2 ms a message, so a crash test can kill it mid-stream."""
    from kw_examples.checkout import checkout_completed

    time.sleep(0.002)
    return checkout_completed(message)


async def record_async(message: Message) -> None:
    """An `async def` handler for concurrent workers: a `start` line, `sleep` seconds awaited, then `ok`."""
    import asyncio

    _append(message, "start")
    value = message.value if isinstance(message.value, dict) else {}
    await asyncio.sleep(float(value.get("sleep", 0)))
    _append(message, "ok")


def echo_or_poison(message: Message) -> list[dict[str, object]]:
    """An exactly-once processor's transform: echoes the value; raises on {"poison": true}."""
    if isinstance(message.value, dict) and message.value.get("poison"):
        raise ValueError(f"{message.key} is poison")
    return [{"key": message.key, "value": message.value}]


def double_amount(message: Message) -> list[dict[str, object]]:
    """A processor transform over decoded records (issue 19): the amount doubled, to its one output."""
    value = message.value
    return [{"key": value["user_id"], "value": {"user_id": value["user_id"], "amount": value["amount"] * 2}}]
