"""The companion worker (pattern 4, schedule and forget).

loop.py        Worker: lifecycle, consumer, rebalance, control and status
inbound.py     the one inbound boundary: every consumed record parsed and bounded once, its origin decided
context.py     the worker context the strategies and operator actions share (no mixin, no privates)
dispatch.py    the message strategy: handler calls one at a time (the hot path, the general way)
batches.py     the batch strategy: runs of one partition, and what a batch failure means
outcomes.py    the one outcome executor: done, hold, retry, dead letter, boundary rejection, skip
operations.py  operator commands (skip, unblock, pause, resume) inside a worker
pacing.py      how many messages to consume at a time, so a batch never outlasts max.poll.interval.ms
holds.py       paused partitions: blocked behind a failure, or waiting for a retry to be due
checkpoint.py  at-least-once offsets (it owns them): stored only after the writes they depend on
writes.py      retry and dead-letter writes (a dead letter made to fit), store reports
metrics.py     Prometheus metrics of one worker
concurrent.py  the concurrent strategy: many keys of a partition at once, each in order (lanes.py, runners.py)
"""

from kafka_workflows.worker.context import WorkerStats
from kafka_workflows.worker.loop import Worker

__all__ = ["Worker", "WorkerStats"]
