"""librdkafka's log lines go through Python logging, and each kind of line is logged at most once a minute.

Left alone, librdkafka writes every line to stderr itself. During a broker outage every client logs
every reconnect attempt: a KIP-848 consumer logs about twenty lines a second. In Airflow's triggerer
the store reader's lines go to the trigger runner's stderr, and each line wakes the supervisor that
reads it. Measured with one await waiting and the broker down: the triggerer used 0.14 core, against
0.04 with these lines rate limited (bench/broker_outage.py).

Every client built from `kafka.config.client_config` logs to `LOGGER` instead (confluent-kafka's
`logger` setting). Lines that differ only in their numbers (ports, milliseconds, counts, client
numbers) are one kind. The first line of a kind passes, then at most one per `WINDOW` seconds, and
that one says how many were left out since the last. confluent-kafka hands the lines over when the client is
polled or flushed, so a client nobody polls logs late, not never.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Callable

LOGGER_NAME = "kafka_workflows.librdkafka"
WINDOW = 60.0  # seconds between two lines of one kind
MAX_KINDS = 1_000  # kinds remembered; the oldest is forgotten first
KIND_CHARS = 300  # a kind is told by the start of its line (librdkafka's lines are shorter; this bounds memory)

_NUMBERS = re.compile(r"\d+")


class RateLimit(logging.Filter):
    """Let through the first record of a kind, then one per `window` seconds with a count of those left out."""

    def __init__(self, window: float = WINDOW, max_kinds: int = MAX_KINDS,
                 clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self.window = window
        self.max_kinds = max_kinds
        self.clock = clock
        self._lock = threading.Lock()
        self._kinds: OrderedDict[tuple[int, str], list[float]] = OrderedDict()  # kind -> [last passed, left out]

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        kind = (record.levelno, _NUMBERS.sub("#", message[:KIND_CHARS]))
        now = self.clock()
        with self._lock:
            seen = self._kinds.get(kind)
            if seen is not None and now - seen[0] < self.window:
                seen[1] += 1
                return False
            left_out, since = (int(seen[1]), now - seen[0]) if seen is not None else (0, 0.0)
            self._kinds[kind] = [now, 0]
            self._kinds.move_to_end(kind)
            while len(self._kinds) > self.max_kinds:
                self._kinds.popitem(last=False)
        if left_out:
            record.msg, record.args = f"{message} ({left_out} more like it in the {since:.0f}s before)", ()
        return True


LOGGER = logging.getLogger(LOGGER_NAME)
LOGGER.addFilter(RateLimit())
