"""How many messages to consume at a time, so a batch never outlasts the group's patience.

librdkafka evicts a member that does not call consume() within `max.poll.interval.ms` (5 minutes by
default): 500 messages of a 1 s handler would take 8 minutes, and the member would lose its
partitions mid-batch, and the next owner repeat the work. `BatchPacing` keeps an average of the
time per message and consumes at most as many as fit in a quarter of that interval (never more
than `batch_size`, never fewer than one). A batch that still runs past that budget (a handler that
got slower) is cut: the worker stores what is done and seeks back to what is not, which the next
consume() fetches again (worker/dispatch.py). A single handler call longer than the interval
itself still loses the partitions: raise max.poll.interval.ms for such handlers.
"""

from __future__ import annotations

SHARE = 0.25  # of max.poll.interval.ms that one consumed batch may take
WEIGHT = 0.3  # of the newest batch in the running average


class BatchPacing:
    def __init__(self, batch_size: int, max_poll_interval_s: float) -> None:
        self.batch_size = batch_size
        self.budget_s = max(0.001, SHARE * max_poll_interval_s)
        self.per_message_s = 0.0
        self.size = batch_size

    def observe(self, messages: int, elapsed_s: float) -> None:
        """A consumed batch of `messages` took `elapsed_s` to handle."""
        if messages <= 0:
            return
        sample = elapsed_s / messages
        self.per_message_s = sample if self.per_message_s == 0.0 else (
            WEIGHT * sample + (1 - WEIGHT) * self.per_message_s)
        fits = int(self.budget_s / self.per_message_s) if self.per_message_s > 0 else self.batch_size
        self.size = max(1, min(self.batch_size, fits))
