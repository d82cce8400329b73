"""Handlers the worker processes of the tests run, by dotted path (tests.helpers.handlers.record)."""

from __future__ import annotations

import json
import os
import time

from kafka_workflows.messages import Message


def record(message: Message) -> None:
    """Append what was handled, by whom and when, to $KW_TEST_RECORD (one JSON line, atomic append)."""
    if isinstance(message.value, dict) and message.value.get("sleep"):
        time.sleep(float(message.value["sleep"]))
    line = json.dumps({"key": message.key, "value": message.value, "partition": message.partition,
                       "offset": message.offset, "pid": os.getpid(), "t": time.time_ns(),
                       "headers": message.headers}) + "\n"
    fd = os.open(os.environ["KW_TEST_RECORD"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)
