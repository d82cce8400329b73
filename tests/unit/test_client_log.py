"""librdkafka's log lines through Python logging, each kind at most once a window (kafka/client_log.py)."""

from __future__ import annotations

import logging
import time

import pytest
from confluent_kafka import Consumer, Producer

from kafka_workflows.kafka import client_log
from kafka_workflows.kafka.config import client_config
from stack.broker import free_port


def record(message: str, *args: object, level: int = logging.ERROR) -> logging.LogRecord:
    return logging.LogRecord(client_log.LOGGER_NAME, level, __file__, 1, message, args, None)


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_lines_that_differ_only_in_numbers_pass_once_a_window_and_say_how_many_were_left_out() -> None:
    clock = Clock()
    limit = client_log.RateLimit(window=60, clock=clock)
    line = "%s [%s] %s"
    passed = []
    for n in range(40):  # one reconnect attempt every half second, to other ports and client numbers
        clock.now = n * 0.5
        r = record(line, "FAIL", f"rdkafka#consumer-{n % 3}", f"127.0.0.1:{40000 + n}/bootstrap: Connect to "
                   f"ipv4#127.0.0.1:{40000 + n} failed: Connection refused (after {n}ms in state CONNECT)")
        if limit.filter(r):
            passed.append(r.getMessage())
    assert len(passed) == 1 and "more like it" not in passed[0]
    clock.now = 60.0
    later = record(line, "FAIL", "rdkafka#consumer-1", "127.0.0.1:1/bootstrap: Connect to ipv4#127.0.0.1:1 failed: "
                   "Connection refused (after 0ms in state CONNECT)")
    assert limit.filter(later)
    assert later.getMessage().endswith("(39 more like it in the 60s before)")
    clock.now = 60.1
    assert not limit.filter(record(line, "FAIL", "rdkafka#consumer-2", "127.0.0.1:2/bootstrap: Connect to "
                                   "ipv4#127.0.0.1:2 failed: Connection refused (after 1ms in state CONNECT)"))


def test_other_kinds_and_levels_pass_on_their_own_and_the_kinds_remembered_are_bounded() -> None:
    clock = Clock()
    limit = client_log.RateLimit(window=60, max_kinds=3, clock=clock)
    assert limit.filter(record("connection refused"))
    assert limit.filter(record("connection refused", level=logging.WARNING))
    assert limit.filter(record("SASL authentication failed"))
    assert not limit.filter(record("SASL authentication failed"))
    assert limit.filter(record("a fourth kind: the oldest kind is forgotten"))
    assert limit.filter(record("connection refused")), "forgotten, so it passes again"


@pytest.mark.parametrize("size", [0, 10_000_000])
def test_an_empty_or_huge_line_passes_once_and_the_kind_kept_is_bounded(size: int) -> None:
    limit = client_log.RateLimit(window=60, clock=Clock())
    huge = "x" * size
    assert limit.filter(record(huge)) and not limit.filter(record(huge))
    assert all(len(text) <= client_log.KIND_CHARS for _, text in limit._kinds)


@pytest.mark.parametrize("client", ["consumer", "producer"])
def test_a_client_that_cannot_reach_its_broker_logs_through_python_logging_once_not_every_attempt(
        client: str, caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]) -> None:
    """Real librdkafka against a port nobody listens on, for 6 s: it tries again every
    reconnect.backoff.ms (0.1 s here), and left alone it writes a line to stderr each time."""
    config = client_config({"bootstrap.servers": f"127.0.0.1:{free_port()}", "reconnect.backoff.ms": 100,
                            "reconnect.backoff.max.ms": 100})
    caplog.set_level(logging.DEBUG, logger=client_log.LOGGER_NAME)
    if client == "consumer":
        kafka: Consumer | Producer = Consumer({**config, "group.id": "nobody"})
        kafka.subscribe(["nowhere"])
    else:
        kafka = Producer(config)
        kafka.produce("nowhere", b"x")
    deadline = time.monotonic() + 6
    while time.monotonic() < deadline:
        kafka.poll(0.2)  # confluent-kafka hands the log lines over here
    lines = [r.getMessage() for r in caplog.records if r.name == client_log.LOGGER_NAME]
    refused = [line for line in lines if "Connection refused" in line or "Connect to" in line]
    assert 1 <= len(refused) <= 2, lines  # every attempt is one kind: one line a minute
    assert "%3|" not in capfd.readouterr().err, "librdkafka wrote to stderr itself"
    if isinstance(kafka, Consumer):
        kafka.close()
    else:
        kafka.purge()
        kafka.flush(0)
